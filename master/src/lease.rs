//! Write leases. A file being written (incomplete) belongs to its writer only while
//! the writer renews its lease; a writer that vanishes (killed, partitioned, a
//! dropped writer object) stops renewing, and once the lease runs out the master
//! deletes the file: its cached blocks, its staged under-store copy and its inode.
//!
//! Leases are soft state: a master that starts grants every file of the
//! incomplete-file index (kept by apply) a fresh lease, so a writer always gets at
//! least one full lease to reach the master again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lease table: file id → deadline.
#[derive(Debug)]
pub struct Leases {
    duration: Duration,
    deadlines: Mutex<HashMap<u64, Instant>>,
}

impl Leases {
    /// A table whose leases last `duration` from each grant or renewal.
    pub fn new(duration: Duration) -> Self {
        Leases {
            duration,
            deadlines: Mutex::new(HashMap::new()),
        }
    }

    /// How long a lease lasts.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Grants (or extends) file `id`'s lease from `now`.
    pub fn grant(&self, id: u64, now: Instant) {
        self.table().insert(id, now + self.duration);
    }

    /// Forgets file `id`'s lease (completed or deleted).
    pub fn release(&self, id: u64) {
        self.table().remove(&id);
    }

    /// Whether file `id` has a lease that ran out before `now`.
    pub fn is_expired(&self, id: u64, now: Instant) -> bool {
        self.table().get(&id).is_some_and(|d| *d <= now)
    }

    /// Up to `limit` files whose lease ran out before `now`, earliest first.
    pub fn expired(&self, now: Instant, limit: usize) -> Vec<u64> {
        let mut out: Vec<(Instant, u64)> = self
            .table()
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, d)| (*d, *id))
            .collect();
        out.sort_unstable();
        out.truncate(limit);
        out.into_iter().map(|(_, id)| id).collect()
    }

    /// Leases held.
    pub fn len(&self) -> usize {
        self.table().len()
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
