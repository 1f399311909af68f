//! Write leases. A file being written (incomplete) belongs to its writer only while
//! the writer renews its lease; a writer that vanishes (killed, partitioned, a
//! dropped writer object) stops renewing, and once the lease runs out the master
//! deletes the file: its cached blocks, its staged under-store copy and its inode.
//!
//! Leases are soft state: a master that starts grants every file of the
//! incomplete-file index (kept by apply) a fresh lease, so a writer always gets at
//! least one full lease to reach the master again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lease table: file id → deadline, and the same ordered by deadline, so
/// finding the expired ones costs what they are, not the whole table.
#[derive(Debug)]
pub struct Leases {
    duration: Duration,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<u64, Instant>,
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl Table {
    fn set(&mut self, id: u64, deadline: Instant) {
        if let Some(old) = self.by_id.insert(id, deadline) {
            self.by_deadline.remove(&(old, id));
        }
        self.by_deadline.insert((deadline, id));
    }

    fn remove(&mut self, id: u64) {
        if let Some(old) = self.by_id.remove(&id) {
            self.by_deadline.remove(&(old, id));
        }
    }
}

impl Leases {
    /// A table whose leases last `duration` from each grant or renewal.
    pub fn new(duration: Duration) -> Self {
        Leases {
            duration,
            table: Mutex::new(Table::default()),
        }
    }

    /// How long a lease lasts.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Grants (or extends) file `id`'s lease from `now`.
    pub fn grant(&self, id: u64, now: Instant) {
        self.table().set(id, now + self.duration);
    }

    /// Forgets file `id`'s lease (completed or deleted).
    pub fn release(&self, id: u64) {
        self.table().remove(id);
    }

    /// Whether file `id` has a lease that ran out before `now`.
    pub fn is_expired(&self, id: u64, now: Instant) -> bool {
        self.table().by_id.get(&id).is_some_and(|d| *d <= now)
    }

    /// Up to `limit` files whose lease ran out before `now`, earliest first.
    pub fn expired(&self, now: Instant, limit: usize) -> Vec<u64> {
        self.table()
            .by_deadline
            .iter()
            .take_while(|(d, _)| *d <= now)
            .take(limit)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Leases held.
    pub fn len(&self) -> usize {
        self.table().by_id.len()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_run_out_unless_renewed() {
        let l = Leases::new(Duration::from_secs(10));
        let t0 = Instant::now();
        l.grant(1, t0);
        l.grant(2, t0 + Duration::from_secs(1));
        assert!(l.expired(t0 + Duration::from_secs(9), 10).is_empty());
        assert_eq!(l.expired(t0 + Duration::from_secs(10), 10), [1]);
        assert_eq!(l.expired(t0 + Duration::from_secs(11), 10), [1, 2]);
        assert_eq!(l.expired(t0 + Duration::from_secs(11), 1), [1]);
        // A renewal pushes the deadline out again.
        l.grant(1, t0 + Duration::from_secs(5));
        assert!(!l.is_expired(1, t0 + Duration::from_secs(14)));
        assert!(l.is_expired(1, t0 + Duration::from_secs(15)));
        l.release(1);
        assert!(!l.is_expired(1, t0 + Duration::from_secs(100)));
        assert_eq!(l.len(), 1);
    }
}
