//! Workers and block locations: soft state, rebuilt from worker registration and
//! heartbeats, never journaled. A restarted master knows no worker until each one's
//! next heartbeat is answered with "register again" and it re-sends its full report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use strata_common::ids::{BlockId, FileId, WorkerId, BLOCK_INDEX_BITS};
use strata_common::types::WorkerAddress;

/// What the master knows of a worker.
#[derive(Debug, Clone)]
pub struct WorkerState {
    /// Where it answers.
    pub address: WorkerAddress,
    /// Bytes its tiers may hold.
    pub capacity_bytes: u64,
    /// Bytes they hold.
    pub used_bytes: u64,
    /// When it last reported.
    pub last_seen: Instant,
    /// Blocks it holds.
    pub blocks: HashSet<BlockId>,
    /// Blocks it must drop, sent with the next heartbeat answer.
    pub to_remove: Vec<BlockId>,
}

/// What became of a block commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The location is recorded.
    Recorded,
    /// The worker must register first.
    UnknownWorker,
    /// The block's file no longer exists.
    DeadBlock,
}

/// A registering worker's report.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Host name.
    pub host: String,
    /// gRPC address.
    pub rpc_address: String,
    /// Tier capacity.
    pub capacity_bytes: u64,
    /// Tier usage.
    pub used_bytes: u64,
    /// Every block it holds.
    pub blocks: Vec<BlockId>,
}

#[derive(Default)]
struct Inner {
    workers: HashMap<WorkerId, WorkerState>,
    // Ordered by block id, so all blocks of a file are one range.
    locations: BTreeMap<BlockId, Vec<WorkerId>>,
    next_id: u64,
}

/// The worker registry and block-location map.
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Default for Registry {
    fn default() -> Self {
        // Ids start from the clock so a restarted master does not reuse a previous
        // run's ids while old workers still hold them.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Registry {
            inner: Mutex::new(Inner {
                next_id: start,
                ..Default::default()
            }),
        }
    }
}

impl Inner {
    fn drop_worker(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.remove(&id) {
            for b in w.blocks {
                self.unlink(b, id);
            }
        }
    }

    fn unlink(&mut self, block: BlockId, worker: WorkerId) {
        if let Some(ws) = self.locations.get_mut(&block) {
            ws.retain(|w| *w != worker);
            if ws.is_empty() {
                self.locations.remove(&block);
            }
        }
    }

