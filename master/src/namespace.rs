//! The namespace handlers: each validates a request against the current state,
//! performs its under-store side effect (if any), and proposes one journal entry.
//! They never write the metastore themselves: only apply does.
//!
//! Under-store consistency: a lookup of a path that is missing from the namespace
//! but lies under a mount asks the under-store, and loads what it finds (as a
//! journal entry like any other). Listing a directory under a mount loads the
//! children the under-store has and the namespace lacks.
//!
//! Layout: this module holds the [`Namespace`] itself, leadership, status and
//! listing, the checks of blocks workers report, `free` and the reclaim of
//! deleted subtrees. Path resolution and loading are in `resolve`, mutations of
//! files and folders in `mutations`, mount points in `mounts`, folder metadata
//! sync in `sync`, and the idempotency of retried requests in `requests`.

use crate::entries::{InodeRecord, MountRecord, Op, ReclaimEntry};
use crate::journal::Journal;
use crate::lease::Leases;
use crate::registry::Registry;
use crate::store::{Applied, MetaStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use strata_common::ids::{block_count, BlockId, FileId};
use strata_common::types::{BlockLocation, FileBlocks, FileInfo, SyncInterval, UfsFingerprint};
use strata_common::{Error, Result, StrataPath};
use strata_ufs::{StoreCache, UnderStore};

mod mounts;
mod mutations;
mod requests;
mod resolve;
mod sync;

/// Looks at the under-store for one request at most this many times while
/// concurrent changes keep invalidating what it saw.
const SYNC_ATTEMPTS: usize = 3;

/// Most children loaded from the under-store by one journal entry: a folder of a
/// million files loads as many bounded entries, not one huge write.
const LOAD_BATCH: usize = 4096;

/// Entries of one listing page when the client names no limit, and the most it may.
pub const LIST_PAGE_DEFAULT: usize = 1000;
/// The largest listing page (about 1 MiB of entries on the wire).
pub const LIST_PAGE_MAX: usize = 10_000;
/// Inodes one reclaim entry removes from a deleted folder's subtree.
const RECLAIM_BATCH: u32 = 1024;
/// Files whose cached blocks `free` drops at a time.
const FREE_BATCH: usize = 4096;
/// Entries of a folder read at a time by a walk of a subtree.
const WALK_PAGE: usize = 1024;
/// Most files looked at before a folder gone from the under-store is dropped
/// from the namespace by metadata sync (a bigger one is kept).
const SYNC_DROP_WALK_MAX: usize = 100_000;

/// Sync times kept in memory (see `Namespace::synced`).
const SYNC_TIMES_KEPT: u64 = 262_144;

/// Most files one lease renewal may name.
pub const RENEW_MAX_FILES: usize = 10_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Dependencies of a [`Namespace`].
pub struct NamespaceDeps {
    /// The metastore (read side).
    pub store: Arc<MetaStore>,
    /// Where entries go.
    pub journal: Arc<dyn Journal>,
    /// Block locations.
    pub registry: Arc<Registry>,
    /// Block size given to files found in an under-store.
    pub default_block_size: u64,
    /// Smallest and largest block size a client may ask for.
    pub block_size_range: std::ops::RangeInclusive<u64>,
    /// Where mutations stop after their under-store side effect, when armed.
    pub pause_after_under_store: Option<Arc<crate::oplock::PausePoint>>,
    /// How long a writer's lease on its incomplete file lasts unless renewed.
    pub write_lease: std::time::Duration,
    /// How stale a path under a mount may grow when neither the request nor the
    /// mount names an interval.
    pub sync_interval: SyncInterval,
}

/// One page of a listing.
pub struct ListPage {
    /// Entries in name order.
    pub entries: Vec<FileInfo>,
    /// Whether more entries follow.
    pub more: bool,
    /// The last name the page covered: the next page starts after it.
    pub cursor: String,
}

/// The namespace service logic.
pub struct Namespace {
    store: Arc<MetaStore>,
    journal: Arc<dyn Journal>,
    registry: Arc<Registry>,
    default_block_size: u64,
    block_size_range: std::ops::RangeInclusive<u64>,
    pause_after_under_store: Option<Arc<crate::oplock::PausePoint>>,
    locks: crate::oplock::PathLocks,
    leases: Leases,
    reclaim_wakeup: tokio::sync::Notify,
    next_inode: AtomicU64,
    next_mount: AtomicU64,
    stores: StoreCache,
    sync_default: SyncInterval,
    /// When each inode's status, and each folder's children, last matched the
    /// under-store (bounded: one evicted is merely compared again).
    synced: moka::sync::Cache<(u64, sync::Synced), Instant>,
}

impl Namespace {
    /// A namespace over the store's current state.
    pub fn new(deps: NamespaceDeps) -> Result<Self> {
        let leases = Leases::new(deps.write_lease);
        let ns = Namespace {
            store: deps.store,
            journal: deps.journal,
            registry: deps.registry,
            default_block_size: deps.default_block_size,
            block_size_range: deps.block_size_range,
            pause_after_under_store: deps.pause_after_under_store,
            locks: crate::oplock::PathLocks::default(),
            leases,
            reclaim_wakeup: tokio::sync::Notify::new(),
            next_inode: AtomicU64::new(1),
            next_mount: AtomicU64::new(1),
            stores: StoreCache::default(),
            sync_default: deps.sync_interval,
            synced: moka::sync::Cache::new(SYNC_TIMES_KEPT),
        };
        ns.take_leadership()?;
        Ok(ns)
    }

    /// Journals this master's cluster id unless an entry did already, so that
    /// every master of the group (and every worker) has the same one. Call when
    /// taking the lead, before workers are served.
    pub async fn journal_cluster_id(&self) -> Result<()> {
        if self.store.cluster_id_journaled()? {
            return Ok(());
        }
        let id = self.store.cluster_id();
        self.propose(Op::ClusterId(crate::entries::ClusterIdEntry { id }))
            .await?;
        Ok(())
    }

    /// Rebuilds what this master derives from the applied state, for a term in
    /// which it leads (call once every entry of earlier terms is applied): the next
    /// inode and mount ids past every id any master used, a full lease for every
    /// file being written (its writer may have been renewing with another master),
    /// an empty worker registry (workers register again), and no sync times
    /// (every path under a mount is compared with its under-store again).
    pub fn take_leadership(&self) -> Result<()> {
        self.registry.forget_all();
        // Another leader may have seen (or left) changes in the under-stores
        // meanwhile: every path is compared again.
        self.synced.invalidate_all();
        self.next_inode
            .fetch_max(self.store.last_inode_id()? + 1, Ordering::AcqRel);
        self.next_mount
            .fetch_max(self.store.last_mount_id()? + 1, Ordering::AcqRel);
        let now = Instant::now();
        let mut after = 0;
        loop {
            let ids = self.store.incomplete_files(after, 4096)?;
            let Some(&last) = ids.last() else { break };
            for id in ids {
                self.leases.grant(id, now);
            }
            after = last;
        }
        Ok(())
    }

    fn new_id(&self) -> u64 {
        self.next_inode.fetch_add(1, Ordering::Relaxed)
    }

    /// Between a mutation's under-store side effect and its journal entry, and
    /// between a sync's listing of a page and what it does with it.
    async fn after_under_store(&self) {
        if let Some(p) = &self.pause_after_under_store {
            p.pass().await;
        }
    }

    async fn propose(&self, op: Op) -> Result<Applied> {
        self.journal.propose(op.into()).await
    }

    /// Before a read of the namespace: see `Journal::read_barrier`.
    pub async fn read_barrier(&self) -> Result<()> {
        self.journal.read_barrier().await
    }

    fn under_store(&self, mount: &MountRecord) -> Result<Arc<dyn UnderStore>> {
        self.stores.get(&mount.uri, &mount.options)
    }

    /// The cluster's id (see `MetaStore::cluster_id`).
    pub fn cluster_id(&self) -> String {
        self.store.cluster_id()
    }

    /// Whether worker storage with no cluster id keeps its blocks when it adopts
    /// this cluster (see `MetaStore::adopts_unclaimed_storage`).
    pub fn adopts_unclaimed_storage(&self) -> bool {
        self.store.adopts_unclaimed_storage()
    }

    /// Whether a worker may hold block `b` with `length` bytes: its file exists and
    /// the block fits it (a complete file's block has exactly the length the file's
    /// record implies; a block of a file being written is at most one block size).
    pub fn block_is_valid(&self, b: BlockId, length: u64) -> bool {
        let Ok(Some(rec)) = self.store.get_inode(b.file().0) else {
            return false;
        };
        if rec.is_dir || length == 0 || rec.block_size == 0 {
            return false;
        }
        if !rec.complete {
            return length <= rec.block_size;
        }
        expected_block_length(&rec, b.index()) == Some(length)
    }

    /// Whether a block cut from a write at `block_size` may be block `b`: only when
    /// that is the file's block size.
    pub fn written_at_block_size(&self, b: BlockId, block_size: u64) -> Result<()> {
        match self.store.get_inode(b.file().0)? {
            Some(rec) if rec.block_size != block_size => Err(Error::invalid_argument(
                "block_size",
                format!(
                    "block {b} was cut at {block_size} bytes; its file's block size is {}",
                    rec.block_size
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Whether a block read through from the under-store copy `fingerprint` may be
    /// recorded as block `b`: the file's record must still name that very copy.
    pub fn read_through_is_current(&self, b: BlockId, fingerprint: &UfsFingerprint) -> Result<()> {
        let rec = self
            .store
            .get_inode(b.file().0)?
            .ok_or_else(|| Error::NotFound {
                path: format!("file id {} of block {b}", b.file()),
            })?;
        let recorded = recorded_fingerprint(&rec);
        let mismatch = if rec.complete && rec.persisted {
            recorded.mismatch(fingerprint)
        } else {
            Some("the file has no under-store copy".into())
        };
        match mismatch {
            None => Ok(()),
            Some(reason) => Err(Error::UfsChanged {
                path: self
                    .path_of(rec.id)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|_| format!("file id {}", rec.id)),
                reason,
            }),
        }
    }

    /// Status of `path`, compared with the under-store first when `sync` (else
    /// the path's mount, else the master's default) says so.
    pub async fn get_status(
        &self,
        path: &StrataPath,
        sync: Option<SyncInterval>,
    ) -> Result<FileInfo> {
        let rec = self.lookup_synced(path, sync).await?;
        self.info(path.clone(), &rec)
    }

    /// [`Self::lookup_unlocked`], then [`Self::sync_found`].
    async fn lookup_synced(
        &self,
        path: &StrataPath,
        sync: Option<SyncInterval>,
    ) -> Result<Arc<InodeRecord>> {
        let rec = self.lookup_unlocked(path).await?;
        self.sync_found(path, rec, sync)
            .await?
            .ok_or_else(|| Error::NotFound {
                path: path.to_string(),
            })
    }

    /// One page of a directory's entries (or the file itself), in name order:
    /// up to `limit` entries after `start_after`. The under-store is compared on
    /// the first page only, when `sync` (else the mount's, else the master's
    /// interval) says so.
    pub async fn list_page(
        &self,
        path: &StrataPath,
        start_after: Option<&str>,
        limit: usize,
        sync: Option<SyncInterval>,
    ) -> Result<ListPage> {
        let limit = limit.clamp(1, LIST_PAGE_MAX);
        let rec = match start_after {
            None => self.lookup_synced(path, sync).await?,
            Some(_) => self.lookup_unlocked(path).await?,
        };
        if !rec.is_dir {
            let entries = match start_after {
                None => vec![self.info(path.clone(), &rec)?],
                Some(_) => Vec::new(),
            };
            return Ok(ListPage {
                entries,
                more: false,
                cursor: String::new(),
            });
        }
        if start_after.is_none() {
            self.sync_listing(path, &rec, sync).await?;
        }
        let (children, more) = self.store.list_children_page(rec.id, start_after, limit)?;
        let cursor = children.last().map(|(n, _)| n.clone()).unwrap_or_default();
        let mut entries = Vec::with_capacity(children.len());
        for (name, id) in children {
            // Removed between the two reads: skipped, the cursor still moves on.
            if let Some(child) = self.store.get_inode(id)? {
                entries.push(self.info(path.join(&name)?, &child)?);
            }
        }
        Ok(ListPage {
            entries,
            more,
            cursor,
        })
    }

    /// A complete file's blocks, their locations, and its under-store copy (after
    /// comparing it with the under-store as [`Self::get_status`] does).
    pub async fn file_blocks(
        &self,
        path: &StrataPath,
        sync: Option<SyncInterval>,
    ) -> Result<FileBlocks> {
        let rec = self.lookup_synced(path, sync).await?;
        if rec.is_dir {
            return Err(Error::IsADirectory {
                path: path.to_string(),
            });
        }
        if !rec.complete {
            return Err(Error::FileIncomplete {
                path: path.to_string(),
            });
        }
        let n = block_count(rec.length, rec.block_size);
        let mut blocks = Vec::with_capacity(n as usize);
        for i in 0..n {
            let block_id = BlockId::new(FileId(rec.id), i)?;
            let offset = i * rec.block_size;
            blocks.push(BlockLocation {
                block_id,
                offset,
                length: (rec.length - offset).min(rec.block_size),
                workers: self.registry.locations(block_id),
            });
        }
        let ufs = match (rec.persisted, self.mount_for(path)) {
            (true, Some(hit)) => Some(hit.location()?),
            _ => None,
        };
        Ok(FileBlocks {
            info: self.info(path.clone(), &rec)?,
            blocks,
            ufs,
            ufs_fingerprint: recorded_fingerprint(&rec),
            cluster_id: self.cluster_id().to_string(),
        })
    }

    /// Drops cached copies of the file at `path`, or of every file below it. Every
    /// file must be persisted (else nothing is freed): a first walk checks, a
    /// second drops, in bounded batches; neither holds more than one page of a
    /// folder per level.
    pub async fn free(&self, path: &StrataPath) -> Result<u64> {
        let rec = self.lookup_unlocked(path).await?;
        self.walk_files(path, &rec, |dir, name, f| {
            if f.persisted {
                return Ok(());
            }
            let p = match name {
                Some(n) => dir.join(n)?,
                None => dir.clone(),
            };
            Err(Error::NotPermitted {
                path: p.to_string(),
                reason: "is not persisted in an under-store; freeing it would lose its data".into(),
            })
        })?;
        let mut freed = 0u64;
        let mut batch = Vec::new();
        self.walk_files(path, &rec, |_, _, f| {
            // A file written since the first walk was not checked: never dropped
            // unless it is persisted.
            if !f.persisted {
                return Ok(());
            }
            batch.push(FileId(f.id));
            if batch.len() >= FREE_BATCH {
                freed += self.registry.drop_files(&batch) as u64;
                batch.clear();
            }
            Ok(())
        })?;
        freed += self.registry.drop_files(&batch) as u64;
        Ok(freed)
    }

    /// Calls `visit(folder path, name, file)` for `rec` if it is a file (name
    /// `None`, the path is the file's own), else for every file below it, reading
    /// each folder a page at a time.
    fn walk_files(
        &self,
        path: &StrataPath,
        rec: &InodeRecord,
        mut visit: impl FnMut(&StrataPath, Option<&str>, &InodeRecord) -> Result<()>,
    ) -> Result<()> {
        if !rec.is_dir {
            return visit(path, None, rec);
        }
        // (folder id, its path, the last name read)
        let mut stack: Vec<(u64, StrataPath, Option<String>)> = vec![(rec.id, path.clone(), None)];
        while let Some((dir, dir_path, after)) = stack.last_mut() {
            let (page, _) = self
                .store
                .list_children_page(*dir, after.as_deref(), WALK_PAGE)?;
            let Some((last, _)) = page.last() else {
                stack.pop();
                continue;
            };
            *after = Some(last.clone());
            let dir_path = dir_path.clone();
            for (name, id) in page {
                match self.store.get_inode(id)? {
                    Some(child) if child.is_dir => {
                        stack.push((child.id, dir_path.join(&name)?, None));
                    }
                    Some(child) => visit(&dir_path, Some(&name), &child)?,
                    None => {} // removed meanwhile
                }
            }
        }
        Ok(())
    }

    /// Follows up an applied delete or unmount: drops the removed files' cached
    /// blocks and wakes the reclaimer if a detached subtree is left.
    fn after_removal(&self, applied: &Applied) {
        self.registry.drop_files(&applied.removed_files);
        if applied.more_to_reclaim {
            self.reclaim_wakeup.notify_one();
        }
    }

    /// Removes one batch of a detached subtree (a deleted or unmounted folder).
    /// False when there is nothing left to reclaim.
    pub async fn reclaim_step(&self) -> Result<bool> {
        let Some(root) = self.store.detached_roots(1)?.into_iter().next() else {
            return Ok(false);
        };
        let applied = self
            .propose(Op::Reclaim(ReclaimEntry {
                root,
                limit: RECLAIM_BATCH,
            }))
            .await?;
        self.after_removal(&applied);
        Ok(true)
    }

    /// Waits until a removal leaves a detached subtree to reclaim.
    pub async fn reclaim_needed(&self) {
        self.reclaim_wakeup.notified().await;
    }
}

/// The under-store fingerprint a file's record names.
fn recorded_fingerprint(rec: &InodeRecord) -> UfsFingerprint {
    UfsFingerprint {
        length: rec.length,
        version: rec.ufs_version.clone(),
    }
}

/// The length block `index` of a complete file has, `None` past its end.
fn expected_block_length(rec: &InodeRecord, index: u64) -> Option<u64> {
    let offset = index.checked_mul(rec.block_size)?;
    (offset < rec.length).then(|| (rec.length - offset).min(rec.block_size))
}

#[cfg(test)]
mod tests {
    use super::resolve::prefix_path;
    use crate::store::uris_overlap;

    #[test]
    fn overlapping_uris() {
        assert!(uris_overlap("file:///a/b", "/a/b/c"));
        assert!(uris_overlap("file:///a/b/", "file:///a/b"));
        assert!(!uris_overlap("file:///a/b", "file:///a/bc"));
        assert_eq!(prefix_path::<&str>(&[]), "/");
        assert_eq!(prefix_path(&["a", "b"]), "/a/b");
    }
}
