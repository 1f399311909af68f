//! Mutations of files and folders: mkdir, create, complete, delete, rename and
//! the expiry of abandoned writes. Each takes the path locks it needs, performs
//! its under-store side effect, then proposes one journal entry.

use super::requests::RequestKind;
use super::resolve::{prefix_path, Resolved};
use super::{now_ms, Namespace, RENEW_MAX_FILES, SYNC_ATTEMPTS};
use crate::entries::{CompleteFileEntry, CreateEntry, DeleteEntry, InodeRecord, Op, RenameEntry};
use crate::oplock::PathGuard;
use std::time::Instant;
use strata_common::ids::{block_count, FileId, MAX_BLOCKS_PER_FILE};
use strata_common::types::{
    CreateFile, FileInfo, RequestId, SyncInterval, UfsFingerprint, UfsLocation,
};
use strata_common::{Error, Result, StrataPath};
use strata_ufs::UfsPath;

impl Namespace {
    /// Builds the inodes for `missing` below `parent`; the last is `last`'s kind.
    pub(super) fn chain(
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

    pub(super) fn check_parent(
        &self,
        path: &StrataPath,
        r: &Resolved,
        recursive: bool,
    ) -> Result<()> {
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
    pub(super) async fn lock_for_create(&self, path: &StrataPath) -> Result<(PathGuard, Resolved)> {
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

    pub(super) async fn mkdir_once(
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
                let ufs = self.under_store(&hit.record)?;
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

    pub(super) async fn create_file_once(
        &self,
        req: &CreateFile,
    ) -> Result<(FileInfo, Option<UfsLocation>)> {
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
                    let ufs = self.under_store(&hit.record)?;
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
        // Just recorded from its writer's copy: nothing to compare.
        self.get_status(&path, Some(SyncInterval::Never)).await
    }

    /// Makes the staged under-store copy of file `id` visible at its path as it is
    /// now (the caller holds the path's lock); returns its version. The copy must be
    /// the one its writer described. A retry after a publish whose completion was
    /// lost finds the copy published already.
    pub(super) async fn publish(
        &self,
        id: FileId,
        path: &StrataPath,
        claimed: &UfsFingerprint,
    ) -> Result<String> {
        let hit = self.mount_for(path).ok_or_else(|| Error::NotPermitted {
            path: path.to_string(),
            reason: "is no longer under a mount; its under-store copy cannot be published".into(),
        })?;
        let ufs = self.under_store(&hit.record)?;
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
    pub(super) async fn discard_orphan(&self, id: FileId, loc: &UfsLocation) -> Result<()> {
        let mounted = self
            .store
            .mounts()
            .into_iter()
            .find(|m| m.uri == loc.mount_uri && !m.read_only);
        let Some(mount) = mounted else {
            return Ok(()); // unmounted meanwhile: nothing of ours to clean there
        };
        let ufs = self.under_store(&mount)?;
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

    pub(super) async fn delete_once(
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
                // The path is locked: no refresh of a child, which would lock it.
                let staged = self.sync_children(path, rec.id, false).await?.staged;
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
    pub(super) async fn remove_locked(
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
                let ufs = self.under_store(&hit.record)?;
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

    pub(super) async fn rename_once(
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
        let mut ufs_version = None;
        match (&src_hit, &dst_hit) {
            (None, None) => {}
            (Some(a), Some(b)) if a.record.mount_id == b.record.mount_id => {
                a.writable(src)?;
                let ufs = self.under_store(&a.record)?;
                let (from, to) = (a.ufs_path()?, b.ufs_path()?);
                if let Some(before) = ufs.status(&from).await? {
                    ufs.rename(&from, &to).await?;
                    // A copy-based move (S3) may give the file a new version:
                    // record it, or the next sync would take the moved file for
                    // one changed outside and drop its cached blocks. Only when
                    // the copy moved was the recorded one: a copy another
                    // program put there is left for the next sync to see.
                    let moved_recorded = !before.is_dir
                        && super::recorded_fingerprint(&rec)
                            .mismatch(&before.fingerprint())
                            .is_none();
                    if !ufs.capabilities().atomic_rename
                        && moved_recorded
                        && !rec.is_dir
                        && rec.complete
                        && rec.persisted
                    {
                        if let Ok(Some(st)) = ufs.status(&to).await {
                            if !st.is_dir
                                && st.length == rec.length
                                && st.version != rec.ufs_version
                            {
                                ufs_version = Some(st.version);
                            }
                        }
                    }
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
            ufs_version,
        });
        self.propose_deciding(req, RequestKind::Rename, op, ())
            .await?;
        Ok(())
    }
}