    fn link(&mut self, block: BlockId, worker: WorkerId) {
        let ws = self.locations.entry(block).or_default();
        if !ws.contains(&worker) {
            ws.push(worker);
        }
        if let Some(w) = self.workers.get_mut(&worker) {
            w.blocks.insert(block);
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a worker with its full block report. Blocks for which `is_live`
    /// says false (their file is gone) are queued for removal instead. A worker
    /// re-registering from the same address replaces its previous entry.
    pub fn register(&self, reg: Registration, is_live: impl Fn(BlockId) -> bool) -> WorkerId {
        let mut inner = self.lock();
        let stale: Vec<WorkerId> = inner
            .workers
            .iter()
            .filter(|(_, w)| w.address.rpc_address == reg.rpc_address)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            inner.drop_worker(id);
        }
        inner.next_id += 1;
        let id = WorkerId(inner.next_id);
        let (live, dead): (Vec<_>, Vec<_>) = reg.blocks.into_iter().partition(|b| is_live(*b));
        inner.workers.insert(
            id,
            WorkerState {
                address: WorkerAddress {
                    id,
                    host: reg.host,
                    rpc_address: reg.rpc_address,
                },
                capacity_bytes: reg.capacity_bytes,
                used_bytes: reg.used_bytes,
                last_seen: Instant::now(),
                blocks: HashSet::new(),
                to_remove: dead,
            },
        );
        for b in live {
            inner.link(b, id);
        }
        id
    }

    /// Applies a heartbeat; `None` if the worker is unknown (it must register again),
    /// else the blocks it must drop.
    pub fn heartbeat(
        &self,
        id: WorkerId,
        used_bytes: u64,
        added: &[BlockId],
        removed: &[BlockId],
        is_live: impl Fn(BlockId) -> bool,
    ) -> Option<Vec<BlockId>> {
        let mut inner = self.lock();
        let w = inner.workers.get_mut(&id)?;
        w.used_bytes = used_bytes;
        w.last_seen = Instant::now();
        let mut to_remove = std::mem::take(&mut w.to_remove);
        for b in removed {
            if let Some(w) = inner.workers.get_mut(&id) {
                w.blocks.remove(b);
            }
            inner.unlink(*b, id);
        }
        for b in added {
            if is_live(*b) {
                inner.link(*b, id);
            } else {
                to_remove.push(*b);
            }
        }
        Some(to_remove)
    }

    /// Records that `worker` now holds `block`. Liveness is checked under the lock,
    /// so a commit cannot slip in after the file's blocks were dropped.
    pub fn commit(
        &self,
        worker: WorkerId,
        block: BlockId,
        is_live: impl Fn(BlockId) -> bool,
    ) -> CommitOutcome {
        let mut inner = self.lock();
        if !inner.workers.contains_key(&worker) {
            return CommitOutcome::UnknownWorker;
        }
        if !is_live(block) {
            return CommitOutcome::DeadBlock;
        }
        inner.link(block, worker);
        CommitOutcome::Recorded
    }

    /// Workers holding `block`.
    pub fn locations(&self, block: BlockId) -> Vec<WorkerAddress> {
        let inner = self.lock();
        inner
            .locations
            .get(&block)
            .map(|ws| {
                ws.iter()
                    .filter_map(|w| inner.workers.get(w).map(|s| s.address.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many of `blocks` have at least one location.
    pub fn cached_count(&self, blocks: impl Iterator<Item = BlockId>) -> usize {
        let inner = self.lock();
        blocks.filter(|b| inner.locations.contains_key(b)).count()
    }

    /// Forgets every location of the given files' blocks and tells their workers to
    /// drop them. Returns how many block copies were dropped.
    pub fn drop_files(&self, files: &[FileId]) -> usize {
        let mut inner = self.lock();
        let mut victims = Vec::new();
        for f in files {
            let lo = BlockId(f.0 << BLOCK_INDEX_BITS);
            let hi = BlockId((f.0 + 1) << BLOCK_INDEX_BITS);
            victims.extend(
                inner
                    .locations
                    .range(lo..hi)
                    .map(|(b, ws)| (*b, ws.clone())),
            );
        }
        let mut n = 0;
        for (block, workers) in victims {
            inner.locations.remove(&block);
            for w in workers {
                if let Some(state) = inner.workers.get_mut(&w) {
                    state.blocks.remove(&block);
                    state.to_remove.push(block);
                    n += 1;
                }
            }
        }
        n
    }

    /// Drops workers silent for longer than `timeout`; returns their addresses.
    pub fn expire(&self, timeout: Duration) -> Vec<WorkerAddress> {
        let mut inner = self.lock();
        let now = Instant::now();
        let dead: Vec<WorkerId> = inner
            .workers
            .iter()
            .filter(|(_, w)| now.duration_since(w.last_seen) > timeout)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in dead {
            if let Some(w) = inner.workers.get(&id) {
                out.push(w.address.clone());
            }
            inner.drop_worker(id);
        }
        out
    }

    /// Every live worker.
    pub fn workers(&self) -> Vec<WorkerState> {
        let mut v: Vec<_> = self.lock().workers.values().cloned().collect();
        v.sort_by(|a, b| a.address.rpc_address.cmp(&b.address.rpc_address));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(addr: &str, blocks: Vec<BlockId>) -> Registration {
        Registration {
            host: "h".into(),
            rpc_address: addr.into(),
            capacity_bytes: 100,
            used_bytes: 0,
            blocks,
        }
    }

    #[test]
    fn locations_follow_reports_and_deletes() {
        let r = Registry::default();
        let b0 = BlockId::new(FileId(5), 0).unwrap();
        let b1 = BlockId::new(FileId(5), 1).unwrap();
        let other = BlockId::new(FileId(6), 0).unwrap();
        let dead = BlockId::new(FileId(9), 0).unwrap();
        let w = r.register(reg("a:1", vec![b0, dead]), |b| b.file() != FileId(9));
        assert_eq!(r.locations(b0).len(), 1);
        assert!(r.locations(dead).is_empty());
        assert_eq!(
            r.heartbeat(w, 0, &[b1, other], &[], |_| true).unwrap(),
            vec![dead]
        );
        assert_eq!(r.cached_count([b0, b1, other].into_iter()), 3);
        assert_eq!(r.drop_files(&[FileId(5)]), 2);
        assert!(r.locations(b1).is_empty());
        assert_eq!(r.locations(other).len(), 1);
        let mut told = r.heartbeat(w, 0, &[], &[], |_| true).unwrap();
        told.sort();
        assert_eq!(told, vec![b0, b1]);
        // Same address registering again replaces the old entry.
        let w2 = r.register(reg("a:1", vec![]), |_| true);
        assert_ne!(w, w2);
        assert!(r.heartbeat(w, 0, &[], &[], |_| true).is_none());
        assert!(r.locations(other).is_empty());
        assert_eq!(r.expire(Duration::ZERO).len(), 1);
        assert!(r.workers().is_empty());
    }
}
