//! The metastore: namespace state in RocksDB, with a bounded cache in front.
//!
//! Column families (all keys big-endian so RocksDB's order is numeric order):
//! - `inodes`:   inode id → [`InodeRecord`]
//! - `edges`:    parent id ‖ name → child id
//! - `blocks`:   no longer written (a file's blocks follow from its length and block
//!   size); still opened so that stores made by earlier versions open
//! - `mounts`:   mount id → [`MountRecord`]
//! - `meta`:     `applied_index`, `last_inode_id`, `last_mount_id` → u64;
//!   `cluster_id` → the cluster's id, made when the store is formatted
//!
//! Invariants: the only writer is [`MetaStore::apply`] (module `apply`; request
//! records in `requests`, checkpoints and installs in `snapshot`), and each apply is one
//! `WriteBatch` holding the entry's effects and its index, so a crash never leaves
//! half an entry. Apply is deterministic: it reads only the store and the entry.
//! Readers may run concurrently with apply; the cache stays coherent through a
//! generation counter (see [`MetaStore::get_inode`]).

use crate::entries::{InodeRecord, MountRecord};
use moka::sync::Cache;
use prost::Message;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, DB};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use strata_common::ids::FileId;
use strata_common::{Error, Result};

const CF_INODES: &str = "inodes";
const CF_EDGES: &str = "edges";
const CF_BLOCKS: &str = "blocks";
const CF_MOUNTS: &str = "mounts";
const CF_META: &str = "meta";
/// Ids of the files being written (incomplete), maintained by apply: what the
/// master leases to writers and expires when they vanish.
const CF_INCOMPLETE: &str = "incomplete";
/// Roots of detached subtrees (deleted or unmounted folders) whose inodes are still
/// being reclaimed, batch by batch.
const CF_DETACHED: &str = "detached";
const ALL_CFS: [&str; 8] = [
    CF_INODES,
    CF_EDGES,
    CF_BLOCKS,
    CF_MOUNTS,
    CF_META,
    CF_INCOMPLETE,
    CF_DETACHED,
    requests::CF_REQUESTS,
];

mod apply;
mod requests;
mod snapshot;
pub use requests::{MAX_RESULTS_PER_CLIENT, REQUEST_RETENTION_MS};
pub use snapshot::{prepare_install, verify_checkpoint, Prepared};

/// Memory all of the metastore's memtables may use together.
const METASTORE_MEMTABLE_BYTES: usize = 64 << 20;
/// The metastore's block cache, shared by its column families.
const METASTORE_BLOCK_CACHE_BYTES: usize = 32 << 20;

/// Most inodes one reclaim entry may remove.
pub const RECLAIM_MAX: u32 = 65_536;

const KEY_APPLIED_INDEX: &[u8] = b"applied_index";
/// Largest applied index taken as real (2^62: centuries of entries).
pub const MAX_INDEX: u64 = 1 << 62;
const KEY_LAST_INODE_ID: &[u8] = b"last_inode_id";
const KEY_LAST_MOUNT_ID: &[u8] = b"last_mount_id";
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
/// Set once a journal entry set the cluster id (see `ClusterIdEntry`).
const KEY_CLUSTER_ID_JOURNALED: &[u8] = b"cluster_id_journaled";
/// Pairs the metastore with the journal that feeds it (see `journal::log`).
const KEY_JOURNAL_PAIRING: &[u8] = b"journal_pairing";
/// Set when the cluster id was made for a store that already had a history (made
/// by a version without cluster ids): worker storage with no id then belongs to it.
const KEY_CLUSTER_ID_UPGRADED: &[u8] = b"cluster_id_upgraded";
/// Set once the incomplete-file index covers every inode (a store made before
/// the index existed is scanned once, at open).
const KEY_INCOMPLETE_INDEXED: &[u8] = b"incomplete_indexed";

/// A fresh id (a cluster's, a journal pairing's): 128 random bits, in hex.
pub fn new_random_id() -> Result<String> {
    let bytes = strata_common::ids::random_bytes::<16>()?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// One key of a [`MetaStore::dump`]: column family, key, value.
pub type DumpEntry = (String, Vec<u8>, Vec<u8>);

/// What an applied entry changed that soft state outside the store must follow.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Files removed by a delete or unmount: their cached blocks must leave the workers.
    pub removed_files: Vec<FileId>,
    /// For a load of children that took effect: the directory's `children_version`
    /// after it, which the next load of the same listing expects.
    pub children_version: Option<u64>,
    /// A detached subtree is left to reclaim (after a delete or unmount of a
    /// folder with children, or a reclaim that did not finish its subtree).
    pub more_to_reclaim: bool,
    /// The entry's request had been applied already: nothing changed, and this is
    /// the answer it got then (reply bytes, or the conflict it met).
    pub replayed: Option<Result<Vec<u8>>>,
}

/// Whether two under-store URIs name the same folder or one inside the other.
pub fn uris_overlap(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        let s = u.strip_prefix("file://").unwrap_or(u).trim_end_matches('/');
        format!("{s}/")
    };
    let (a, b) = (norm(a), norm(b));
    a.starts_with(&b) || b.starts_with(&a)
}

/// Whether an apply error is the store failing (fatal), rather than a deterministic
/// conflict between the entry and the state.
pub fn is_storage_failure(e: &Error) -> bool {
    matches!(e, Error::Internal { .. })
}

fn storage(e: rocksdb::Error) -> Error {
    Error::internal(format!("metastore: {e}"))
}

fn edge_key(parent: u64, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

fn u64_of(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::internal("metastore: corrupt u64 value"))?;
    Ok(u64::from_be_bytes(arr))
}

/// RocksDB-backed namespace state.
pub struct MetaStore {
    db: DB,
    inode_cache: Cache<u64, Arc<InodeRecord>>,
    edge_cache: Cache<(u64, String), u64>,
    generation: AtomicU64,
    mounts: RwLock<Vec<MountRecord>>,
    cluster_id: RwLock<String>,
    upgraded: std::sync::atomic::AtomicBool,
}

