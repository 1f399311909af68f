//! Calls to the leading master of a group: clients and workers know the masters'
//! addresses (`master_addresses`), keep the one that answered last, and move on
//! when a master answers `NotLeader` (to the leader it names, or to the next one
//! while none is known) or cannot be reached.
//!
//! A call a follower refused never ran (the refusal comes before the handler), so
//! it is always tried again. A call that failed otherwise is tried again only when
//! the caller says it is idempotent: a mutation whose answer was lost may have
//! been applied.

use crate::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Addresses learned from `NotLeader` answers beyond the configured ones, at most.
const MAX_LEARNED: usize = 8;

type Connect = Box<dyn Fn(&str) -> Result<Channel> + Send + Sync>;

/// The masters one client or worker talks to.
pub struct MasterSet {
    /// Address and channel of every master known, configured ones first.
    masters: Mutex<Vec<(String, Channel)>>,
    configured: usize,
    /// Index of the master calls go to.
    current: AtomicUsize,
    connect: Connect,
}

impl MasterSet {
    /// The masters at `addresses`, with channels made by `connect` (lazily
    /// connected ones: nothing is dialled here).
    pub fn new(
        addresses: &[String],
        connect: impl Fn(&str) -> Result<Channel> + Send + Sync + 'static,
    ) -> Result<MasterSet> {
        if addresses.is_empty() {
            return Err(Error::invalid_argument("master_addresses", "empty"));
        }
        let masters = addresses
            .iter()
            .map(|a| Ok((a.clone(), connect(a)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(MasterSet {
            configured: masters.len(),
            masters: Mutex::new(masters),
            current: AtomicUsize::new(0),
            connect: Box::new(connect),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Channel)>> {
        self.masters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel to the master calls go to now.
    pub fn channel(&self) -> Channel {
        let masters = self.lock();
        let i = self.current.load(Ordering::Acquire) % masters.len();
        masters[i].1.clone()
    }

    /// The address calls go to now.
    pub fn current(&self) -> String {
        let masters = self.lock();
        let i = self.current.load(Ordering::Acquire) % masters.len();
        masters[i].0.clone()
    }

    /// After a call failed with `e`: points calls at the master most likely to
    /// lead, and says whether the call may be tried again there.
    pub fn after_error(&self, e: &Error, idempotent: bool) -> bool {
        match e {
            Error::NotLeader { leader } => {
                if leader.is_empty() || !self.go_to(leader) {
                    self.next();
                }
                true
            }
            Error::Unavailable { .. } => {
                self.next();
                idempotent
            }
            other => idempotent && other.is_temporary(),
        }
    }

    fn next(&self) {
        let n = self.lock().len();
        let _ = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |i| Some((i + 1) % n));
    }

    /// Points calls at `address`, learning it if it is new; false if it cannot be
    /// used.
    fn go_to(&self, address: &str) -> bool {
        let mut masters = self.lock();
        if let Some(i) = masters.iter().position(|(a, _)| a == address) {
            self.current.store(i, Ordering::Release);
            return true;
        }
        match (self.connect)(address) {
            Ok(ch) => {
                if masters.len() >= self.configured + MAX_LEARNED {
                    // The oldest learned address makes room: a leader moves on.
                    masters.remove(self.configured);
                }
                masters.push((address.to_string(), ch));
                self.current.store(masters.len() - 1, Ordering::Release);
                true
            }
            Err(_) => false,
        }
    }

    /// Runs `call` on the current master, following `NotLeader` for up to `budget`,
    /// and, for an `idempotent` call, trying unreachable masters and temporary
    /// failures again, three times per master at most.
    pub async fn call<T, F, Fut>(
        &self,
        idempotent: bool,
        budget: Duration,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let start = Instant::now();
        let mut attempt: u32 = 0;
        let mut failures = 0;
        loop {
            attempt += 1;
            let e = match call(self.channel()).await {
                Ok(v) => return Ok(v),
                Err(status) => Error::from(status),
            };
            if !matches!(e, Error::NotLeader { .. }) {
                failures += 1;
            }
            let limit = 3 * self.lock().len();
            if !self.after_error(&e, idempotent) || start.elapsed() >= budget || failures >= limit {
                return Err(e);
            }
            // Straight to a named leader; a short, growing pause while the group
            // elects one or every master was tried.
            let named = matches!(&e, Error::NotLeader { leader } if !leader.is_empty());
            if !named || attempt > 3 {
                let pause = Duration::from_millis(20 * u64::from(attempt.min(25)));
                tokio::time::sleep(pause.min(budget.saturating_sub(start.elapsed()))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addrs: &[&str]) -> MasterSet {
        let addrs: Vec<String> = addrs.iter().map(|s| s.to_string()).collect();
        MasterSet::new(&addrs, |a| {
            Ok(Channel::from_shared(format!("http://{a}"))
                .map_err(|e| Error::invalid_argument("address", e.to_string()))?
                .connect_lazy())
        })
        .unwrap()
    }

    #[tokio::test]
    async fn not_leader_answers_lead_to_the_leader() {
        let s = set(&["a:1", "b:1", "c:1"]);
        assert_eq!(s.current(), "a:1");
        let named = |l: &str| Error::NotLeader {
            leader: l.to_string(),
        };
        // Named: straight there; refused calls are always tried again.
        assert!(s.after_error(&named("c:1"), false));
        assert_eq!(s.current(), "c:1");
        // None known yet: the next one.
        assert!(s.after_error(&named(""), false));
        assert_eq!(s.current(), "a:1");
        // A leader not configured is learned, within a bound.
        assert!(s.after_error(&named("d:1"), false));
        assert_eq!(s.current(), "d:1");
        for i in 0..MAX_LEARNED + 3 {
            assert!(s.after_error(&named(&format!("x{i}:1")), false));
        }
        assert_eq!(s.lock().len(), 3 + MAX_LEARNED, "bounded");
        assert_eq!(
            s.current(),
            format!("x{}:1", MAX_LEARNED + 2),
            "the newest leader"
        );
        assert!(s.after_error(&named("b:1"), false));
        assert_eq!(s.current(), "b:1", "configured ones stay");
        // Unreachable: move on, and try again only what is idempotent.
        let down = Error::unavailable("connection refused");
        let before = s.current();
        assert!(!s.after_error(&down, false));
        assert_ne!(s.current(), before);
        assert!(s.after_error(&down, true));
        // Anything else is the answer.
        assert!(!s.after_error(&Error::NotFound { path: "/x".into() }, true));
        assert!(MasterSet::new(&[], |_| unreachable!()).is_err());
    }
}
