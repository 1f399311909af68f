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
    /// Blocks it must drop, sent with the next heartbeat answer. A block it
    /// commits again meanwhile (read again after a `free`) leaves the set: the
    /// removal would drop the fresh copy. (A heartbeat's list of blocks added
    /// does not: it may predate the removal.)
    pub to_remove: HashSet<BlockId>,
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
    /// Every block it holds, with its length.
    pub blocks: Vec<(BlockId, u64)>,
}

#[derive(Default)]
struct Inner {
    workers: HashMap<WorkerId, WorkerState>,
    // Ordered by block id, so all blocks of a file are one range. Each location
    // keeps the length its worker reported.
    locations: BTreeMap<BlockId, Vec<(WorkerId, u64)>>,
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
        let start = clock_micros();
        Registry {
            inner: Mutex::new(Inner {
                next_id: start,
                ..Default::default()
            }),
        }
    }
}

/// Microseconds since the epoch (1 if the clock is before it).
fn clock_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
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
            ws.retain(|(w, _)| *w != worker);
            if ws.is_empty() {
                self.locations.remove(&block);
            }
        }
    }

    fn link(&mut self, block: BlockId, length: u64, worker: WorkerId) {
        let ws = self.locations.entry(block).or_default();
        match ws.iter_mut().find(|(w, _)| *w == worker) {
            Some(entry) => entry.1 = length,
            None => ws.push((worker, length)),
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

    /// Forgets every worker and location (a master that leads again does not know
    /// what changed while it did not): workers register again, with full reports.
    ///
    /// New ids start from the clock again (past any this registry gave): a worker
    /// still carrying an id an earlier leader gave it, from a clock that was behind
    /// this one, is told to register again rather than taken for another worker.
    pub fn forget_all(&self) {
        let mut inner = self.lock();
        inner.workers.clear();
        inner.locations.clear();
        inner.next_id = inner.next_id.max(clock_micros());
    }

    /// Registers a worker with its full block report. Blocks for which `is_valid`
    /// says false (their file is gone, or the length does not fit it) are queued
    /// for removal instead. A worker re-registering from the same address replaces
    /// its previous entry.
    pub fn register(&self, reg: Registration, is_valid: impl Fn(BlockId, u64) -> bool) -> WorkerId {
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
        let (live, dead): (Vec<_>, Vec<_>) = reg
            .blocks
            .into_iter()
            .partition(|(b, len)| is_valid(*b, *len));
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
                to_remove: dead.into_iter().map(|(b, _)| b).collect(),
            },
        );
        for (b, len) in live {
            inner.link(b, len, id);
        }
        id
    }

    /// Applies a heartbeat; `None` if the worker is unknown (it must register again),
    /// else the blocks it must drop.
    pub fn heartbeat(
        &self,
        id: WorkerId,
        used_bytes: u64,
        added: &[(BlockId, u64)],
        removed: &[BlockId],
        is_valid: impl Fn(BlockId, u64) -> bool,
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
        for &(b, len) in added {
            if is_valid(b, len) {
                inner.link(b, len, id);
            } else {
                to_remove.insert(b);
            }
        }
        Some(to_remove.into_iter().collect())
    }

    /// Records that `worker` now holds `block` of `length` bytes. Validity is
    /// checked under the lock, so a commit cannot slip in after the file's blocks
    /// were dropped.
    pub fn commit(
        &self,
        worker: WorkerId,
        block: BlockId,
        length: u64,
        is_valid: impl Fn(BlockId, u64) -> bool,
    ) -> CommitOutcome {
        let mut inner = self.lock();
        if !inner.workers.contains_key(&worker) {
            return CommitOutcome::UnknownWorker;
        }
        if !is_valid(block, length) {
            return CommitOutcome::DeadBlock;
        }
        inner.link(block, length, worker);
        // Committed now, so held now: a removal queued before (by a `free`)
        // would drop this copy. A block id names the same bytes for as long as
        // its file lives, and a dead file's blocks are refused above.
        if let Some(w) = inner.workers.get_mut(&worker) {
            w.to_remove.remove(&block);
        }
        CommitOutcome::Recorded
    }

    /// Drops the locations of `file`'s blocks that `keep` refuses (called when a
    /// file completes, once its length is known), telling their workers.
    pub fn retain_blocks_of(&self, file: FileId, keep: impl Fn(BlockId, u64) -> bool) {
        let mut inner = self.lock();
        let (lo, hi) = file_block_range(file);
        let refused: Vec<(BlockId, WorkerId)> = inner
            .locations
            .range(lo..hi)
            .flat_map(|(b, ws)| ws.iter().map(move |(w, len)| (*b, *w, *len)))
            .filter(|(b, _, len)| !keep(*b, *len))
            .map(|(b, w, _)| (b, w))
            .collect();
        for (b, w) in refused {
            inner.unlink(b, w);
            if let Some(state) = inner.workers.get_mut(&w) {
                state.blocks.remove(&b);
                state.to_remove.insert(b);
            }
        }
    }

    /// Workers holding `block`.
    pub fn locations(&self, block: BlockId) -> Vec<WorkerAddress> {
        let inner = self.lock();
        inner
            .locations
            .get(&block)
            .map(|ws| {
                ws.iter()
                    .filter_map(|(w, _)| inner.workers.get(w).map(|s| s.address.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many blocks of `file` below index `count` have at least one location:
    /// one range of the map, however many blocks the file has.
    pub fn cached_blocks_of(&self, file: FileId, count: u64) -> u64 {
        let (lo, _) = file_block_range(file);
        let hi = BlockId(lo.0.saturating_add(count));
        self.lock().locations.range(lo..hi).count() as u64
    }

    /// Forgets every location of the given files' blocks and tells their workers to
    /// drop them. Returns how many block copies were dropped.
    pub fn drop_files(&self, files: &[FileId]) -> usize {
        let mut inner = self.lock();
        let mut victims = Vec::new();
        for f in files {
            let (lo, hi) = file_block_range(*f);
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
            for (w, _) in workers {
                if let Some(state) = inner.workers.get_mut(&w) {
                    state.blocks.remove(&block);
                    state.to_remove.insert(block);
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

/// The block ids of `file`, as a half-open range.
fn file_block_range(file: FileId) -> (BlockId, BlockId) {
    (
        BlockId(file.0 << BLOCK_INDEX_BITS),
        BlockId((file.0 + 1) << BLOCK_INDEX_BITS),
    )
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
            blocks: blocks.into_iter().map(|b| (b, 10)).collect(),
        }
    }

    #[test]
    fn a_registry_that_forgets_never_gives_an_old_id_again() {
        let r = Registry::default();
        let before: Vec<WorkerId> = (0..5)
            .map(|i| r.register(reg(&format!("w{i}:1"), vec![]), |_, _| true))
            .collect();
        r.forget_all();
        // Old ids are unknown (register again), and new ones come after them.
        assert!(r.heartbeat(before[0], 0, &[], &[], |_, _| true).is_none());
        let after = r.register(reg("w9:1", vec![]), |_, _| true);
        assert!(before.iter().all(|b| b.0 < after.0), "{before:?} {after:?}");
    }

    #[test]
    fn locations_follow_reports_and_deletes() {
        let r = Registry::default();
        let b0 = BlockId::new(FileId(5), 0).unwrap();
        let b1 = BlockId::new(FileId(5), 1).unwrap();
        let other = BlockId::new(FileId(6), 0).unwrap();
        let dead = BlockId::new(FileId(9), 0).unwrap();
        let w = r.register(reg("a:1", vec![b0, dead]), |b, _| b.file() != FileId(9));
        assert_eq!(r.locations(b0).len(), 1);
        assert!(r.locations(dead).is_empty());
        assert_eq!(
            r.heartbeat(w, 0, &[(b1, 10), (other, 10)], &[], |_, _| true)
                .unwrap(),
            vec![dead]
        );
        assert_eq!(r.cached_blocks_of(FileId(5), 2), 2);
        assert_eq!(
            r.cached_blocks_of(FileId(5), 1),
            1,
            "only blocks below the count"
        );
        assert_eq!(r.cached_blocks_of(FileId(6), 1), 1);
        assert_eq!(r.cached_blocks_of(FileId(7), 1 << 24), 0);
        assert_eq!(r.drop_files(&[FileId(5)]), 2);
        assert!(r.locations(b1).is_empty());
        assert_eq!(r.locations(other).len(), 1);
        let mut told = r.heartbeat(w, 0, &[], &[], |_, _| true).unwrap();
        told.sort();
        assert_eq!(told, vec![b0, b1]);
        // Same address registering again replaces the old entry.
        let w2 = r.register(reg("a:1", vec![]), |_, _| true);
        assert_ne!(w, w2);
        assert!(r.heartbeat(w, 0, &[], &[], |_, _| true).is_none());
        assert!(r.locations(other).is_empty());
        assert_eq!(r.expire(Duration::ZERO).len(), 1);
        assert!(r.workers().is_empty());
    }
}

#[cfg(test)]
mod length_tests {
    use super::*;

    #[test]
    fn lengths_that_do_not_fit_the_file_are_refused_and_dropped() {
        let r = Registry::default();
        let b0 = BlockId::new(FileId(5), 0).unwrap();
        let b1 = BlockId::new(FileId(5), 1).unwrap();
        // The file is being written: any length up to the block size (100) fits.
        let fits = |limit: u64| move |_: BlockId, len: u64| len > 0 && len <= limit;
        let w = r.register(
            Registration {
                host: "h".into(),
                rpc_address: "a:1".into(),
                capacity_bytes: 1000,
                used_bytes: 0,
                blocks: vec![(b0, 100), (b1, 1000)],
            },
            fits(100),
        );
        assert_eq!(r.locations(b0).len(), 1);
        assert!(r.locations(b1).is_empty(), "a block longer than a block");
        assert_eq!(
            r.commit(w, b1, 0, fits(100)),
            CommitOutcome::DeadBlock,
            "an empty block"
        );
        assert_eq!(r.commit(w, b1, 60, fits(100)), CommitOutcome::Recorded);
        // The file completes at 150 bytes: block 1 must hold 50, not 60.
        r.retain_blocks_of(FileId(5), |b, len| len == if b == b0 { 100 } else { 50 });
        assert_eq!(r.locations(b0).len(), 1);
        assert!(r.locations(b1).is_empty());
        let mut told = r.heartbeat(w, 0, &[], &[], |_, _| true).unwrap();
        told.sort();
        // Refused at registration, committed again (with a length that fits
        // then), refused at completion: the worker holds one copy, told once.
        assert_eq!(told, vec![b1]);
    }

    #[test]
    fn a_block_committed_again_after_a_free_is_not_removed() {
        let r = Registry::default();
        let b = BlockId::new(FileId(7), 0).unwrap();
        let w = r.register(
            Registration {
                host: "h".into(),
                rpc_address: "a:1".into(),
                capacity_bytes: 1000,
                used_bytes: 0,
                blocks: vec![(b, 10)],
            },
            |_, _| true,
        );
        // Freed: the worker is to drop it at its next heartbeat...
        assert_eq!(r.drop_files(&[FileId(7)]), 1);
        assert!(r.locations(b).is_empty());
        // ...but it commits the block again first (read again, after evicting it).
        assert_eq!(r.commit(w, b, 10, |_, _| true), CommitOutcome::Recorded);
        assert_eq!(r.heartbeat(w, 0, &[], &[], |_, _| true).unwrap(), vec![]);
        assert_eq!(r.locations(b).len(), 1);
        // A heartbeat's report of blocks added is not a commit: it may predate a
        // free, which still takes effect.
        assert_eq!(r.drop_files(&[FileId(7)]), 1);
        assert_eq!(
            r.heartbeat(w, 0, &[(b, 10)], &[], |_, _| true).unwrap(),
            vec![b]
        );
    }
}
