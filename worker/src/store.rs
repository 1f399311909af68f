//! The block store: one tier (MEM) of block files in a directory, under a byte quota,
//! with least-recently-used eviction.
//!
//! Invariants:
//! - A block is never half-visible: it is written under `.tmp/`, optionally fsynced,
//!   then renamed to its id. Only renamed blocks are in the index.
//! - `used + reserved <= quota` whenever a reservation is granted; room is made by
//!   evicting the least recently used blocks first.
//! - An evicted block is unlinked; a reader that already opened it keeps reading from
//!   its descriptor, so eviction never breaks a read in flight.
//! - Added and removed blocks are remembered until the next heartbeat takes them.
//! - The folder belongs to one cluster, named in its `.cluster_id` file: blocks are
//!   only ever kept under the id of the cluster whose master accepted them, and
//!   storage adopted by another cluster (the master was formatted) is emptied first.

use crate::metrics::{WorkerMetrics, BLOCKS_CACHED, BLOCKS_EVICTED, BLOCKS_REMOVED};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use strata_common::ids::{BlockId, FileId};
use strata_common::{Error, Result};

/// Names the cluster the folder's blocks belong to.
const CLUSTER_ID_FILE: &str = ".cluster_id";

struct Entry {
    length: u64,
    seq: u64,
}

#[derive(Default)]
struct State {
    blocks: HashMap<BlockId, Entry>,
    lru: BTreeMap<u64, BlockId>,
    next_seq: u64,
    // Bumped when the storage is adopted by another cluster: a block begun before
    // cannot be committed after (its bytes may belong to the old cluster's file).
    epoch: u64,
    used: u64,
    reserved: u64,
    // Last change of each block since the previous heartbeat: true added, false removed.
    changes: HashMap<BlockId, bool>,
    // Files being written MUST_CACHE, with how many writers: their blocks are not
    // evicted, since storage holds their only copy and the writer has not finished.
    pinned_files: HashMap<u64, usize>,
}

impl State {
    fn touch(&mut self, id: BlockId) {
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(e) = self.blocks.get_mut(&id) {
            self.lru.remove(&e.seq);
            e.seq = seq;
            self.lru.insert(seq, id);
        }
    }

    fn insert(&mut self, id: BlockId, length: u64) {
        self.forget(id);
        self.next_seq += 1;
        let seq = self.next_seq;
        self.blocks.insert(id, Entry { length, seq });
        self.lru.insert(seq, id);
        self.used += length;
    }

    fn forget(&mut self, id: BlockId) -> bool {
        match self.blocks.remove(&id) {
            Some(e) => {
                self.lru.remove(&e.seq);
                self.used -= e.length;
                true
            }
            None => false,
        }
    }
}

/// The error for a failed write to a block file: out of space is [`Error::NoSpace`]
/// (the caller frees room or gives up), anything else [`Error::StorageIo`] (the
/// tier's disk is failing; another worker may do).
fn write_error(what: &Path, e: std::io::Error) -> Error {
    let what = what.display().to_string();
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::NoSpace {
            what,
            reason: e.to_string(),
        },
        _ => Error::StorageIo {
            what,
            reason: e.to_string(),
        },
    }
}

/// Room set aside for a block being written; given back when dropped.
pub struct Reservation {
    store: Arc<BlockStore>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut st = self.store.lock();
        st.reserved -= self.bytes;
    }
}

/// Keeps one file's blocks from eviction while it lives.
pub struct FilePin {
    store: Arc<BlockStore>,
    file: FileId,
}

impl Drop for FilePin {
    fn drop(&mut self) {
        let mut st = self.store.lock();
        if let Some(n) = st.pinned_files.get_mut(&self.file.0) {
            *n -= 1;
            if *n == 0 {
                st.pinned_files.remove(&self.file.0);
            }
        }
    }
}

/// A block being written: a temporary file, removed unless committed.
pub struct TempBlock {
    path: PathBuf,
    // Open while being written; closed (and fsynced if asked) once sealed, so a
    // long write holds one descriptor, not one per block.
    file: Option<File>,
    written: u64,
    reservation: Reservation,
    epoch: u64,
    committed: bool,
}

