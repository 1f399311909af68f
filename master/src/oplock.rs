//! Serialises namespace mutations that touch the same paths, so their under-store
//! side effects and journal entries happen in one order: a delete of `/a` and a
//! `mkdir /a/b` cannot interleave into a folder that exists in the under-store but
//! not in the namespace.
//!
//! A mutation locks its own paths exclusively and their ancestors shared. Locks are
//! striped (a fixed table, indexed by a hash of the path), so memory does not grow
//! with the namespace; two paths on one stripe merely serialise more than needed.
//! Stripes are taken in ascending order, each in the strongest mode the operation
//! needs of it, so two operations never deadlock.

use std::collections::BTreeMap;
use std::sync::Arc;
use strata_common::StrataPath;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

const STRIPES: usize = 1024;

/// The striped lock table.
pub struct PathLocks {
    stripes: Vec<Arc<RwLock<()>>>,
}

/// Held while a mutation runs.
pub struct PathGuard {
    _shared: Vec<OwnedRwLockReadGuard<()>>,
    _exclusive: Vec<OwnedRwLockWriteGuard<()>>,
}

impl Default for PathLocks {
    fn default() -> Self {
        PathLocks {
            stripes: (0..STRIPES).map(|_| Arc::new(RwLock::new(()))).collect(),
        }
    }
}

fn stripe(path: &str) -> usize {
    // FNV-1a: cheap and stable.
    let h = path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h % STRIPES as u64) as usize
}

impl PathLocks {
    /// Locks `paths` exclusively and every ancestor of each shared.
    pub async fn lock(&self, paths: &[&StrataPath]) -> PathGuard {
        // stripe → exclusive?
        let mut want: BTreeMap<usize, bool> = BTreeMap::new();
        for p in paths {
            let mut cur = p.parent();
            while let Some(a) = cur {
                want.entry(stripe(a.as_str())).or_insert(false);
                cur = a.parent();
            }
        }
        for p in paths {
            want.insert(stripe(p.as_str()), true);
        }
        let (mut shared, mut exclusive) = (Vec::new(), Vec::new());
        for (i, excl) in want {
            let lock = self.stripes[i].clone();
            if excl {
                exclusive.push(lock.write_owned().await);
            } else {
                shared.push(lock.read_owned().await);
            }
        }
        PathGuard {
            _shared: shared,
            _exclusive: exclusive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn p(s: &str) -> StrataPath {
        StrataPath::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_path_excludes_its_descendants_and_itself_not_its_siblings() {
        let locks = Arc::new(PathLocks::default());
        let held = locks.lock(&[&p("/a")]).await;
        let blocked = |path: &'static str| {
            let locks = locks.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(50), locks.lock(&[&p(path)]))
                    .await
                    .is_err()
            }
        };
        assert!(blocked("/a").await);
        assert!(blocked("/a/b/c").await);
        // A sibling is free unless it shares a stripe with /a.
        let free = ["/b", "/c", "/d", "/e"]
            .iter()
            .filter(|s| stripe(s) != stripe("/a"))
            .count();
        let mut unblocked = 0;
        for s in ["/b", "/c", "/d", "/e"] {
            if stripe(s) != stripe("/a") && !blocked(s).await {
                unblocked += 1;
            }
        }
        assert_eq!(unblocked, free);
        drop(held);
        assert!(!blocked("/a/b/c").await);
        // Two paths at once, in either order, never deadlock.
        let g = locks.lock(&[&p("/x/y"), &p("/x")]).await;
        drop(g);
        let g = locks.lock(&[&p("/x"), &p("/x/y")]).await;
        drop(g);
    }
}

/// A point where a mutation can be held, for tests that need a process (or a
/// caller) to go away between two steps deterministically. Unarmed, passing it
/// costs one atomic load.
#[derive(Debug, Default)]
pub struct PausePoint {
    armed: std::sync::atomic::AtomicBool,
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl PausePoint {
    /// The next mutation to pass stops here until [`PausePoint::release`].
    pub fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits until a mutation has stopped here.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the stopped mutation go on.
    pub fn release(&self) {
        self.release.notify_one();
    }

    pub(crate) async fn pass(&self) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
    }
}
