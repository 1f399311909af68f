//! The namespace handlers: each validates a request against the current state,
//! performs its under-store side effect (if any), and proposes one journal entry.
//! They never write the metastore themselves: only apply does.
//!
//! Under-store consistency: a lookup of a path that is missing from the namespace
//! but lies under a mount asks the under-store, and loads what it finds (as a
//! journal entry like any other). Listing a directory under a mount loads the
//! children the under-store has and the namespace lacks.

use crate::entries::{
    CompleteFileEntry, CreateEntry, DeleteEntry, InodeRecord, MountRecord, Op, ReclaimEntry,
    RenameEntry,
};
use crate::journal::Journal;
use crate::lease::Leases;
use crate::oplock::PathGuard;
use crate::registry::Registry;
use crate::store::{Applied, MetaStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use strata_common::ids::{block_count, BlockId, FileId, MAX_BLOCKS_PER_FILE};
use strata_common::types::{
    BlockLocation, CreateFile, FileBlocks, FileInfo, FileKind, RequestId, UfsFingerprint,
    UfsLocation,
};
use strata_common::{Error, Result, StrataPath};
use strata_ufs::{StoreCache, UfsPath, UfsStatus, UnderStore};

mod mounts;
mod requests;
mod sync;
use requests::RequestKind;

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

/// Most files one lease renewal may name.
pub const RENEW_MAX_FILES: usize = 10_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A path resolved as far as the namespace reaches.
struct Resolved {
    /// Inodes from the root down to the deepest existing component.
    chain: Vec<Arc<InodeRecord>>,
    /// Components below that, which do not exist.
    missing: Vec<String>,
}

impl Resolved {
    fn deepest(&self) -> &Arc<InodeRecord> {
        // The chain always holds at least the root.
        &self.chain[self.chain.len() - 1]
    }

    fn found(&self) -> Option<&Arc<InodeRecord>> {
        self.missing.is_empty().then(|| self.deepest())
    }
}

/// A path's mount: the record and the path below the mount root.
struct MountHit {
    record: MountRecord,
    relative: String,
}

impl MountHit {
    fn location(&self) -> Result<UfsLocation> {
        UfsLocation::new(self.record.uri.clone(), &self.relative)
    }

    fn ufs_path(&self) -> Result<UfsPath> {
        UfsPath::parse(&self.relative)
    }

    fn writable(&self, path: &StrataPath) -> Result<()> {
        if self.record.read_only {
            return Err(Error::NotPermitted {
                path: path.to_string(),
                reason: format!("mount {} is read-only", self.record.path),
            });
        }
        Ok(())
    }
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
    /// and an empty worker registry (workers register again).
    pub fn take_leadership(&self) -> Result<()> {
        self.registry.forget_all();
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

    /// Between a mutation's under-store side effect and its journal entry.
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

    fn under_store(&self, uri: &str) -> Result<Arc<dyn UnderStore>> {
        self.stores.get(uri)
    }

    fn inode(&self, id: u64) -> Result<Arc<InodeRecord>> {
        self.store
            .get_inode(id)?
            .ok_or_else(|| Error::internal(format!("inode {id} is referenced but missing")))
    }

    fn resolve(&self, path: &StrataPath) -> Result<Resolved> {
        let root = self.inode(FileId::ROOT.0)?;
        let mut chain = vec![root];
        let names: Vec<&str> = path.components().collect();
        for (i, name) in names.iter().enumerate() {
            let cur = &chain[chain.len() - 1];
            if !cur.is_dir {
                return Err(Error::NotADirectory {
                    path: prefix_path(&names[..i]),
                });
            }
            match self.store.get_child(cur.id, name)? {
                Some(id) => match self.store.get_inode(id)? {
                    Some(rec) => chain.push(rec),
                    None => {
                        return Ok(Resolved {
                            chain,
                            missing: names[i..].iter().map(|s| s.to_string()).collect(),
                        })
                    }
                },
                None => {
                    return Ok(Resolved {
                        chain,
                        missing: names[i..].iter().map(|s| s.to_string()).collect(),
                    })
                }
            }
        }
        Ok(Resolved {
            chain,
            missing: Vec::new(),
        })
    }

    fn mount_for(&self, path: &StrataPath) -> Option<MountHit> {
        let mut best: Option<(usize, MountRecord, StrataPath)> = None;
        for m in self.store.mounts() {
            let Ok(mp) = StrataPath::parse(&m.path) else {
                continue;
            };
            if path.starts_with(&mp) {
                let depth = mp.depth();
                if best.as_ref().is_none_or(|(d, _, _)| depth > *d) {
                    best = Some((depth, m, mp));
                }
            }
        }
        best.map(|(_, record, mp)| MountHit {
            relative: path.relative_to(&mp).unwrap_or_default(),
            record,
        })
    }

    fn mounts_below(&self, path: &StrataPath) -> Option<String> {
        self.store.mounts().into_iter().map(|m| m.path).find(|p| {
            StrataPath::parse(p)
                .map(|mp| mp != *path && mp.starts_with(path))
                .unwrap_or(false)
        })
    }

    fn loaded_record(&self, parent_id: u64, st: &UfsStatus) -> InodeRecord {
        InodeRecord {
            id: self.new_id(),
            parent_id,
            name: st.name.clone(),
            is_dir: st.is_dir,
            mtime_ms: st.mtime_ms,
            length: st.length,
            block_size: if st.is_dir {
                0
            } else {
                self.default_block_size
            },
            complete: !st.is_dir,
            persisted: true,
            mount_id: 0,
            children_version: 0,
            ufs_version: st.version.clone(),
        }
    }

    /// Resolves `path`, loading from the under-store what the namespace lacks.
    async fn resolve_synced(&self, path: &StrataPath) -> Result<Resolved> {
        // A load is skipped by apply when the parent changed since we looked; look again.
        for _ in 0..SYNC_ATTEMPTS {
            let r = self.resolve(path)?;
            if !self.load_missing(path, &r).await? {
                return Ok(r);
            }
        }
        self.resolve(path)
    }

    /// Proposes loading what the under-store has of the components `r` lacks;
    /// false when there is nothing to load.
    async fn load_missing(&self, path: &StrataPath, r: &Resolved) -> Result<bool> {
        if r.missing.is_empty() || !r.deepest().is_dir {
            return Ok(false);
        }
        let Some(hit) = self.mount_for(path) else {
            return Ok(false);
        };
        let ufs = self.under_store(&hit.record.uri)?;
        let mount_path = StrataPath::parse(&hit.record.path)?;
        let mut cur = StrataPath::parse(&prefix_path(
            &path
                .components()
                .take(r.chain.len() - 1)
                .collect::<Vec<_>>(),
        ))?;
        let mut parent_id = r.deepest().id;
        let mut loaded: Vec<InodeRecord> = Vec::new();
        for name in &r.missing {
            cur = cur.join(name)?;
            let Some(rel) = cur.relative_to(&mount_path) else {
                break;
            };
            let Some(st) = ufs.status(&UfsPath::parse(&rel)?).await? else {
                break;
            };
            let rec = self.loaded_record(parent_id, &st);
            parent_id = rec.id;
            let is_dir = rec.is_dir;
            loaded.push(rec);
            if !is_dir {
                break;
            }
        }
        if loaded.is_empty() {
            return Ok(false);
        }
        let entry = CreateEntry {
            parent_id: r.deepest().id,
            path: cur.to_string(),
            inodes: loaded,
            expected_parent_version: Some(r.deepest().children_version),
        };
        match self.propose(Op::Create(entry)).await {
            // Loaded by a concurrent request meanwhile: what it loaded is as good.
            Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// [`Namespace::lookup`] for a caller that holds no path lock (a read). A
    /// path the namespace lacks is loaded under its lock: a mutation of it may
    /// have done its under-store step (a rename's new name already there) and not
    /// yet its entry, and a load meanwhile would make a second inode and fail the
    /// mutation.
    async fn lookup_unlocked(&self, path: &StrataPath) -> Result<Arc<InodeRecord>> {
        if let Some(rec) = self.resolve(path)?.found() {
            return Ok(rec.clone());
        }
        let _guard = self.locks.lock(&[path]).await;
        self.lookup(path).await
    }

    /// The inode at `path`, loading it from the under-store if need be.
    async fn lookup(&self, path: &StrataPath) -> Result<Arc<InodeRecord>> {
        let r = self.resolve_synced(path).await?;
        match r.found() {
            Some(rec) => Ok(rec.clone()),
            None if !r.deepest().is_dir => Err(Error::NotADirectory {
                path: prefix_path(
                    &path
                        .components()
                        .take(r.chain.len() - 1)
                        .collect::<Vec<_>>(),
                ),
            }),
            None => Err(Error::NotFound {
                path: path.to_string(),
            }),
        }
    }

    fn info(&self, path: StrataPath, rec: &InodeRecord) -> Result<FileInfo> {
        let cached_percent = if rec.is_dir || rec.length == 0 {
            if rec.is_dir {
                0
            } else {
                100
            }
        } else {
            let n = block_count(rec.length, rec.block_size);
            let cached = self.registry.cached_blocks_of(FileId(rec.id), n);
            (cached * 100 / n.max(1)) as u32
        };
        Ok(FileInfo {
            id: FileId(rec.id),
            path,
            kind: if rec.is_dir {
                FileKind::Directory
            } else {
                FileKind::File
            },
            length: rec.length,
            block_size: rec.block_size,
            complete: rec.complete,
            persisted: rec.persisted,
            mtime_ms: rec.mtime_ms,
            mount_point: rec.mount_id != 0,
            cached_percent,
        })
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

    /// The path of inode `id` now; `None` if it was deleted (or lies in a deleted
    /// folder).
    fn current_path(&self, id: FileId) -> Result<Option<StrataPath>> {
        match self.path_of(id.0) {
            Ok(p) => Ok(Some(p)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The path of inode `id`, by walking up to the root. `NotFound` for an inode
    /// of a deleted folder whose subtree is still being reclaimed: no path leads
    /// to it.
    pub fn path_of(&self, id: u64) -> Result<StrataPath> {
        let gone = || Error::NotFound {
            path: format!("inode {id} (deleted)"),
        };
        let mut names = Vec::new();
        let mut cur = self.store.get_inode(id)?.ok_or_else(gone)?;
        while cur.id != FileId::ROOT.0 {
            if cur.parent_id == 0 || names.len() > strata_common::path::MAX_PATH_BYTES {
                return Err(gone());
            }
            names.push(cur.name.clone());
            cur = self.store.get_inode(cur.parent_id)?.ok_or_else(gone)?;
        }
        names.reverse();
        StrataPath::parse(&prefix_path(&names))
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

    /// Status of `path`.
    pub async fn get_status(&self, path: &StrataPath) -> Result<FileInfo> {
        let rec = self.lookup_unlocked(path).await?;
        self.info(path.clone(), &rec)
    }

    /// One page of a directory's entries (or the file itself), in name order:
    /// up to `limit` entries after `start_after`. The under-store is synced on the
    /// first page only.
    pub async fn list_page(
        &self,
        path: &StrataPath,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        let limit = limit.clamp(1, LIST_PAGE_MAX);
        let rec = self.lookup_unlocked(path).await?;
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
            let staged = self.sync_children(path, rec.id).await?;
            self.sweep_listed(path, rec.id, &staged).await?;
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

    /// Builds the inodes for `missing` below `parent`; the last is `last`'s kind.
    fn chain(
        &self,
        parent: u64,
        missing: &[String],
        dirs_persisted: bool,
        t: i64,
    ) -> Vec<InodeRecord> {
        let mut out = Vec::new();
        let mut p = parent;
        for name in missing {
            let rec = InodeRecord {
                id: self.new_id(),
                parent_id: p,
                name: name.clone(),
                is_dir: true,
                mtime_ms: t,
                persisted: dirs_persisted,
                ..Default::default()
            };
            p = rec.id;
            out.push(rec);
        }
        out
    }

    fn check_parent(&self, path: &StrataPath, r: &Resolved, recursive: bool) -> Result<()> {
        if !r.deepest().is_dir {
            return Err(Error::NotADirectory {
                path: prefix_path(
                    &path
                        .components()
                        .take(r.chain.len() - 1)
                        .collect::<Vec<_>>(),
                ),
            });
        }
        if r.missing.len() > 1 && !recursive {
            return Err(Error::NotFound {
                path: path.parent().unwrap_or_else(StrataPath::root).to_string(),
            });
        }
        Ok(())
    }

    /// Locks `path` for a create and resolves it. When folders above it are missing
    /// (a recursive create makes them), the lock is the topmost missing folder's
    /// instead: it covers `path` and every sibling a concurrent create would make
    /// there, so two creates never both make the same folder.
    async fn lock_for_create(&self, path: &StrataPath) -> Result<(PathGuard, Resolved)> {
        let mut locked = path.clone();
        let mut guard = self.locks.lock(&[path]).await;
        // The topmost missing folder only moves up (a folder above removed
        // meanwhile), so this widens at most once per level.
        for _ in 0..=path.depth() {
            let r = self.resolve_synced(path).await?;
            let top = if r.missing.len() <= 1 {
                path.clone()
            } else {
                StrataPath::parse(&prefix_path(
                    &path.components().take(r.chain.len()).collect::<Vec<_>>(),
                ))?
            };
            if top.starts_with(&locked) {
                return Ok((guard, r));
            }
            drop(guard);
            guard = self.locks.lock(&[&top]).await;
            locked = top;
        }
        Err(Error::unavailable(format!(
            "{path}: the folders above it kept changing while it was created"
        )))
    }

    /// Creates a directory (and its missing parents when `recursive`).
    pub async fn mkdir(
        &self,
        path: &StrataPath,
        recursive: bool,
        req: Option<&RequestId>,
    ) -> Result<FileInfo> {
        self.once(
            req,
            RequestKind::Mkdir,
            self.mkdir_once(path, recursive, req),
        )
        .await
    }

    async fn mkdir_once(
        &self,
        path: &StrataPath,
        recursive: bool,
        req: Option<&RequestId>,
    ) -> Result<FileInfo> {
        let (_guard, r) = self.lock_for_create(path).await?;
        if let Some(done) = self.answered(req, RequestKind::Mkdir)? {
            return done;
        }
        if let Some(rec) = r.found() {
            if rec.is_dir && recursive {
                // Success read from this master's state: only if it still leads.
                let info = self.info(path.clone(), rec)?;
                self.read_barrier().await?;
                return Ok(info);
            }
            return Err(Error::AlreadyExists {
                path: path.to_string(),
            });
        }
        self.check_parent(path, &r, recursive)?;
        let persisted = match self.mount_for(path) {
            Some(hit) => {
                hit.writable(path)?;
                let ufs = self.under_store(&hit.record.uri)?;
                ufs.mkdirs(&hit.ufs_path()?).await?;
                self.after_under_store().await;
                true
            }
            None => false,
        };
        let inodes = self.chain(r.deepest().id, &r.missing, persisted, now_ms());
        let last = inodes
            .last()
            .ok_or_else(|| Error::internal(format!("{path}: nothing to create")))?;
        let info = self.info(path.clone(), last)?;
        let op = Op::Create(CreateEntry {
            parent_id: r.deepest().id,
            path: path.to_string(),
            inodes,
            expected_parent_version: None,
        });
        Ok(self
            .propose_deciding(req, RequestKind::Mkdir, op, info)
            .await?
            .1)
    }

    /// Creates an incomplete file; returns it and, when the write type persists, its
    /// under-store location.
    pub async fn create_file(&self, req: &CreateFile) -> Result<(FileInfo, Option<UfsLocation>)> {
        self.once(
            req.request.as_ref(),
            RequestKind::CreateFile,
            self.create_file_once(req),
        )
        .await
    }

    async fn create_file_once(&self, req: &CreateFile) -> Result<(FileInfo, Option<UfsLocation>)> {
        let path = &req.path;
        if !self.block_size_range.contains(&req.block_size) {
            return Err(Error::invalid_argument(
                "block_size",
                format!(
                    "{} is outside the allowed {}..={} bytes (master.min_block_size, master.max_block_size)",
                    req.block_size,
                    self.block_size_range.start(),
                    self.block_size_range.end()
                ),
            ));
        }
        if path.is_root() {
            return Err(Error::AlreadyExists { path: "/".into() });
        }
        let (_guard, r) = self.lock_for_create(path).await?;
        if let Some(done) = self.answered(req.request.as_ref(), RequestKind::CreateFile)? {
            return done;
        }
        if r.found().is_some() {
            return Err(Error::AlreadyExists {
                path: path.to_string(),
            });
        }
        self.check_parent(path, &r, req.recursive)?;
        let hit = self.mount_for(path);
        let ufs = match (&hit, req.write_type.persists()) {
            (Some(hit), true) => {
                hit.writable(path)?;
                // The folder the writer stages in, made now, while the namespace
                // path is locked: the worker never makes folders itself.
                let location = hit.location()?;
                let parent = UfsPath::from(&location);
                if let Some((_, dirs)) = parent.components().split_last() {
                    let ufs = self.under_store(&hit.record.uri)?;
                    ufs.mkdirs(&UfsPath::parse(&dirs.join("/"))?).await?;
                }
                Some(location)
            }
            (None, true) => {
                return Err(Error::NotPermitted {
                    path: path.to_string(),
                    reason: format!(
                        "not under a mount, so {} has nowhere to persist it (use MUST_CACHE)",
                        req.write_type
                    ),
                })
            }
            (_, false) => None,
        };
        let t = now_ms();
        let missing = &r.missing;
        let mut inodes = self.chain(
            r.deepest().id,
            &missing[..missing.len() - 1],
            ufs.is_some(),
            t,
        );
        inodes.push(InodeRecord {
            id: self.new_id(),
            parent_id: inodes.last().map(|d| d.id).unwrap_or(r.deepest().id),
            name: missing[missing.len() - 1].clone(),
            is_dir: false,
            mtime_ms: t,
            block_size: req.block_size,
            ..Default::default()
        });
        let file = inodes[inodes.len() - 1].clone();
        let reply = (self.info(path.clone(), &file)?, ufs);
        let op = Op::Create(CreateEntry {
            parent_id: r.deepest().id,
            path: path.to_string(),
            inodes,
            expected_parent_version: None,
        });
        let (_, (info, ufs)) = self
            .propose_deciding(req.request.as_ref(), RequestKind::CreateFile, op, reply)
            .await?;
        self.leases.grant(info.id.0, Instant::now());
        Ok((info, ufs))
    }

    /// Seals a file written by a client. Idempotent: completing a complete file
    /// with the same length and persistence answers its status again, so a client
    /// whose answer was lost can retry.
    pub async fn complete_file(
        &self,
        id: FileId,
        length: u64,
        ufs: Option<UfsFingerprint>,
        staged_at: Option<UfsLocation>,
    ) -> Result<FileInfo> {
        // The path is read before its lock is taken; a folder renamed in between
        // moves the file, so it is read again under the lock and the lock taken
        // anew if it changed.
        let mut attempts = 0;
        let (rec, path, _guard) = loop {
            attempts += 1;
            let Some(path) = self.current_path(id)? else {
                // Deleted while it was written (gone, or in a deleted folder still
                // being reclaimed): its writer's staged copy may have been made
                // after the delete looked. File ids are never reused, so the copy
                // staged under this id is nobody else's.
                if let Some(loc) = staged_at {
                    self.discard_orphan(id, &loc).await?;
                }
                return Err(Error::NotFound {
                    path: format!("file id {id}"),
                });
            };
            let guard = self.locks.lock(&[&path]).await;
            if self.current_path(id)?.as_ref() == Some(&path) {
                break (self.inode(id.0)?, path, guard);
            }
            if attempts >= SYNC_ATTEMPTS {
                return Err(Error::unavailable(format!(
                    "{path}: its folder kept moving while the file was completed"
                )));
            }
        };
        if rec.is_dir {
            return Err(Error::IsADirectory {
                path: path.to_string(),
            });
        }
        if let Some(f) = &ufs {
            if f.length != length {
                return Err(Error::invalid_argument(
                    "ufs_fingerprint.length",
                    format!("{} bytes, but the file has {length}", f.length),
                ));
            }
        }
        if rec.complete {
            let same = rec.length == length
                && rec.persisted == ufs.is_some()
                && ufs.as_ref().is_none_or(|f| f.version == rec.ufs_version);
            if same {
                self.leases.release(id.0);
                return self.info(path, &rec);
            }
            return Err(Error::NotPermitted {
                path: path.to_string(),
                reason: "file is already complete".to_string(),
            });
        }
        if block_count(length, rec.block_size) > MAX_BLOCKS_PER_FILE {
            return Err(Error::invalid_argument(
                "length",
                "too many blocks for one file",
            ));
        }
        let ufs_version = match ufs {
            Some(claimed) => Some(self.publish(id, &path, &claimed).await?),
            None => None,
        };
        self.propose(Op::CompleteFile(CompleteFileEntry {
            id: id.0,
            path: path.to_string(),
            length,
            persisted: ufs_version.is_some(),
            mtime_ms: now_ms(),
            ufs_version: ufs_version.unwrap_or_default(),
        }))
        .await?;
        self.leases.release(id.0);
        // Blocks its writer reported while the length was unknown must fit it now.
        self.registry
            .retain_blocks_of(id, |b, len| self.block_is_valid(b, len));
        self.get_status(&path).await
    }

    /// Makes the staged under-store copy of file `id` visible at its path as it is
    /// now (the caller holds the path's lock); returns its version. The copy must be
    /// the one its writer described. A retry after a publish whose completion was
    /// lost finds the copy published already.
    async fn publish(
        &self,
        id: FileId,
        path: &StrataPath,
        claimed: &UfsFingerprint,
    ) -> Result<String> {
        let hit = self.mount_for(path).ok_or_else(|| Error::NotPermitted {
            path: path.to_string(),
            reason: "is no longer under a mount; its under-store copy cannot be published".into(),
        })?;
        let ufs = self.under_store(&hit.record.uri)?;
        let at = hit.ufs_path()?;
        let published = match ufs.publish(&at, id.0).await {
            Ok(st) => st,
            Err(Error::NotFound { .. }) => match ufs.status(&at).await? {
                Some(st) if claimed.mismatch(&st.fingerprint()).is_none() => st,
                _ => {
                    return Err(Error::NotFound {
                        path: format!("{path}: the writer's staged under-store copy"),
                    })
                }
            },
            Err(e) => return Err(e),
        };
        if let Some(reason) = claimed.mismatch(&published.fingerprint()) {
            // Not what the writer wrote: do not let it stand as this file's copy.
            ufs.delete(&at, false).await?;
            return Err(Error::UfsChanged {
                path: path.to_string(),
                reason,
            });
        }
        Ok(published.version)
    }

    /// Discards the staged copy of the deleted file `id` at `loc`, which must lie in
    /// a mounted under-store.
    async fn discard_orphan(&self, id: FileId, loc: &UfsLocation) -> Result<()> {
        let mounted = self
            .store
            .mounts()
            .into_iter()
            .any(|m| m.uri == loc.mount_uri && !m.read_only);
        if !mounted {
            return Ok(()); // unmounted meanwhile: nothing of ours to clean there
        }
        let ufs = self.under_store(&loc.mount_uri)?;
        ufs.discard(&UfsPath::from(loc), id.0).await
    }

    /// Deletes a file or directory, in the under-store too when it is persisted.
    /// With `only`, the path must still name that file (else `NotFound`).
    pub async fn delete(
        &self,
        path: &StrataPath,
        recursive: bool,
        only: Option<FileId>,
        req: Option<&RequestId>,
    ) -> Result<()> {
        self.once(
            req,
            RequestKind::Delete,
            self.delete_once(path, recursive, only, req),
        )
        .await
    }

    async fn delete_once(
        &self,
        path: &StrataPath,
        recursive: bool,
        only: Option<FileId>,
        req: Option<&RequestId>,
    ) -> Result<()> {
        let _guard = self.locks.lock(&[path]).await;
        if let Some(done) = self.answered(req, RequestKind::Delete)? {
            return done;
        }
        if path.is_root() {
            return Err(Error::NotPermitted {
                path: "/".into(),
                reason: "the root cannot be deleted".into(),
            });
        }
        let rec = self.lookup(path).await?;
        if only.is_some_and(|id| id.0 != rec.id) {
            return Err(Error::NotFound {
                path: format!("{path} (as the file it named when asked)"),
            });
        }
        if rec.mount_id != 0 {
            return Err(Error::NotPermitted {
                path: path.to_string(),
                reason: "is a mount point; unmount it instead".into(),
            });
        }
        if rec.is_dir {
            if let Some(m) = self.mounts_below(path) {
                return Err(Error::NotPermitted {
                    path: path.to_string(),
                    reason: format!("contains the mount point {m}; unmount it first"),
                });
            }
            // A recursive delete removes whatever the under-store has too, so
            // there is nothing to load first (a folder of millions would load it
            // all just to drop it).
            if !recursive {
                let staged = self.sync_children(path, rec.id).await?;
                self.sweep_staged(path, rec.id, &staged).await; // the path is locked
                if !self.store.list_children_page(rec.id, None, 1)?.0.is_empty() {
                    return Err(Error::DirectoryNotEmpty {
                        path: path.to_string(),
                    });
                }
            }
        }
        self.remove_locked(path, &rec, recursive, false, req).await
    }

    /// Removes `rec` at `path` (whose lock the caller holds), in the under-store
    /// first, then in the namespace; drops its files' cached blocks. With
    /// `staged_only` (an incomplete file whose lease expired) only the writer's
    /// staged copy goes: whatever sits at the path in the under-store (a copy
    /// published by a completion whose answer was lost, or a file put there
    /// outside Strata) stays, and the next listing loads it.
    async fn remove_locked(
        &self,
        path: &StrataPath,
        rec: &InodeRecord,
        recursive: bool,
        staged_only: bool,
        req: Option<&RequestId>,
    ) -> Result<()> {
        if let Some(hit) = self.mount_for(path) {
            // An incomplete file may have an under-store copy on the way: remove it too.
            if rec.is_dir || rec.persisted || (!rec.complete && !hit.record.read_only) {
                hit.writable(path)?;
                let ufs = self.under_store(&hit.record.uri)?;
                if !staged_only {
                    ufs.delete(&hit.ufs_path()?, recursive).await?;
                }
                if !rec.is_dir && !rec.complete {
                    // Its writer's staged copy, finished or not, goes too: completing
                    // the file later finds nothing to publish.
                    ufs.discard(&hit.ufs_path()?, rec.id).await?;
                }
                self.after_under_store().await;
            }
        }
        let op = Op::Delete(DeleteEntry {
            parent_id: rec.parent_id,
            name: rec.name.clone(),
            id: rec.id,
            path: path.to_string(),
            recursive,
            mtime_ms: now_ms(),
        });
        let (applied, ()) = self
            .propose_deciding(req, RequestKind::Delete, op, ())
            .await?;
        self.after_removal(&applied);
        Ok(())
    }

    /// Renews the write leases of `ids`; returns those that are no longer being
    /// written (completed, deleted, or expired): their writers have lost them.
    pub fn renew_leases(&self, ids: &[u64]) -> Result<Vec<u64>> {
        if ids.len() > RENEW_MAX_FILES {
            return Err(Error::invalid_argument(
                "file_ids",
                format!("{} files; at most {RENEW_MAX_FILES} per renewal", ids.len()),
            ));
        }
        let now = Instant::now();
        let mut lost = Vec::new();
        for &id in ids {
            // A file in a deleted folder (still being reclaimed) has no path: lost.
            match self.store.get_inode(id)? {
                Some(rec) if !rec.is_dir && !rec.complete && self.path_of(id).is_ok() => {
                    self.leases.grant(id, now)
                }
                _ => lost.push(id),
            }
        }
        Ok(lost)
    }

    /// How long a write lease lasts unless renewed.
    pub fn lease_duration(&self) -> std::time::Duration {
        self.leases.duration()
    }

    /// Files whose write lease ran out, up to `limit`.
    pub fn expired_leases(&self, limit: usize) -> Vec<FileId> {
        self.leases
            .expired(Instant::now(), limit)
            .into_iter()
            .map(FileId)
            .collect()
    }

    /// Deletes file `id` if it is still being written and its lease has run out
    /// (checked again under the path's lock, so a renewal or a completion that
    /// got there first wins). True if it was deleted.
    pub async fn expire_lease(&self, id: FileId) -> Result<bool> {
        let Some(rec) = self.store.get_inode(id.0)? else {
            self.leases.release(id.0);
            return Ok(false);
        };
        if rec.is_dir || rec.complete {
            self.leases.release(id.0);
            return Ok(false);
        }
        let path = match self.path_of(id.0) {
            Ok(p) => p,
            Err(Error::NotFound { .. }) => {
                self.leases.release(id.0); // in a deleted folder: reclaimed with it
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let _guard = self.locks.lock(&[&path]).await;
        if !self.leases.is_expired(id.0, Instant::now()) {
            return Ok(false);
        }
        let rec = match self.store.get_inode(id.0)? {
            Some(r) if !r.is_dir && !r.complete => r,
            _ => {
                self.leases.release(id.0);
                return Ok(false);
            }
        };
        if self.path_of(id.0).ok().as_ref() != Some(&path) {
            return Ok(false); // moved with its folder meanwhile: the next pass sees it
        }
        match self.remove_locked(&path, &rec, false, true, None).await {
            Ok(()) => {
                self.leases.release(id.0);
                tracing::info!(%path, file_id = id.0, "write lease expired: file removed");
                Ok(true)
            }
            Err(e) => {
                // Try again one lease from now rather than on every pass.
                self.leases.grant(id.0, Instant::now());
                Err(e)
            }
        }
    }

    /// Renames `src` to `dst` (which must not exist), in the under-store too.
    pub async fn rename(
        &self,
        src: &StrataPath,
        dst: &StrataPath,
        req: Option<&RequestId>,
    ) -> Result<()> {
        self.once(req, RequestKind::Rename, self.rename_once(src, dst, req))
            .await
    }

    async fn rename_once(
        &self,
        src: &StrataPath,
        dst: &StrataPath,
        req: Option<&RequestId>,
    ) -> Result<()> {
        let _guard = self.locks.lock(&[src, dst]).await;
        if let Some(done) = self.answered(req, RequestKind::Rename)? {
            return done;
        }
        if src.is_root() || dst.is_root() {
            return Err(Error::NotPermitted {
                path: "/".into(),
                reason: "the root cannot be renamed or replaced".into(),
            });
        }
        let rec = self.lookup(src).await?;
        if src == dst {
            self.read_barrier().await?;
            return Ok(());
        }
        if dst.starts_with(src) {
            return Err(Error::NotPermitted {
                path: dst.to_string(),
                reason: format!("cannot move {src} into its own subtree"),
            });
        }
        if rec.mount_id != 0 {
            return Err(Error::NotPermitted {
                path: src.to_string(),
                reason: "is a mount point; mount points cannot be renamed".into(),
            });
        }
        if !rec.is_dir && !rec.complete {
            // Its writer streams to the under-store path chosen at create time.
            return Err(Error::NotPermitted {
                path: src.to_string(),
                reason: "is being written; rename it after its writer closes it".into(),
            });
        }
        if let Some(m) = self.mounts_below(src) {
            return Err(Error::NotPermitted {
                path: src.to_string(),
                reason: format!("contains the mount point {m}"),
            });
        }
        let rd = self.resolve_synced(dst).await?;
        if rd.found().is_some() {
            return Err(Error::AlreadyExists {
                path: dst.to_string(),
            });
        }
        self.check_parent(dst, &rd, false)?;
        let (src_hit, dst_hit) = (self.mount_for(src), self.mount_for(dst));
        match (&src_hit, &dst_hit) {
            (None, None) => {}
            (Some(a), Some(b)) if a.record.mount_id == b.record.mount_id => {
                a.writable(src)?;
                let ufs = self.under_store(&a.record.uri)?;
                let from = a.ufs_path()?;
                if ufs.status(&from).await?.is_some() {
                    ufs.rename(&from, &b.ufs_path()?).await?;
                    self.after_under_store().await;
                }
            }
            _ => {
                return Err(Error::NotPermitted {
                    path: dst.to_string(),
                    reason: format!("cannot rename {src} across mounts"),
                })
            }
        }
        let op = Op::Rename(RenameEntry {
            id: rec.id,
            src_parent: rec.parent_id,
            src_name: rec.name.clone(),
            dst_parent: rd.deepest().id,
            dst_name: dst.name().unwrap_or_default().to_string(),
            src_path: src.to_string(),
            dst_path: dst.to_string(),
            mtime_ms: now_ms(),
        });
        self.propose_deciding(req, RequestKind::Rename, op, ())
            .await?;
        Ok(())
    }

    /// A complete file's blocks, their locations, and its under-store copy.
    pub async fn file_blocks(&self, path: &StrataPath) -> Result<FileBlocks> {
        let rec = self.lookup_unlocked(path).await?;
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

fn prefix_path<S: AsRef<str>>(names: &[S]) -> String {
    let mut s = String::new();
    for n in names {
        s.push('/');
        s.push_str(n.as_ref());
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Whether one URI's folder contains the other's.
#[cfg(test)]
mod tests {
    use super::*;
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
