//! Per-instance metrics. There is no global registry: each master and worker owns a
//! [`Registry`], so several can run in one process (as the tests do) without mixing
//! their figures. Metric names are constants in each crate's `metrics` module.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one daemon instance, by name.
#[derive(Debug, Default)]
pub struct Registry {
    counters: Mutex<BTreeMap<&'static str, Arc<Counter>>>,
}

impl Registry {
    /// The counter called `name`, created at zero on first use.
    pub fn counter(&self, name: &'static str) -> Arc<Counter> {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name).or_default().clone()
    }

    /// Every counter's current value.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.to_string(), v.get())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_independent() {
        let a = Registry::default();
        let b = Registry::default();
        a.counter("x").add(3);
        a.counter("x").inc();
        assert_eq!(a.snapshot()["x"], 4);
        assert!(!b.snapshot().contains_key("x"));
    }
}