impl TempBlock {
    /// Appends bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        use std::io::Write;
        if data.len() as u64 > self.reservation.bytes - self.written {
            return Err(Error::internal(format!(
                "block write of {} bytes past its reservation of {}",
                data.len(),
                self.reservation.bytes
            )));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| Error::internal("write to a committed block"))?;
        file.write_all(data)
            .map_err(|e| write_error(&self.path, e))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Closes the block's file (fsynced first when `sync`): nothing more will be
    /// written, and it waits, closed, to be committed.
    pub fn seal(&mut self, sync: bool) -> Result<()> {
        if let Some(file) = self.file.take() {
            if sync {
                file.sync_all().map_err(|e| write_error(&self.path, e))?;
            }
        }
        Ok(())
    }
}

impl Drop for TempBlock {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A block directory with a quota.
pub struct BlockStore {
    cluster_id: Mutex<Option<String>>,
    dir: PathBuf,
    tmp_dir: PathBuf,
    quota: u64,
    state: Mutex<State>,
    tmp_seq: AtomicU64,
    metrics: Arc<WorkerMetrics>,
}

impl BlockStore {
    /// Opens the tier in `dir`: clears unfinished writes, indexes the blocks already
    /// there, and evicts down to `quota` if they exceed it.
    pub fn open(dir: &Path, quota: u64, metrics: Arc<WorkerMetrics>) -> Result<Arc<Self>> {
        let io = |e: std::io::Error| Error::internal(format!("block store {}: {e}", dir.display()));
        let tmp_dir = dir.join(".tmp");
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir).map_err(io)?;
        }
        std::fs::create_dir_all(&tmp_dir).map_err(io)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let meta = entry.metadata().map_err(io)?;
            if meta.is_file() {
                let mtime = meta.modified().ok();
                found.push((mtime, BlockId(id), meta.len()));
            }
        }
        // Oldest first, so recency survives a restart roughly.
        found.sort();
        let cluster_id = match std::fs::read_to_string(dir.join(CLUSTER_ID_FILE)) {
            Ok(id) => Some(id.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let store = Arc::new(BlockStore {
            cluster_id: Mutex::new(cluster_id),
            dir: dir.to_path_buf(),
            tmp_dir,
            quota,
            state: Mutex::new(State::default()),
            tmp_seq: AtomicU64::new(0),
            metrics,
        });
        {
            let mut st = store.lock();
            for (_, id, len) in found {
                st.insert(id, len);
            }
            store.evict_until(&mut st, 0)?;
            st.changes.clear();
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn block_path(&self, id: BlockId) -> PathBuf {
        self.dir.join(id.0.to_string())
    }

    /// The cluster this storage belongs to; `None` for storage no master has
    /// claimed yet.
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes this storage `cluster`'s: if it belonged to another (or to none), every
    /// block is dropped first, since block ids of another cluster's files may name
    /// different files here; blocks being written then can no longer be committed.
    /// `keep_blocks` keeps them instead: only for storage that never had an id, when
    /// the master says its cluster is the one that storage served before cluster ids
    /// existed. Returns how many blocks were dropped.
    pub fn adopt_cluster(&self, cluster: &str, keep_blocks: bool) -> Result<usize> {
        let mut current = self.cluster_id.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_deref() == Some(cluster) {
            return Ok(0);
        }
        let dropped = {
            let mut st = self.lock();
            st.epoch += 1;
            if keep_blocks {
                0
            } else {
                let ids: Vec<BlockId> = st.blocks.keys().copied().collect();
                for id in &ids {
                    st.forget(*id);
                }
                // The master never linked them: nothing to report.
                st.changes.clear();
                ids.len()
            }
        };
        if !keep_blocks {
            // By folder, not by index: a block file the index lost track of (an
            // unlink that failed) must not survive into the new cluster either.
            let io = |e: std::io::Error| write_error(&self.dir, e);
            for entry in std::fs::read_dir(&self.dir).map_err(io)? {
                let entry = entry.map_err(io)?;
                let numeric = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u64>().is_ok());
                if numeric {
                    match std::fs::remove_file(entry.path()) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(write_error(&entry.path(), e))
                        }
                        _ => {}
                    }
                }
            }
        }
        let path = self.dir.join(CLUSTER_ID_FILE);
        let temp = self.tmp_dir.join(CLUSTER_ID_FILE);
        std::fs::write(&temp, cluster)
            .and_then(|_| std::fs::rename(&temp, &path))
            .map_err(|e| write_error(&path, e))?;
        *current = Some(cluster.to_string());
        Ok(dropped)
    }

    /// Folder of the tier.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The quota.
    pub fn capacity(&self) -> u64 {
        self.quota
    }

    /// Bytes held by committed blocks.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Evicts least recently used blocks until `needed` more bytes fit.
    fn evict_until(&self, st: &mut State, needed: u64) -> Result<()> {
        if needed > self.quota {
            return Err(Error::NoSpace {
                what: "MEM tier".into(),
                reason: format!("{needed} bytes exceed the tier's quota of {}", self.quota),
            });
        }
        // `used + reserved <= quota` holds, so neither sum below can overflow.
        while st.used + st.reserved > self.quota - needed {
            let candidate = st
                .lru
                .iter()
                .find(|(_, id)| !st.pinned_files.contains_key(&id.file().0))
                .map(|(seq, id)| (*seq, *id));
            let Some((seq, victim)) = candidate else {
                return Err(Error::NoSpace {
                    what: "MEM tier".into(),
                    reason: format!(
                        "{needed} bytes do not fit: quota {}, {} bytes reserved by writes in flight, \
                         the rest held by files being written MUST_CACHE",
                        self.quota, st.reserved
                    ),
                });
            };
            st.lru.remove(&seq);
            if let Some(e) = st.blocks.remove(&victim) {
                st.used -= e.length;
            }
            if let Err(e) = std::fs::remove_file(self.block_path(victim)) {
                tracing::warn!(block = %victim, "evicted block file could not be removed: {e}");
            }
            st.changes.insert(victim, false);
            self.metrics.counter(BLOCKS_EVICTED).inc();
            tracing::debug!(block = %victim, "evicted");
        }
        Ok(())
    }

    /// Keeps the blocks of `file` from eviction until the returned pin drops.
    pub fn pin_file(self: &Arc<Self>, file: FileId) -> FilePin {
        *self.lock().pinned_files.entry(file.0).or_insert(0) += 1;
        FilePin {
            store: self.clone(),
            file,
        }
    }

    /// Starts a block of at most `max_len` bytes, evicting to make room.
    pub fn begin(self: &Arc<Self>, max_len: u64) -> Result<TempBlock> {
        let epoch = {
            let mut st = self.lock();
            self.evict_until(&mut st, max_len)?;
            st.reserved += max_len;
            st.epoch
        };
        let reservation = Reservation {
            store: self.clone(),
            bytes: max_len,
        };
        let path = self
            .tmp_dir
            .join(format!("{}", self.tmp_seq.fetch_add(1, Ordering::Relaxed)));
        let file = File::create(&path).map_err(|e| write_error(&path, e))?;
        Ok(TempBlock {
            path,
            file: Some(file),
            written: 0,
            reservation,
            epoch,
            committed: false,
        })
    }

    /// Makes a written block visible under `id` (fsynced first when `sync`).
    pub fn commit(&self, id: BlockId, mut temp: TempBlock, sync: bool) -> Result<u64> {
        // A block sealed earlier was fsynced then if it had to be.
        temp.seal(sync)?;
        let len = temp.written;
        let mut st = self.lock();
        if st.epoch != temp.epoch {
            return Err(Error::unavailable(format!(
                "block {id}: this worker's storage was adopted by another cluster during the write"
            )));
        }
        std::fs::rename(&temp.path, self.block_path(id))
            .map_err(|e| write_error(&self.block_path(id), e))?;
        temp.committed = true;
        st.insert(id, len);
        st.changes.insert(id, true);
        drop(st);
        // Returns the reservation now that `used` counts the block.
        drop(temp);
        self.metrics.counter(BLOCKS_CACHED).inc();
        Ok(len)
    }

    /// Opens a cached block for reading and marks it recently used.
    pub fn open_block(&self, id: BlockId) -> Option<(File, u64)> {
        let mut st = self.lock();
        let len = st.blocks.get(&id)?.length;
        match File::open(self.block_path(id)) {
            Ok(f) => {
                st.touch(id);
                Some((f, len))
            }
            Err(e) => {
                tracing::warn!(block = %id, "indexed block cannot be opened, dropping it: {e}");
                st.forget(id);
                st.changes.insert(id, false);
                None
            }
        }
    }

    /// Whether the block is cached.
    pub fn contains(&self, id: BlockId) -> bool {
        self.lock().blocks.contains_key(&id)
    }

    /// Drops a block (the master asked: file deleted or freed).
    pub fn remove(&self, id: BlockId) {
        let mut st = self.lock();
        if st.forget(id) {
            let _ = std::fs::remove_file(self.block_path(id));
            st.changes.insert(id, false);
            self.metrics.counter(BLOCKS_REMOVED).inc();
        }
    }

    /// Blocks added (with their lengths) and removed since the last call.
    pub fn take_deltas(&self) -> (Vec<(BlockId, u64)>, Vec<BlockId>) {
        let mut st = self.lock();
        let changes = std::mem::take(&mut st.changes);
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for (id, present) in changes {
            match st.blocks.get(&id) {
                Some(e) if present => added.push((id, e.length)),
                _ => removed.push(id),
            }
        }
        (added, removed)
    }

    /// Puts back deltas a failed heartbeat could not deliver, unless the block
    /// changed again since.
    pub fn restore_deltas(&self, added: Vec<(BlockId, u64)>, removed: Vec<BlockId>) {
        let mut st = self.lock();
        for (id, _) in added {
            st.changes.entry(id).or_insert(true);
        }
        for id in removed {
            st.changes.entry(id).or_insert(false);
        }
    }

    /// Every block held with its length, clearing the deltas (a full report
    /// supersedes them).
    pub fn full_report(&self) -> (Vec<(BlockId, u64)>, u64) {
        let mut st = self.lock();
        st.changes.clear();
        (
            st.blocks.iter().map(|(id, e)| (*id, e.length)).collect(),
            st.used,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Arc<BlockStore>, id: u64, len: usize) {
        let mut t = store.begin(len as u64).unwrap();
        t.write(&vec![id as u8; len]).unwrap();
        store.commit(BlockId(id), t, false).unwrap();
    }

    #[test]
    fn evicts_least_recently_used_and_keeps_open_readers() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(WorkerMetrics::default());
        let s = BlockStore::open(dir.path(), 300, m.clone()).unwrap();
        put(&s, 1, 100);
        put(&s, 2, 100);
        put(&s, 3, 100);
        let (mut reader, _) = s.open_block(BlockId(1)).unwrap(); // 1 is now most recent
        put(&s, 4, 100); // evicts 2
        assert!(!s.contains(BlockId(2)));
        assert!(s.contains(BlockId(1)));
        put(&s, 5, 150); // evicts 3 and 1
        assert!(!s.contains(BlockId(1)));
        assert_eq!(m.counter(BLOCKS_EVICTED).get(), 3);
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut buf).unwrap();
        assert_eq!(buf, vec![1u8; 100]);
        assert!(s.used() <= 300);
        let (added, removed) = s.take_deltas();
        // Only the last change of each block counts: 1, 2, 3 came and went.
        assert_eq!(added.len(), 2);
        assert_eq!(removed.len(), 3);
        s.restore_deltas(vec![(BlockId(4), 100)], vec![]);
        s.remove(BlockId(4));
        let (added, removed) = s.take_deltas();
        assert!(
            added.is_empty(),
            "a restored add must not undo a later removal"
        );
        assert_eq!(removed, vec![BlockId(4)]);
    }

    #[test]
    fn too_big_is_no_space_and_uncommitted_writes_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlockStore::open(dir.path(), 100, Arc::new(WorkerMetrics::default())).unwrap();
        assert!(matches!(s.begin(101), Err(Error::NoSpace { .. })));
        let mut t = s.begin(100).unwrap();
        t.write(b"partial").unwrap();
        // While reserved, nothing else fits.
        assert!(s.begin(1).is_err());
        drop(t);
        assert!(s.begin(100).is_ok());
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn blocks_of_files_being_written_must_cache_are_not_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlockStore::open(dir.path(), 300, Arc::new(WorkerMetrics::default())).unwrap();
        let f = FileId(9);
        let id = |i| BlockId::new(f, i).unwrap().0;
        let pin = s.pin_file(f);
        put(&s, id(0), 100);
        put(&s, 1, 100); // another file's block
        put(&s, id(1), 100);
        // The other file's block goes; the pinned file's blocks stay.
        put(&s, id(2), 100);
        assert!(!s.contains(BlockId(1)));
        let err = s.begin(100).err().expect("only pinned blocks are left");
        assert!(err.to_string().contains("MUST_CACHE"), "{err}");
        for i in 0..3 {
            assert!(s.contains(BlockId(id(i))));
        }
        drop(pin);
        assert!(s.begin(100).is_ok());
        assert!(
            !s.contains(BlockId(id(0))),
            "unpinned, the oldest block is evicted"
        );
    }

    #[test]
    fn reopening_indexes_existing_blocks() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = BlockStore::open(dir.path(), 1000, Arc::new(WorkerMetrics::default())).unwrap();
            put(&s, 7, 10);
            put(&s, 8, 20);
        }
        let s = BlockStore::open(dir.path(), 1000, Arc::new(WorkerMetrics::default())).unwrap();
        let (mut blocks, used) = s.full_report();
        blocks.sort();
        assert_eq!(blocks, vec![(BlockId(7), 10), (BlockId(8), 20)]);
        assert_eq!(used, 30);
    }

    #[test]
    fn adopting_another_cluster_empties_the_storage_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let m = || Arc::new(WorkerMetrics::default());
        {
            let s = BlockStore::open(dir.path(), 1000, m()).unwrap();
            assert_eq!(s.cluster_id(), None);
            put(&s, 7, 10);
            // New storage adopted by its first cluster: blocks of unknown origin go.
            assert_eq!(s.adopt_cluster("c1", false).unwrap(), 1);
            put(&s, 8, 20);
            assert_eq!(
                s.adopt_cluster("c1", false).unwrap(),
                0,
                "same cluster: kept"
            );
        }
        let s = BlockStore::open(dir.path(), 1000, m()).unwrap();
        assert_eq!(s.cluster_id().as_deref(), Some("c1"));
        assert!(s.contains(BlockId(8)));
        // The cluster was formatted: a new id, and nothing of the old one survives.
        assert_eq!(s.adopt_cluster("c2", false).unwrap(), 1);
        assert!(!s.contains(BlockId(8)));
        assert_eq!(s.used(), 0);
        assert!(!dir.path().join("8").exists());
        let (added, removed) = s.take_deltas();
        assert!(added.is_empty() && removed.is_empty());
        let s = BlockStore::open(dir.path(), 1000, m()).unwrap();
        assert_eq!(s.cluster_id().as_deref(), Some("c2"));
        assert!(s.full_report().0.is_empty());
    }

    #[test]
    fn a_block_begun_before_an_adoption_is_never_committed_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlockStore::open(dir.path(), 1000, Arc::new(WorkerMetrics::default())).unwrap();
        s.adopt_cluster("c1", false).unwrap();
        let mut t = s.begin(100).unwrap();
        t.write(b"old cluster's bytes").unwrap();
        t.seal(false).unwrap();
        // A stray block file the index does not know of.
        std::fs::write(dir.path().join("9"), b"stray").unwrap();
        s.adopt_cluster("c2", false).unwrap();
        assert!(matches!(
            s.commit(BlockId(7), t, false),
            Err(Error::Unavailable { .. })
        ));
        assert!(!s.contains(BlockId(7)));
        assert!(!dir.path().join("7").exists());
        assert!(
            !dir.path().join("9").exists(),
            "emptied by folder, not by index"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(),
            0
        );
        // Blocks begun after the adoption commit as usual.
        put(&s, 8, 10);
        assert!(s.contains(BlockId(8)));
    }

    #[test]
    fn storage_without_an_id_can_be_adopted_with_its_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlockStore::open(dir.path(), 1000, Arc::new(WorkerMetrics::default())).unwrap();
        put(&s, 5, 10);
        assert_eq!(s.adopt_cluster("c1", true).unwrap(), 0);
        assert!(s.contains(BlockId(5)));
        assert_eq!(s.cluster_id().as_deref(), Some("c1"));
    }

    #[test]
    fn absurd_sizes_are_no_space_not_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlockStore::open(dir.path(), 1000, Arc::new(WorkerMetrics::default())).unwrap();
        put(&s, 1, 500);
        for n in [u64::MAX, u64::MAX - 400, 1001, 1 << 63] {
            assert!(
                matches!(s.begin(n), Err(Error::NoSpace { .. })),
                "{n} bytes must not fit"
            );
        }
        assert!(s.contains(BlockId(1)), "a refused request evicts nothing");
        assert!(s.begin(500).is_ok());
    }
}