impl MetaStore {
    /// Opens (creating if needed) the metastore in `dir`; the cache holds up to
    /// `cache_entries` inodes and as many directory entries.
    pub fn open(dir: &Path, cache_entries: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // One memtable budget and one block cache for all column families:
        // otherwise each family has its own (two 64 MiB memtables, a 32 MiB
        // cache), and a walk or a burst of deletes over a folder of millions grows
        // the master by hundreds of MiB.
        opts.set_db_write_buffer_size(METASTORE_MEMTABLE_BYTES);
        let cache = rocksdb::Cache::new_lru_cache(METASTORE_BLOCK_CACHE_BYTES);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_block_cache(&cache);
            // Index and filter blocks count against the cache too, instead of
            // living beside it in proportion to the store's size.
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            let mut cf = Options::default();
            cf.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| {
            Error::unavailable(format!("cannot open metastore {}: {e}", dir.display()))
        })?;
        let store = MetaStore {
            db,
            inode_cache: Cache::new(cache_entries),
            edge_cache: Cache::new(cache_entries),
            generation: AtomicU64::new(0),
            mounts: RwLock::new(Vec::new()),
            cluster_id: RwLock::new(String::new()),
            upgraded: std::sync::atomic::AtomicBool::new(false),
        };
        store.ensure_root()?;
        store.ensure_incomplete_index()?;
        store.reload_after_install()?;
        Ok(store)
    }

    /// Reads what is kept in memory (cluster id, mount table) from the stored state.
    fn reload_after_install(&self) -> Result<()> {
        *self.cluster_id.write().unwrap_or_else(|p| p.into_inner()) = self.ensure_cluster_id()?;
        self.upgraded.store(
            self.get_meta(KEY_CLUSTER_ID_UPGRADED)? != 0,
            Ordering::Release,
        );
        self.load_mounts()
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        self.db.path()
    }

    /// The cluster's id, made once when the store is formatted: every block a
    /// worker caches is tagged with it through the worker's storage folder, so
    /// blocks of an earlier cluster (before a format) are never served as this one's.
    fn ensure_cluster_id(&self) -> Result<String> {
        let cf = self.cf(CF_META)?;
        if let Some(v) = self.db.get_cf(cf, KEY_CLUSTER_ID).map_err(storage)? {
            return String::from_utf8(v)
                .map_err(|_| Error::internal("metastore: corrupt cluster id"));
        }
        let id = new_random_id()?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, KEY_CLUSTER_ID, id.as_bytes());
        if self.applied_index()? > 0 {
            batch.put_cf(cf, KEY_CLUSTER_ID_UPGRADED, 1u64.to_be_bytes());
        }
        self.db.write(batch).map_err(storage)?;
        Ok(id)
    }

    /// Whether the cluster id was made for a store that already had a history: worker
    /// storage with no id then holds this cluster's blocks, and keeps them.
    pub fn adopts_unclaimed_storage(&self) -> bool {
        self.upgraded.load(Ordering::Acquire)
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> String {
        self.cluster_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The id pairing this metastore with the journal that feeds it.
    pub fn journal_pairing(&self) -> Result<Option<String>> {
        match self
            .db
            .get_cf(self.cf(CF_META)?, KEY_JOURNAL_PAIRING)
            .map_err(storage)?
        {
            Some(v) => Ok(Some(String::from_utf8(v).map_err(|_| {
                Error::internal("metastore: corrupt journal pairing id")
            })?)),
            None => Ok(None),
        }
    }

    /// Records the id pairing this metastore with its journal (synced).
    pub fn set_journal_pairing(&self, id: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, KEY_JOURNAL_PAIRING, id.as_bytes());
        let mut w = rocksdb::WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(storage)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::internal(format!("metastore: column family {name} missing")))
    }

    /// The root inode exists from the first open on, identical on every replica.
    fn ensure_root(&self) -> Result<()> {
        if self.load_inode(FileId::ROOT.0)?.is_some() {
            return Ok(());
        }
        let root = InodeRecord {
            id: FileId::ROOT.0,
            parent_id: 0,
            name: String::new(),
            is_dir: true,
            ..Default::default()
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_INODES)?,
            FileId::ROOT.0.to_be_bytes(),
            root.encode_to_vec(),
        );
        batch.put_cf(
            self.cf(CF_META)?,
            KEY_LAST_INODE_ID,
            FileId::ROOT.0.to_be_bytes(),
        );
        self.db.write(batch).map_err(storage)
    }

    /// Builds the incomplete-file index of a store made before it existed, once.
    fn ensure_incomplete_index(&self) -> Result<()> {
        if self.get_meta(KEY_INCOMPLETE_INDEXED)? != 0 {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for item in self
            .db
            .iterator_cf(self.cf(CF_INODES)?, IteratorMode::Start)
        {
            let (_, v) = item.map_err(storage)?;
            let rec = InodeRecord::decode(&*v)
                .map_err(|e| Error::internal(format!("corrupt inode: {e}")))?;
            if !rec.is_dir && !rec.complete {
                batch.put_cf(self.cf(CF_INCOMPLETE)?, rec.id.to_be_bytes(), []);
            }
            if batch.len() >= 4096 {
                self.db.write(std::mem::take(&mut batch)).map_err(storage)?;
            }
        }
        batch.put_cf(
            self.cf(CF_META)?,
            KEY_INCOMPLETE_INDEXED,
            1u64.to_be_bytes(),
        );
        self.db.write(batch).map_err(storage)
    }

    /// Roots of detached subtrees still being reclaimed, up to `limit`.
    pub fn detached_roots(&self, limit: usize) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_DETACHED)?, IteratorMode::Start)
            .take(limit)
        {
            let (k, _) = item.map_err(storage)?;
            out.push(u64_of(&k)?);
        }
        Ok(out)
    }

    /// Ids of the files being written, in id order: up to `limit` after `after`.
    pub fn incomplete_files(&self, after: u64, limit: usize) -> Result<Vec<u64>> {
        let start = after.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        if after == u64::MAX {
            return Ok(out);
        }
        for item in self.db.iterator_cf(
            self.cf(CF_INCOMPLETE)?,
            IteratorMode::From(&start, Direction::Forward),
        ) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item.map_err(storage)?;
            out.push(u64_of(&k)?);
        }
        Ok(out)
    }

    /// Reads the mount table at open; afterwards apply publishes each change itself.
    fn load_mounts(&self) -> Result<()> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_MOUNTS)?, IteratorMode::Start)
        {
            let (_, v) = item.map_err(storage)?;
            out.push(
                MountRecord::decode(&*v)
                    .map_err(|e| Error::internal(format!("corrupt mount: {e}")))?,
            );
        }
        *self.mounts.write().unwrap_or_else(|p| p.into_inner()) = out;
        Ok(())
    }

    fn get_meta(&self, key: &[u8]) -> Result<u64> {
        match self.db.get_cf(self.cf(CF_META)?, key).map_err(storage)? {
            Some(v) => u64_of(&v),
            None => Ok(0),
        }
    }

    /// Makes everything applied so far durable (syncs RocksDB's write-ahead log;
    /// applies are not synced one by one, the journal's log is).
    pub fn sync(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(storage)
    }

    /// Index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> Result<u64> {
        let applied = self.get_meta(KEY_APPLIED_INDEX)?;
        // No log reaches this far: a value past it is a damaged record, and would
        // overflow the log's index arithmetic.
        if applied > MAX_INDEX {
            return Err(Error::internal(format!(
                "metastore: corrupt applied index {applied}"
            )));
        }
        Ok(applied)
    }

    /// Largest inode id any applied entry used.
    pub fn last_inode_id(&self) -> Result<u64> {
        self.get_meta(KEY_LAST_INODE_ID)
    }

    /// Largest mount id any applied entry used.
    pub fn last_mount_id(&self) -> Result<u64> {
        self.get_meta(KEY_LAST_MOUNT_ID)
    }

    /// The mount table.
    pub fn mounts(&self) -> Vec<MountRecord> {
        self.mounts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn load_inode(&self, id: u64) -> Result<Option<InodeRecord>> {
        match self
            .db
            .get_pinned_cf(self.cf(CF_INODES)?, id.to_be_bytes())
            .map_err(storage)?
        {
            Some(v) => {
                Ok(Some(InodeRecord::decode(&*v).map_err(|e| {
                    Error::internal(format!("corrupt inode {id}: {e}"))
                })?))
            }
            None => Ok(None),
        }
    }

    /// The inode `id`, through the cache.
    ///
    /// Coherence with apply: a reader notes the generation, reads RocksDB, inserts,
    /// then re-checks the generation and drops its insert if an apply ran meanwhile.
    /// Apply bumps the generation before it invalidates, so a stale insert is removed
    /// either by the reader's re-check or by apply's invalidation.
    pub fn get_inode(&self, id: u64) -> Result<Option<Arc<InodeRecord>>> {
        if let Some(v) = self.inode_cache.get(&id) {
            return Ok(Some(v));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let Some(rec) = self.load_inode(id)? else {
            return Ok(None);
        };
        let rec = Arc::new(rec);
        self.inode_cache.insert(id, rec.clone());
        if self.generation.load(Ordering::Acquire) != generation {
            self.inode_cache.invalidate(&id);
        }
        Ok(Some(rec))
    }

    /// The child called `name` of directory `parent`, through the cache.
    pub fn get_child(&self, parent: u64, name: &str) -> Result<Option<u64>> {
        let key = (parent, name.to_string());
        if let Some(v) = self.edge_cache.get(&key) {
            return Ok(Some(v));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let found = self
            .db
            .get_pinned_cf(self.cf(CF_EDGES)?, edge_key(parent, name))
            .map_err(storage)?;
        let Some(v) = found else {
            return Ok(None);
        };
        let child = u64_of(&v)?;
        self.edge_cache.insert(key.clone(), child);
        if self.generation.load(Ordering::Acquire) != generation {
            self.edge_cache.invalidate(&key);
        }
        Ok(Some(child))
    }

    /// Up to `limit` children of `parent` whose names sort after `start_after`
    /// (from the first when `None`), in name order; and whether more follow.
    pub fn list_children_page(
        &self,
        parent: u64,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, u64)>, bool)> {
        let prefix = parent.to_be_bytes();
        let from = match start_after {
            Some(name) => edge_key(parent, name),
            None => prefix.to_vec(),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        let iter = self.db.iterator_cf(
            self.cf(CF_EDGES)?,
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(storage)?;
            if !k.starts_with(&prefix) {
                break;
            }
            if start_after.is_some() && *k == *from {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let name = String::from_utf8(k[8..].to_vec())
                .map_err(|_| Error::internal("metastore: corrupt edge name"))?;
            out.push((name, u64_of(&v)?));
        }
        Ok((out, false))
    }

    /// Children of `parent` as `(name, id)`, in name order.
    pub fn list_children(&self, parent: u64) -> Result<Vec<(String, u64)>> {
        let prefix = parent.to_be_bytes();
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_EDGES)?,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(storage)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let name = String::from_utf8(k[8..].to_vec())
                .map_err(|_| Error::internal("metastore: corrupt edge name"))?;
            out.push((name, u64_of(&v)?));
        }
        Ok(out)
    }

    /// Every key and value of every column family, in order, but the cluster id
    /// (made at format, not by apply): two stores that applied the same entries
    /// produce equal dumps.
    pub fn dump(&self) -> Result<Vec<DumpEntry>> {
        let mut out = Vec::new();
        for cf in ALL_CFS {
            for item in self.db.iterator_cf(self.cf(cf)?, IteratorMode::Start) {
                let (k, v) = item.map_err(storage)?;
                if cf == CF_META
                    && [
                        KEY_CLUSTER_ID,
                        KEY_CLUSTER_ID_UPGRADED,
                        KEY_INCOMPLETE_INDEXED,
                        KEY_JOURNAL_PAIRING,
                    ]
                    .contains(&&*k)
                {
                    continue;
                }
                out.push((cf.to_string(), k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Whether the cluster id was set by a journal entry (so every master of the
    /// group has it), rather than made by this store alone.
    pub fn cluster_id_journaled(&self) -> Result<bool> {
        Ok(self.get_meta(KEY_CLUSTER_ID_JOURNALED)? != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::{
        ClusterIdEntry, CompleteFileEntry, CreateEntry, DeleteEntry, JournalEntry,
        LoadChildrenEntry, MountEntry, Op, ReclaimEntry, RefreshFileEntry, RenameEntry,
        UnmountEntry,
    };

    fn dir(id: u64, parent: u64, name: &str, t: i64) -> InodeRecord {
        InodeRecord {
            id,
            parent_id: parent,
            name: name.into(),
            is_dir: true,
            mtime_ms: t,
            ..Default::default()
        }
    }

    fn file(id: u64, parent: u64, name: &str, bs: u64) -> InodeRecord {
        InodeRecord {
            id,
            parent_id: parent,
            name: name.into(),
            block_size: bs,
            mtime_ms: 7,
            ..Default::default()
        }
    }

    /// A history with every kind of entry, conflicts included.
    fn history() -> Vec<JournalEntry> {
        vec![
            Op::Mount(MountEntry {
                parent_id: 0,
                inode: Some(dir(1, 0, "", 0)),
                mount: Some(MountRecord {
                    mount_id: 1,
                    inode_id: 1,
                    path: "/".into(),
                    uri: "file:///u".into(),
                    read_only: false,
                    options: Default::default(),
                }),
            })
            .into(),
            Op::Create(CreateEntry {
                parent_id: 1,
                path: "/a/b".into(),
                inodes: vec![dir(2, 1, "a", 10), dir(3, 2, "b", 10)],
                expected_parent_version: None,
            })
            .into(),
            // Conflict: /a exists.
            Op::Create(CreateEntry {
                parent_id: 1,
                path: "/a".into(),
                inodes: vec![dir(4, 1, "a", 11)],
                expected_parent_version: None,
            })
            .into(),
            Op::Create(CreateEntry {
                parent_id: 3,
                path: "/a/b/f".into(),
                inodes: vec![file(5, 3, "f", 4)],
                expected_parent_version: None,
            })
            .into(),
            Op::CompleteFile(CompleteFileEntry {
                id: 5,
                path: "/a/b/f".into(),
                length: 10,
                persisted: true,
                mtime_ms: 12,
                ufs_version: "v1".into(),
            })
            .into(),
            Op::LoadChildren(LoadChildrenEntry {
                parent_id: 2,
                path: "/a".into(),
                children: vec![file(6, 2, "b", 4), file(7, 2, "u", 4)],
                expected_version: 0,
            })
            .into(),
            // Conflict: into its own subtree.
            Op::Rename(RenameEntry {
                id: 2,
                src_parent: 1,
                src_name: "a".into(),
                dst_parent: 3,
                dst_name: "x".into(),
                src_path: "/a".into(),
                dst_path: "/a/b/x".into(),
                mtime_ms: 13,
                ufs_version: None,
            })
            .into(),
            Op::Rename(RenameEntry {
                id: 5,
                src_parent: 3,
                src_name: "f".into(),
                dst_parent: 1,
                dst_name: "g".into(),
                src_path: "/a/b/f".into(),
                dst_path: "/g".into(),
                mtime_ms: 14,
                ufs_version: None,
            })
            .into(),
            Op::Mount(MountEntry {
                parent_id: 1,
                inode: Some(InodeRecord {
                    mount_id: 2,
                    persisted: true,
                    ..dir(8, 1, "m", 15)
                }),
                mount: Some(MountRecord {
                    mount_id: 2,
                    inode_id: 8,
                    path: "/m".into(),
                    uri: "file:///v".into(),
                    read_only: false,
                    options: Default::default(),
                }),
            })
            .into(),
            // Conflict: not empty.
            Op::Delete(DeleteEntry {
                parent_id: 1,
                name: "a".into(),
                id: 2,
                path: "/a".into(),
                recursive: false,
                mtime_ms: 16,
            })
            .into(),
            Op::Delete(DeleteEntry {
                parent_id: 1,
                name: "a".into(),
                id: 2,
                path: "/a".into(),
                recursive: true,
                mtime_ms: 17,
            })
            .into(),
            Op::Unmount(UnmountEntry {
                mount_id: 2,
                path: "/m".into(),
            })
            .into(),
            // Conflict: no limit.
            Op::Reclaim(ReclaimEntry { root: 2, limit: 0 }).into(),
            // The deleted /a, in two steps.
            Op::Reclaim(ReclaimEntry { root: 2, limit: 2 }).into(),
            Op::Reclaim(ReclaimEntry { root: 2, limit: 2 }).into(),
        ]
    }

    #[test]
    fn apply_is_deterministic() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s1 = MetaStore::open(d1.path(), 100).unwrap();
        let s2 = MetaStore::open(d2.path(), 3).unwrap();
        let mut results = Vec::new();
        for (i, e) in history().iter().enumerate() {
            let r1 = s1.apply(i as u64 + 1, e);
            let r2 = s2.apply(i as u64 + 1, e);
            assert_eq!(r1, r2);
            results.push(r1.is_ok());
        }
        assert_eq!(
            results,
            [
                true, true, false, true, true, true, false, true, true, false, true, true, false,
                true, true
            ]
        );
        let dump = s1.dump().unwrap();
        assert_eq!(dump, s2.dump().unwrap());
        assert_eq!(s1.applied_index().unwrap(), 15);
        // The deleted /a (with /a/b and /a/u) is reclaimed entirely.
        for id in [2, 3, 7] {
            assert!(s1.get_inode(id).unwrap().is_none(), "inode {id}");
        }
        assert!(s1.detached_roots(10).unwrap().is_empty());
        assert_eq!(s1.last_inode_id().unwrap(), 8);
        // What is left: / (mounted) and /g (length 10, three blocks of 4).
        assert_eq!(s1.list_children(1).unwrap(), [("g".to_string(), 5)]);
        let g = s1.get_inode(5).unwrap().unwrap();
        assert_eq!(
            (g.length, g.complete, g.persisted, g.parent_id),
            (10, true, true, 1)
        );
        // Block lengths follow from the file's record: nothing per block is written,
        // so a file's size in blocks costs no keys.
        assert_eq!(dump.iter().filter(|(cf, _, _)| cf == CF_BLOCKS).count(), 0);
        assert_eq!(s1.mounts().len(), 1);
    }

    #[test]
    fn conflicts_write_nothing_but_the_index() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 100).unwrap();
        let h = history();
        s.apply(1, &h[1]).unwrap();
        let before = s.dump().unwrap();
        let err = s.apply(2, &h[2]).unwrap_err();
        assert_eq!(err, Error::AlreadyExists { path: "/a".into() });
        let after = s.dump().unwrap();
        let strip = |d: Vec<DumpEntry>| {
            d.into_iter()
                .filter(|(cf, k, _)| !(cf == CF_META && k == KEY_APPLIED_INDEX))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(before), strip(after));
        assert_eq!(s.applied_index().unwrap(), 2);
    }

    #[test]
    fn a_mount_id_in_use_is_refused_and_the_first_journaled_cluster_id_stays() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 100).unwrap();
        let h = history();
        s.apply(1, &h[0]).unwrap();
        s.apply(2, &h[1]).unwrap();
        let mount = |path: &str, inode: u64, mount_id: u64| -> JournalEntry {
            Op::Mount(MountEntry {
                parent_id: 1,
                inode: Some(dir(inode, 1, &path[1..], 0)),
                mount: Some(MountRecord {
                    mount_id,
                    inode_id: inode,
                    path: path.into(),
                    uri: format!("file:///{inode}"),
                    read_only: false,
                    options: Default::default(),
                }),
            })
            .into()
        };
        let err = s.apply(3, &mount("/m", 20, 1)).unwrap_err();
        assert!(
            err.to_string().contains("mount id 1 is already in use"),
            "{err}"
        );
        s.apply(4, &mount("/m", 20, 2)).unwrap();
        assert_eq!(s.mounts().len(), 2);
        // Mounts that raced past their handlers meet here, in log order: one
        // whose folder overlaps a mount's, or one inside a mount, is refused.
        let raced = |path: &str, parent: u64, inode: u64, id: u64, uri: &str| -> JournalEntry {
            Op::Mount(MountEntry {
                parent_id: parent,
                inode: Some(dir(inode, parent, path.rsplit('/').next().unwrap(), 0)),
                mount: Some(MountRecord {
                    mount_id: id,
                    inode_id: inode,
                    path: path.into(),
                    uri: uri.into(),
                    read_only: false,
                    options: Default::default(),
                }),
            })
            .into()
        };
        let err = s.apply(5, &raced("/o", 1, 21, 3, "/20/sub/")).unwrap_err();
        assert!(err.to_string().contains("overlaps the mount /m"), "{err}");
        let err = s
            .apply(6, &raced("/m/n", 20, 22, 4, "file:///elsewhere"))
            .unwrap_err();
        assert!(err.to_string().contains("cannot nest"), "{err}");
        assert_eq!(s.mounts().len(), 2);

        let first = s.cluster_id();
        assert!(!s.cluster_id_journaled().unwrap());
        let set =
            |id: &str| -> JournalEntry { Op::ClusterId(ClusterIdEntry { id: id.into() }).into() };
        s.apply(7, &set("c-one")).unwrap();
        assert_ne!(s.cluster_id(), first);
        assert_eq!(s.cluster_id(), "c-one");
        s.apply(8, &set("c-two")).unwrap();
        assert_eq!(s.cluster_id(), "c-one", "the first journaled id stays");
        assert!(s.apply(9, &set("")).is_err());
        drop(s);
        let s = MetaStore::open(d.path(), 100).unwrap();
        assert_eq!(s.cluster_id(), "c-one");
    }

    #[test]
    fn state_survives_reopen_and_cache_follows_apply() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = MetaStore::open(d.path(), 100).unwrap();
            for (i, e) in history().iter().take(5).enumerate() {
                let _ = s.apply(i as u64 + 1, e);
            }
            // Warm the cache, then change the inode and check the cache follows.
            assert!(s.get_inode(5).unwrap().unwrap().complete);
            assert_eq!(s.get_child(3, "f").unwrap(), Some(5));
            s.apply(6, &history()[7]).unwrap();
            assert_eq!(s.get_child(3, "f").unwrap(), None);
            assert_eq!(s.get_inode(5).unwrap().unwrap().name, "g");
        }
        let s = MetaStore::open(d.path(), 100).unwrap();
        assert_eq!(s.applied_index().unwrap(), 6);
        assert_eq!(s.get_child(1, "g").unwrap(), Some(5));
        assert_eq!(s.mounts()[0].uri, "file:///u");
        assert_eq!(s.get_inode(5).unwrap().unwrap().ufs_version, "v1");
    }

    #[test]
    fn a_refresh_replaces_only_a_complete_persisted_file_with_a_new_inode() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 100).unwrap();
        // Through the rename of file 5 (complete, persisted) to /g; file 7 is /a/u,
        // loaded incomplete.
        for (i, e) in history().iter().take(8).enumerate() {
            let _ = s.apply(i as u64 + 1, e);
        }
        let fresh = |id: u64, parent: u64, name: &str| InodeRecord {
            length: 3,
            complete: true,
            persisted: true,
            ufs_version: "v2".into(),
            ..file(id, parent, name, 4)
        };
        let refresh = |old_id: u64, record: InodeRecord| -> JournalEntry {
            Op::RefreshFile(RefreshFileEntry {
                old_id,
                path: format!("/{}", record.name),
                record: Some(record),
            })
            .into()
        };
        let version = s.get_inode(1).unwrap().unwrap().children_version;
        // Another inode at the name, an incomplete file, a folder, a taken id.
        assert!(matches!(
            s.apply(9, &refresh(6, fresh(20, 1, "g"))),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            s.apply(10, &refresh(7, fresh(20, 2, "u"))),
            Err(Error::NotPermitted { .. })
        ));
        assert!(matches!(
            s.apply(11, &refresh(3, fresh(20, 2, "b"))),
            Err(Error::NotPermitted { .. })
        ));
        assert!(s.apply(12, &refresh(5, fresh(7, 1, "g"))).is_err());
        assert_eq!(s.get_child(1, "g").unwrap(), Some(5));

        let applied = s.apply(13, &refresh(5, fresh(20, 1, "g"))).unwrap();
        assert_eq!(applied.removed_files, [FileId(5)]);
        assert_eq!(s.get_child(1, "g").unwrap(), Some(20));
        assert!(s.get_inode(5).unwrap().is_none());
        let g = s.get_inode(20).unwrap().unwrap();
        assert_eq!((g.length, g.ufs_version.as_str()), (3, "v2"));
        // The folder's children are the same names: a load listed before still fits.
        assert_eq!(s.get_inode(1).unwrap().unwrap().children_version, version);
        assert_eq!(s.last_inode_id().unwrap(), 20);
    }

    #[test]
    fn children_list_in_pages_after_a_name() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 10).unwrap();
        let names = ["a", "a0", "ab", "b", "ba"];
        let inodes = names
            .iter()
            .enumerate()
            .map(|(i, n)| file(10 + i as u64, 1, n, 4096))
            .collect();
        s.apply(
            1,
            &Op::LoadChildren(LoadChildrenEntry {
                parent_id: 1,
                path: "/".into(),
                children: inodes,
                expected_version: 0,
            })
            .into(),
        )
        .unwrap();
        let page = |after: Option<&str>, n| {
            let (kids, more) = s.list_children_page(1, after, n).unwrap();
            (kids.into_iter().map(|(n, _)| n).collect::<Vec<_>>(), more)
        };
        assert_eq!(page(None, 2), (vec!["a".into(), "a0".into()], true));
        // A name that prefixes others is passed exactly, not with them.
        assert_eq!(page(Some("a"), 2), (vec!["a0".into(), "ab".into()], true));
        assert_eq!(page(Some("ab"), 2), (vec!["b".into(), "ba".into()], false));
        assert_eq!(page(Some("ba"), 2), (vec![], false));
        // A cursor that names no child still starts after it.
        assert_eq!(
            page(Some("aa"), 5),
            (vec!["ab".into(), "b".into(), "ba".into()], false)
        );
        assert_eq!(page(None, 5).0.len(), 5);
        assert!(!page(None, 5).1, "exactly a page: nothing more");
        // Another directory's children never leak into the page.
        assert!(s.list_children_page(2, None, 10).unwrap().0.is_empty());
    }

    #[test]
    fn the_cluster_id_is_made_once_per_store() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = MetaStore::open(d1.path(), 10)
            .unwrap()
            .cluster_id()
            .to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert_eq!(MetaStore::open(d1.path(), 10).unwrap().cluster_id(), id);
        // Another store (a formatted one) is another cluster.
        assert_ne!(MetaStore::open(d2.path(), 10).unwrap().cluster_id(), id);
        assert!(!MetaStore::open(d1.path(), 10)
            .unwrap()
            .adopts_unclaimed_storage());

        // A store with a history and no id (made before cluster ids): its id is
        // made on open, and storage with no id is taken to be this cluster's.
        {
            let s = MetaStore::open(d1.path(), 10).unwrap();
            s.apply(1, &history()[0]).unwrap();
            s.db.delete_cf(s.cf(CF_META).unwrap(), KEY_CLUSTER_ID)
                .unwrap();
        }
        let s = MetaStore::open(d1.path(), 10).unwrap();
        assert_ne!(s.cluster_id(), id);
        assert!(s.adopts_unclaimed_storage());
        let again = s.cluster_id().to_string();
        drop(s);
        let s = MetaStore::open(d1.path(), 10).unwrap();
        assert_eq!(s.cluster_id(), again);
        assert!(s.adopts_unclaimed_storage());
    }

    /// A deleted folder of nested folders goes in bounded reclaim steps: each
    /// removes at most its limit, nothing of it is reachable meanwhile, and the
    /// store ends as if the folder had never been.
    #[test]
    fn a_deleted_tree_is_reclaimed_in_bounded_steps() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 10).unwrap();
        let empty = s.dump().unwrap();
        let mut index = 0;
        let mut apply = |op: Op| {
            index += 1;
            s.apply(index, &op.into())
        };
        // /t with 3 folders of 5 files each, and 2 files of its own: 20 files,
        // 4 folders.
        let mut next = 2;
        let mut id = || {
            next += 1;
            next
        };
        apply(Op::Create(CreateEntry {
            parent_id: 1,
            path: "/t".into(),
            inodes: vec![dir(2, 1, "t", 1)],
            expected_parent_version: None,
        }))
        .unwrap();
        let mut files = Vec::new();
        for i in 0..3 {
            let sub = id();
            let name = format!("s{i}");
            apply(Op::Create(CreateEntry {
                parent_id: 2,
                path: format!("/t/{name}"),
                inodes: vec![dir(sub, 2, &name, 1)],
                expected_parent_version: None,
            }))
            .unwrap();
            for j in 0..5 {
                let f = id();
                let fname = format!("f{j}");
                apply(Op::Create(CreateEntry {
                    parent_id: sub,
                    path: format!("/t/{name}/{fname}"),
                    inodes: vec![file(f, sub, &fname, 4096)],
                    expected_parent_version: None,
                }))
                .unwrap();
                files.push(FileId(f));
            }
        }
        for j in 0..2 {
            let f = id();
            let fname = format!("g{j}");
            apply(Op::Create(CreateEntry {
                parent_id: 2,
                path: format!("/t/{fname}"),
                inodes: vec![file(f, 2, &fname, 4096)],
                expected_parent_version: None,
            }))
            .unwrap();
            files.push(FileId(f));
        }
        let applied = apply(Op::Delete(DeleteEntry {
            parent_id: 1,
            name: "t".into(),
            id: 2,
            path: "/t".into(),
            recursive: true,
            mtime_ms: 2,
        }))
        .unwrap();
        assert!(applied.more_to_reclaim && applied.removed_files.is_empty());
        assert_eq!(s.get_child(1, "t").unwrap(), None);
        // Out of range limits are refused and change nothing.
        for limit in [0, RECLAIM_MAX + 1] {
            assert!(matches!(
                apply(Op::Reclaim(ReclaimEntry { root: 2, limit })),
                Err(Error::InvalidArgument { .. })
            ));
        }
        let mut removed = Vec::new();
        let mut steps = 0;
        loop {
            let before = s.dump().unwrap().len();
            let applied = apply(Op::Reclaim(ReclaimEntry { root: 2, limit: 3 })).unwrap();
            steps += 1;
            assert!(applied.removed_files.len() <= 3);
            // Each inode is at most an inode key, an edge key, an index key.
            assert!(before - s.dump().unwrap().len() <= 3 * 3);
            removed.extend(applied.removed_files);
            if !applied.more_to_reclaim {
                break;
            }
            assert!(steps < 100, "reclaim makes no progress");
        }
        // 21 inodes, 3 a step.
        assert_eq!(steps, 7);
        removed.sort();
        assert_eq!(removed, files);
        // Replayed after the end: nothing to do.
        let again = apply(Op::Reclaim(ReclaimEntry { root: 2, limit: 3 })).unwrap();
        assert_eq!(again, Applied::default());
        let strip = |d: Vec<DumpEntry>| -> Vec<DumpEntry> {
            // The root's mtime and children version moved; everything else is as
            // before the folder existed.
            d.into_iter()
                .filter(|(cf, k, _)| {
                    !(cf == CF_META || (cf == CF_INODES && *k == FileId::ROOT.0.to_be_bytes()))
                })
                .collect()
        };
        assert_eq!(strip(s.dump().unwrap()), strip(empty));
    }

    /// Each reclaim batch goes on from where the one before stopped: it passes
    /// over no deletion marker left by earlier batches (RocksDB's own count of
    /// deletes skipped stays flat from the first batch to the last), so a folder
    /// of millions costs every batch the same.
    #[test]
    fn reclaim_batches_go_on_from_where_the_last_stopped() {
        use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 10).unwrap();
        let mut index = 0;
        let mut apply = |op: Op| {
            index += 1;
            s.apply(index, &op.into())
        };
        apply(Op::Create(CreateEntry {
            parent_id: 1,
            path: "/t".into(),
            inodes: vec![dir(2, 1, "t", 1)],
            expected_parent_version: None,
        }))
        .unwrap();
        let files: Vec<InodeRecord> = (0..3000)
            .map(|i| InodeRecord {
                complete: true,
                ..file(10 + i, 2, &format!("f{i:05}"), 4096)
            })
            .collect();
        apply(Op::LoadChildren(LoadChildrenEntry {
            parent_id: 2,
            path: "/t".into(),
            children: files,
            expected_version: 0,
        }))
        .unwrap();
        apply(Op::Delete(DeleteEntry {
            parent_id: 1,
            name: "t".into(),
            id: 2,
            path: "/t".into(),
            recursive: true,
            mtime_ms: 2,
        }))
        .unwrap();
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut ctx = PerfContext::default();
        let mut skipped = Vec::new();
        loop {
            ctx.reset();
            let applied = apply(Op::Reclaim(ReclaimEntry {
                root: 2,
                limit: 300,
            }))
            .unwrap();
            skipped.push(ctx.metric(PerfMetric::InternalDeleteSkippedCount));
            if !applied.more_to_reclaim {
                break;
            }
        }
        set_perf_stats(PerfStatsLevel::Disable);
        assert_eq!(skipped.len(), 11, "3,001 inodes, 300 a batch");
        let (first, last) = (skipped[0], skipped[skipped.len() - 2]);
        assert!(
            last <= first + 10,
            "batches pass over earlier deletions: {skipped:?}"
        );
    }

    /// Nothing can be added to, moved out of, or deleted inside a detached subtree.
    #[test]
    fn a_detached_subtree_takes_no_changes() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 10).unwrap();
        let mut index = 0;
        let mut apply = |op: Op| {
            index += 1;
            s.apply(index, &op.into())
        };
        apply(Op::Create(CreateEntry {
            parent_id: 1,
            path: "/t/u/f".into(),
            inodes: vec![dir(2, 1, "t", 1), dir(3, 2, "u", 1), file(4, 3, "f", 4096)],
            expected_parent_version: None,
        }))
        .unwrap();
        apply(Op::Delete(DeleteEntry {
            parent_id: 1,
            name: "t".into(),
            id: 2,
            path: "/t".into(),
            recursive: true,
            mtime_ms: 2,
        }))
        .unwrap();
        let not_found = |r: Result<Applied>| matches!(r, Err(Error::NotFound { .. }));
        assert!(not_found(apply(Op::Create(CreateEntry {
            parent_id: 3,
            path: "/t/u/g".into(),
            inodes: vec![file(5, 3, "g", 4096)],
            expected_parent_version: None,
        }))));
        assert!(not_found(apply(Op::LoadChildren(LoadChildrenEntry {
            parent_id: 3,
            path: "/t/u".into(),
            children: vec![file(6, 3, "h", 4096)],
            expected_version: 1,
        }))));
        assert!(not_found(apply(Op::Rename(RenameEntry {
            id: 4,
            src_parent: 3,
            src_name: "f".into(),
            dst_parent: 1,
            dst_name: "f".into(),
            src_path: "/t/u/f".into(),
            dst_path: "/f".into(),
            mtime_ms: 3,
            ufs_version: None,
        }))));
        assert!(not_found(apply(Op::Delete(DeleteEntry {
            parent_id: 3,
            name: "f".into(),
            id: 4,
            path: "/t/u/f".into(),
            recursive: false,
            mtime_ms: 3,
        }))));
        assert!(s.get_inode(5).unwrap().is_none() && s.get_inode(6).unwrap().is_none());
        assert_eq!(s.get_child(1, "f").unwrap(), None);
    }

    #[test]
    fn the_incomplete_index_follows_create_complete_and_delete() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 10).unwrap();
        let create = |path: &str, parent: u64, inodes: Vec<InodeRecord>| {
            Op::Create(CreateEntry {
                parent_id: parent,
                path: path.into(),
                inodes,
                expected_parent_version: None,
            })
            .into()
        };
        s.apply(1, &create("/d", 1, vec![dir(2, 1, "d", 1)]))
            .unwrap();
        for (i, id) in [3u64, 4, 5].into_iter().enumerate() {
            let name = format!("f{id}");
            s.apply(
                2 + i as u64,
                &create(&format!("/d/{name}"), 2, vec![file(id, 2, &name, 4096)]),
            )
            .unwrap();
        }
        assert_eq!(s.incomplete_files(0, 10).unwrap(), [3, 4, 5]);
        assert_eq!(s.incomplete_files(3, 1).unwrap(), [4]);
        assert!(s.incomplete_files(u64::MAX, 10).unwrap().is_empty());
        s.apply(
            5,
            &Op::CompleteFile(CompleteFileEntry {
                id: 4,
                path: "/d/f4".into(),
                length: 1,
                persisted: false,
                mtime_ms: 2,
                ufs_version: String::new(),
            })
            .into(),
        )
        .unwrap();
        assert_eq!(s.incomplete_files(0, 10).unwrap(), [3, 5]);
        // A conflicting entry changes nothing.
        let conflict = s.apply(6, &create("/d", 1, vec![dir(9, 1, "d", 1)]));
        assert!(conflict.is_err());
        assert_eq!(s.incomplete_files(0, 10).unwrap(), [3, 5]);
        // A recursive delete detaches the folder; reclaiming it takes the files
        // being written below it out.
        let applied = s
            .apply(
                7,
                &Op::Delete(DeleteEntry {
                    parent_id: 1,
                    name: "d".into(),
                    id: 2,
                    path: "/d".into(),
                    recursive: true,
                    mtime_ms: 3,
                })
                .into(),
            )
            .unwrap();
        assert!(applied.more_to_reclaim);
        assert_eq!(s.detached_roots(10).unwrap(), [2]);
        let reclaim = |limit| Op::Reclaim(ReclaimEntry { root: 2, limit }).into();
        let applied = s.apply(8, &reclaim(100)).unwrap();
        assert!(!applied.more_to_reclaim);
        assert_eq!(applied.removed_files, [FileId(3), FileId(4), FileId(5)]);
        assert!(s.incomplete_files(0, 10).unwrap().is_empty());
        assert!(s.detached_roots(10).unwrap().is_empty());

        // A store from before the index: built once at open, from the inodes.
        s.apply(9, &create("/g", 1, vec![file(10, 1, "g", 4096)]))
            .unwrap();
        s.db.delete_cf(s.cf(CF_INCOMPLETE).unwrap(), 10u64.to_be_bytes())
            .unwrap();
        s.db.delete_cf(s.cf(CF_META).unwrap(), KEY_INCOMPLETE_INDEXED)
            .unwrap();
        drop(s);
        let s = MetaStore::open(d.path(), 10).unwrap();
        assert_eq!(s.incomplete_files(0, 10).unwrap(), [10]);
    }

    #[test]
    fn a_file_of_millions_of_blocks_costs_no_keys() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 10).unwrap();
        let huge = file(2, 1, "huge", 4096);
        s.apply(
            1,
            &Op::Create(CreateEntry {
                parent_id: 1,
                path: "/huge".into(),
                inodes: vec![huge],
                expected_parent_version: None,
            })
            .into(),
        )
        .unwrap();
        let before = s.dump().unwrap().len();
        // 2^24 blocks of 4 KiB: the most one file may have.
        let complete = |length: u64| -> JournalEntry {
            Op::CompleteFile(CompleteFileEntry {
                id: 2,
                path: "/huge".into(),
                length,
                persisted: false,
                mtime_ms: 1,
                ufs_version: String::new(),
            })
            .into()
        };
        assert!(matches!(
            s.apply(2, &complete((1 << 24) * 4096 + 1)),
            Err(Error::InvalidArgument { .. })
        ));
        s.apply(3, &complete((1 << 24) * 4096)).unwrap();
        // The only key that changes is the file's mark as being written.
        assert_eq!(s.dump().unwrap().len(), before - 1);
        assert!(s.incomplete_files(0, 10).unwrap().is_empty());
        s.apply(
            4,
            &Op::Delete(DeleteEntry {
                parent_id: 1,
                name: "huge".into(),
                id: 2,
                path: "/huge".into(),
                recursive: false,
                mtime_ms: 2,
            })
            .into(),
        )
        .unwrap();
    }
}
