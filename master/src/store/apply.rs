//! Apply: the only writer of the metastore. Each journal entry becomes one
//! `WriteBatch` holding its effects, the record of its request (when it carries
//! one) and its index. Apply re-checks everything validation saw (the parent
//! still a folder, the name still free, the subtree still attached, no mount
//! below a removed folder) and turns a conflict into a deterministic `Err` that
//! writes nothing but the index; `Err(Internal)` means the store failed and
//! nothing was written.

use super::{
    edge_key, is_storage_failure, requests, storage, u64_of, uris_overlap, Applied, MetaStore,
    CF_DETACHED, CF_EDGES, CF_INCOMPLETE, CF_INODES, CF_META, CF_MOUNTS, KEY_APPLIED_INDEX,
    KEY_CLUSTER_ID, KEY_CLUSTER_ID_JOURNALED, KEY_LAST_INODE_ID, KEY_LAST_MOUNT_ID, RECLAIM_MAX,
};
use crate::entries::{
    CompleteFileEntry, CreateEntry, DeleteEntry, InodeRecord, JournalEntry, LoadChildrenEntry,
    MountEntry, MountRecord, Op, ReclaimCursor, ReclaimLevel, RefreshFileEntry, RenameEntry,
    UnmountEntry,
};
use prost::Message;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use strata_common::ids::{block_count, FileId};
use strata_common::{Error, Result};

impl MetaStore {
    /// Applies entry number `index`: all its effects and the index in one batch.
    ///
    /// A conflict with the current state (the name taken, the parent gone) is a
    /// deterministic `Err` and the index is still recorded; `Err(Internal)` means the
    /// store itself failed and nothing was written.
    pub fn apply(&self, index: u64, entry: &JournalEntry) -> Result<Applied> {
        if let Some(tag) = &entry.request {
            if let Err(e) = requests::check_tag(tag) {
                self.record_index(WriteBatch::default(), index)?;
                return Err(e);
            }
            if let Some(outcome) = self.recorded(&tag.client, tag.seq)? {
                self.record_index(WriteBatch::default(), index)?;
                return Ok(Applied {
                    replayed: Some(requests::answer_of(outcome, tag.kind)),
                    ..Applied::default()
                });
            }
        }
        let mut tx = Tx::new(self);
        let outcome = match &entry.op {
            Some(Op::Create(e)) => tx.create(e),
            Some(Op::LoadChildren(e)) => tx.load_children(e),
            Some(Op::CompleteFile(e)) => tx.complete_file(e),
            Some(Op::Delete(e)) => tx.delete(e),
            Some(Op::Rename(e)) => tx.rename(e),
            Some(Op::Mount(e)) => tx.mount(e),
            Some(Op::Unmount(e)) => tx.unmount(e),
            Some(Op::Reclaim(e)) => tx.reclaim(e.root, e.limit),
            Some(Op::ClusterId(e)) => tx.cluster_id(&e.id),
            Some(Op::RefreshFile(e)) => tx.refresh_file(e),
            None => Err(Error::invalid_argument("journal entry", "empty")),
        };
        let Tx {
            batch,
            touched_inodes,
            touched_edges,
            mounts,
            mounts_changed,
            cluster_id,
            ..
        } = match outcome {
            Ok(_) => tx,
            Err(ref e) if is_storage_failure(e) => return outcome,
            Err(_) => Tx::new(self), // a conflict writes nothing but the index
        };
        let mut batch = batch;
        if let Some(tag) = &entry.request {
            let answer = match &outcome {
                Ok(_) => Ok(tag.reply.as_slice()),
                Err(e) => Err(e),
            };
            self.record_request(&mut batch, tag, answer)?;
        }
        self.record_index(batch, index)?;
        for id in touched_inodes.keys() {
            self.inode_cache.invalidate(id);
        }
        for key in touched_edges.keys() {
            self.edge_cache.invalidate(key);
        }
        if mounts_changed {
            *self.mounts.write().unwrap_or_else(|p| p.into_inner()) = mounts;
        }
        if let Some(id) = cluster_id {
            *self.cluster_id.write().unwrap_or_else(|p| p.into_inner()) = id;
        }
        outcome
    }

    /// Writes `batch` with the applied index.
    fn record_index(&self, mut batch: WriteBatch, index: u64) -> Result<()> {
        batch.put_cf(self.cf(CF_META)?, KEY_APPLIED_INDEX, index.to_be_bytes());
        self.db.write(batch).map_err(storage)?;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// One apply in progress: reads see its own pending writes.
struct Tx<'a> {
    store: &'a MetaStore,
    batch: WriteBatch,
    touched_inodes: HashMap<u64, Option<InodeRecord>>,
    touched_edges: HashMap<(u64, String), Option<u64>>,
    meta: HashMap<&'static [u8], u64>,
    // The mount table as this entry leaves it; published in memory after the write.
    mounts: Vec<MountRecord>,
    mounts_changed: bool,
    // The cluster id this entry set; published in memory after the write.
    cluster_id: Option<String>,
}

impl<'a> Tx<'a> {
    fn new(store: &'a MetaStore) -> Self {
        Tx {
            store,
            batch: WriteBatch::default(),
            touched_inodes: HashMap::new(),
            touched_edges: HashMap::new(),
            meta: HashMap::new(),
            mounts: store.mounts(),
            mounts_changed: false,
            cluster_id: None,
        }
    }

    /// The first journaled cluster id stays; a later one changes nothing.
    fn cluster_id(&mut self, id: &str) -> Result<Applied> {
        if id.is_empty() || id.len() > 64 {
            return Err(Error::invalid_argument("cluster id", "1 to 64 bytes"));
        }
        if self.store.cluster_id_journaled()? {
            return Ok(Applied::default());
        }
        let cf = self.store.cf(CF_META)?;
        self.batch.put_cf(cf, KEY_CLUSTER_ID, id.as_bytes());
        self.batch
            .put_cf(cf, KEY_CLUSTER_ID_JOURNALED, 1u64.to_be_bytes());
        self.cluster_id = Some(id.to_string());
        Ok(Applied::default())
    }

    fn inode(&self, id: u64) -> Result<Option<InodeRecord>> {
        match self.touched_inodes.get(&id) {
            Some(v) => Ok(v.clone()),
            None => self.store.load_inode(id),
        }
    }

    fn child(&self, parent: u64, name: &str) -> Result<Option<u64>> {
        match self.touched_edges.get(&(parent, name.to_string())) {
            Some(v) => Ok(*v),
            None => {
                let v = self
                    .store
                    .db
                    .get_pinned_cf(self.store.cf(CF_EDGES)?, edge_key(parent, name))
                    .map_err(storage)?;
                v.map(|v| u64_of(&v)).transpose()
            }
        }
    }

    /// Whether directory `parent` has any child, with this entry's own changes.
    fn has_children(&self, parent: u64) -> Result<bool> {
        if self
            .touched_edges
            .iter()
            .any(|((p, _), v)| *p == parent && v.is_some())
        {
            return Ok(true);
        }
        let prefix = parent.to_be_bytes();
        let iter = self.store.db.iterator_cf(
            self.store.cf(CF_EDGES)?,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, _) = item.map_err(storage)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let name = String::from_utf8_lossy(&k[8..]).into_owned();
            if !matches!(self.touched_edges.get(&(parent, name)), Some(None)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn put_inode(&mut self, rec: InodeRecord) -> Result<()> {
        self.batch.put_cf(
            self.store.cf(CF_INODES)?,
            rec.id.to_be_bytes(),
            rec.encode_to_vec(),
        );
        let id = rec.id;
        self.touched_inodes.insert(id, Some(rec));
        self.bump_meta(KEY_LAST_INODE_ID, id)
    }

    fn delete_inode(&mut self, id: u64) -> Result<()> {
        self.batch
            .delete_cf(self.store.cf(CF_INODES)?, id.to_be_bytes());
        self.touched_inodes.insert(id, None);
        Ok(())
    }

    /// Records whether file `id` is being written (in the incomplete-file index).
    fn set_incomplete(&mut self, id: u64, incomplete: bool) -> Result<()> {
        let cf = self.store.cf(CF_INCOMPLETE)?;
        if incomplete {
            self.batch.put_cf(cf, id.to_be_bytes(), []);
        } else {
            self.batch.delete_cf(cf, id.to_be_bytes());
        }
        Ok(())
    }

    fn put_edge(&mut self, parent: u64, name: &str, child: u64) -> Result<()> {
        self.batch.put_cf(
            self.store.cf(CF_EDGES)?,
            edge_key(parent, name),
            child.to_be_bytes(),
        );
        self.touched_edges
            .insert((parent, name.to_string()), Some(child));
        Ok(())
    }

    fn delete_edge(&mut self, parent: u64, name: &str) -> Result<()> {
        self.batch
            .delete_cf(self.store.cf(CF_EDGES)?, edge_key(parent, name));
        self.touched_edges.insert((parent, name.to_string()), None);
        Ok(())
    }

    fn bump_meta(&mut self, key: &'static [u8], value: u64) -> Result<()> {
        let current = match self.meta.get(key) {
            Some(v) => *v,
            None => self.store.get_meta(key)?,
        };
        if value > current {
            self.meta.insert(key, value);
            self.batch
                .put_cf(self.store.cf(CF_META)?, key, value.to_be_bytes());
        }
        Ok(())
    }

    /// Records that directory `id`'s children changed, at `mtime_ms`.
    fn touch_dir(&mut self, id: u64, mtime_ms: i64) -> Result<()> {
        if let Some(mut dir) = self.inode(id)? {
            dir.mtime_ms = dir.mtime_ms.max(mtime_ms);
            dir.children_version += 1;
            self.put_inode(dir)?;
        }
        Ok(())
    }

    /// The directory `id` (whose path is `path`), or why it cannot be a parent.
    fn existing_dir(&self, id: u64, path: &str) -> Result<InodeRecord> {
        match self.inode(id)? {
            Some(d) if d.is_dir => Ok(d),
            Some(_) => Err(Error::NotADirectory {
                path: path.to_string(),
            }),
            None => Err(Error::NotFound {
                path: path.to_string(),
            }),
        }
    }

    /// Whether directory `id` is in the tree: a folder of a deleted subtree (still
    /// being reclaimed) is not, and nothing may be added to it.
    fn reachable(&self, mut id: u64) -> Result<bool> {
        for _ in 0..=strata_common::path::MAX_PATH_BYTES {
            if id == FileId::ROOT.0 {
                return Ok(true);
            }
            match self.inode(id)? {
                Some(rec) if rec.parent_id != 0 => id = rec.parent_id,
                _ => return Ok(false),
            }
        }
        Ok(false)
    }

    /// The directory `id` (at `path`) if it exists in the tree and can take a child.
    fn live_dir(&self, id: u64, path: &str) -> Result<InodeRecord> {
        let dir = self.existing_dir(id, path)?;
        if !self.reachable(id)? {
            return Err(Error::NotFound {
                path: path.to_string(),
            });
        }
        Ok(dir)
    }

    /// The path of a mount rooted at or below inode `id`, if any.
    fn mount_within(&self, id: u64) -> Result<Option<String>> {
        for m in &self.mounts {
            let mut cur = m.inode_id;
            while cur != 0 {
                if cur == id {
                    return Ok(Some(m.path.clone()));
                }
                cur = self.inode(cur)?.map(|r| r.parent_id).unwrap_or(0);
            }
        }
        Ok(None)
    }

    fn create(&mut self, e: &CreateEntry) -> Result<Applied> {
        let parent = self.live_dir(e.parent_id, &ancestor(&e.path, e.inodes.len()))?;
        if e.expected_parent_version
            .is_some_and(|v| v != parent.children_version)
        {
            return Ok(Applied::default()); // found in the under-store before a change here
        }
        let first = e
            .inodes
            .first()
            .ok_or_else(|| Error::invalid_argument("journal entry", "create with no inode"))?;
        if self.child(e.parent_id, &first.name)?.is_some() {
            // The first new inode's path: a folder above the target when the entry
            // makes several.
            return Err(Error::AlreadyExists {
                path: ancestor(&e.path, e.inodes.len() - 1),
            });
        }
        let mut parent = e.parent_id;
        for rec in &e.inodes {
            if rec.parent_id != parent {
                return Err(Error::invalid_argument(
                    "journal entry",
                    "create chain is broken",
                ));
            }
            if self.inode(rec.id)?.is_some() {
                return Err(id_in_use(&e.path, rec.id));
            }
            self.put_edge(parent, &rec.name, rec.id)?;
            if !rec.is_dir && !rec.complete {
                self.set_incomplete(rec.id, true)?;
            }
            self.put_inode(rec.clone())?;
            parent = rec.id;
        }
        self.touch_dir(e.parent_id, first.mtime_ms)?;
        Ok(Applied::default())
    }

    fn load_children(&mut self, e: &LoadChildrenEntry) -> Result<Applied> {
        let dir = self.live_dir(e.parent_id, &e.path)?;
        if dir.children_version != e.expected_version {
            return Ok(Applied::default()); // listed before a change here
        }
        let mut added = false;
        for rec in &e.children {
            if rec.parent_id != e.parent_id {
                return Err(Error::invalid_argument(
                    "journal entry",
                    "child of another parent",
                ));
            }
            if self.child(e.parent_id, &rec.name)?.is_some() {
                continue; // created or loaded meanwhile
            }
            if self.inode(rec.id)?.is_some() {
                return Err(id_in_use(&e.path, rec.id));
            }
            self.put_edge(e.parent_id, &rec.name, rec.id)?;
            if !rec.is_dir && !rec.complete {
                self.set_incomplete(rec.id, true)?;
            }
            self.put_inode(rec.clone())?;
            added = true;
        }
        if added {
            self.touch_dir(e.parent_id, dir.mtime_ms)?;
        }
        Ok(Applied {
            children_version: Some(dir.children_version + u64::from(added)),
            ..Applied::default()
        })
    }

    fn refresh_file(&mut self, e: &RefreshFileEntry) -> Result<Applied> {
        let new = e
            .record
            .as_ref()
            .ok_or_else(|| Error::invalid_argument("journal entry", "refresh without a record"))?;
        let gone = || Error::NotFound {
            path: e.path.clone(),
        };
        if self.child(new.parent_id, &new.name)? != Some(e.old_id)
            || !self.reachable(new.parent_id)?
        {
            return Err(gone());
        }
        let old = self.inode(e.old_id)?.ok_or_else(gone)?;
        // Only a file whose bytes the under-store holds is replaced: one being
        // written, or written to Strata alone, keeps its inode.
        if old.is_dir || !old.complete || !old.persisted || old.mount_id != 0 {
            return Err(Error::NotPermitted {
                path: e.path.clone(),
                reason: "only a complete, persisted file is refreshed from its under-store"
                    .to_string(),
            });
        }
        if new.is_dir || !new.complete || !new.persisted || new.mount_id != 0 {
            return Err(Error::invalid_argument(
                "journal entry",
                "a refreshed file must be complete and persisted",
            ));
        }
        if self.inode(new.id)?.is_some() {
            return Err(id_in_use(&e.path, new.id));
        }
        if new.block_size == 0
            || block_count(new.length, new.block_size) > strata_common::ids::MAX_BLOCKS_PER_FILE
        {
            return Err(Error::invalid_argument(
                "length",
                format!("{}: too many blocks", e.path),
            ));
        }
        self.existing_dir(new.parent_id, &e.path)?;
        // The folder keeps its names, so its version stays: a load of children
        // listed before this entry still fits.
        self.delete_edge(new.parent_id, &new.name)?;
        let removed = self.remove_inode(&old)?;
        self.put_edge(new.parent_id, &new.name, new.id)?;
        self.put_inode(new.clone())?;
        Ok(Applied {
            removed_files: removed.into_iter().collect(),
            ..Applied::default()
        })
    }

    fn complete_file(&mut self, e: &CompleteFileEntry) -> Result<Applied> {
        let mut rec = match self.inode(e.id)? {
            Some(r) if r.is_dir => {
                return Err(Error::IsADirectory {
                    path: e.path.clone(),
                })
            }
            Some(r) => r,
            None => {
                return Err(Error::NotFound {
                    path: e.path.clone(),
                })
            }
        };
        if rec.complete {
            return Err(Error::NotPermitted {
                path: e.path.clone(),
                reason: "file is already complete".to_string(),
            });
        }
        rec.length = e.length;
        rec.complete = true;
        rec.persisted = e.persisted;
        rec.ufs_version = e.ufs_version.clone();
        rec.mtime_ms = e.mtime_ms;
        let n = block_count(rec.length, rec.block_size);
        if n > strata_common::ids::MAX_BLOCKS_PER_FILE {
            return Err(Error::invalid_argument(
                "length",
                format!("{}: too many blocks", e.path),
            ));
        }
        self.set_incomplete(rec.id, false)?;
        self.put_inode(rec)?;
        Ok(Applied::default())
    }

    /// Removes the inode `rec` (already unlinked from its parent); returns it if it
    /// was a file.
    fn remove_inode(&mut self, rec: &InodeRecord) -> Result<Option<FileId>> {
        self.delete_inode(rec.id)?;
        if rec.is_dir {
            return Ok(None);
        }
        if !rec.complete {
            self.set_incomplete(rec.id, false)?;
        }
        Ok(Some(FileId(rec.id)))
    }

    /// Removes `rec` (already unlinked from its parent) with everything below it: a
    /// file or an empty folder at once, a folder with children by detaching it
    /// (parent 0: no path leads to it any more) for [`Tx::reclaim`] to remove in
    /// bounded steps.
    fn remove_or_detach(&mut self, mut rec: InodeRecord) -> Result<Applied> {
        if rec.is_dir && self.has_children(rec.id)? {
            rec.parent_id = 0;
            self.batch
                .put_cf(self.store.cf(CF_DETACHED)?, rec.id.to_be_bytes(), []);
            self.put_inode(rec)?;
            return Ok(Applied {
                more_to_reclaim: true,
                ..Applied::default()
            });
        }
        Ok(Applied {
            removed_files: self.remove_inode(&rec)?.into_iter().collect(),
            ..Applied::default()
        })
    }

    /// Removes up to `limit` inodes of the detached subtree at `root`, in a
    /// depth-first walk that removes a folder once its children are gone. Each
    /// folder's children are read from the store after the last name passed, so
    /// the walk costs one seek per inode whatever the folder sizes.
    fn reclaim(&mut self, root: u64, limit: u32) -> Result<Applied> {
        if limit == 0 || limit > RECLAIM_MAX {
            return Err(Error::invalid_argument(
                "journal entry",
                format!("reclaim limit {limit} is outside 1..={RECLAIM_MAX}"),
            ));
        }
        let detached = self.store.cf(CF_DETACHED)?;
        let key = root.to_be_bytes();
        let Some(saved) = self.store.db.get_cf(detached, key).map_err(storage)? else {
            return Ok(Applied::default()); // reclaimed already
        };
        // Where the entry before this one stopped: each batch goes on from there
        // rather than from the root, so it never passes over what earlier batches
        // removed (a folder of millions costs each batch the same).
        let cursor = ReclaimCursor::decode(&*saved)
            .map_err(|e| Error::internal(format!("metastore: corrupt reclaim cursor: {e}")))?;
        let mut budget = limit;
        let mut removed = Vec::new();
        // (folder, last child name passed)
        let mut stack: Vec<(u64, Option<String>)> = if cursor.levels.is_empty() {
            vec![(root, None)]
        } else {
            cursor
                .levels
                .into_iter()
                .map(|l| (l.dir, (!l.after.is_empty()).then_some(l.after)))
                .collect()
        };
        while budget > 0 {
            let Some((dir, after)) = stack.last_mut() else {
                break;
            };
            let dir = *dir;
            let next = self
                .store
                .list_children_page(dir, after.as_deref(), 1)?
                .0
                .into_iter()
                .next();
            match next {
                Some((name, child)) => {
                    *after = Some(name.clone());
                    match self.inode(child)? {
                        Some(c) if c.is_dir => stack.push((child, None)),
                        Some(c) => {
                            self.delete_edge(dir, &name)?;
                            removed.extend(self.remove_inode(&c)?);
                            budget -= 1;
                        }
                        None => {
                            self.delete_edge(dir, &name)?; // a dangling edge
                            budget -= 1;
                        }
                    }
                }
                None => {
                    // Every child is gone: remove the folder itself.
                    stack.pop();
                    if let Some(d) = self.inode(dir)? {
                        if let Some((parent, _)) = stack.last() {
                            self.delete_edge(*parent, &d.name)?;
                        }
                        self.remove_inode(&d)?;
                    }
                    budget -= 1;
                    if dir == root {
                        self.batch.delete_cf(detached, key);
                        return Ok(Applied {
                            removed_files: removed,
                            ..Applied::default()
                        });
                    }
                }
            }
        }
        let cursor = ReclaimCursor {
            levels: stack
                .into_iter()
                .map(|(dir, after)| ReclaimLevel {
                    dir,
                    after: after.unwrap_or_default(),
                })
                .collect(),
        };
        self.batch.put_cf(detached, key, cursor.encode_to_vec());
        Ok(Applied {
            removed_files: removed,
            more_to_reclaim: true,
            ..Applied::default()
        })
    }

    fn delete(&mut self, e: &DeleteEntry) -> Result<Applied> {
        if self.child(e.parent_id, &e.name)? != Some(e.id) || !self.reachable(e.parent_id)? {
            return Err(Error::NotFound {
                path: e.path.clone(),
            });
        }
        let rec = self.inode(e.id)?.ok_or_else(|| Error::NotFound {
            path: e.path.clone(),
        })?;
        if rec.mount_id != 0 {
            return Err(Error::NotPermitted {
                path: e.path.clone(),
                reason: "is a mount point; unmount it instead".to_string(),
            });
        }
        if let Some(m) = self.mount_within(e.id)? {
            return Err(Error::NotPermitted {
                path: e.path.clone(),
                reason: format!("contains the mount point {m}; unmount it first"),
            });
        }
        if rec.is_dir && !e.recursive && self.has_children(e.id)? {
            return Err(Error::DirectoryNotEmpty {
                path: e.path.clone(),
            });
        }
        self.delete_edge(e.parent_id, &e.name)?;
        let applied = self.remove_or_detach(rec)?;
        self.touch_dir(e.parent_id, e.mtime_ms)?;
        Ok(applied)
    }

    fn rename(&mut self, e: &RenameEntry) -> Result<Applied> {
        if self.child(e.src_parent, &e.src_name)? != Some(e.id) || !self.reachable(e.src_parent)? {
            return Err(Error::NotFound {
                path: e.src_path.clone(),
            });
        }
        self.live_dir(e.dst_parent, &parent_of(&e.dst_path))?;
        if let Some(m) = self.mount_within(e.id)? {
            return Err(Error::NotPermitted {
                path: e.src_path.clone(),
                reason: format!("contains the mount point {m}"),
            });
        }
        if self.child(e.dst_parent, &e.dst_name)?.is_some() {
            return Err(Error::AlreadyExists {
                path: e.dst_path.clone(),
            });
        }
        // The destination's parent must not lie inside the inode being moved.
        let mut cur = e.dst_parent;
        while cur != 0 {
            if cur == e.id {
                return Err(Error::NotPermitted {
                    path: e.dst_path.clone(),
                    reason: format!("cannot move {} into its own subtree", e.src_path),
                });
            }
            cur = self.inode(cur)?.map(|r| r.parent_id).unwrap_or(0);
        }
        let mut rec = self.inode(e.id)?.ok_or_else(|| Error::NotFound {
            path: e.src_path.clone(),
        })?;
        rec.parent_id = e.dst_parent;
        rec.name = e.dst_name.clone();
        if let Some(v) = &e.ufs_version {
            if !rec.is_dir && rec.persisted {
                rec.ufs_version = v.clone();
            }
        }
        self.delete_edge(e.src_parent, &e.src_name)?;
        self.put_edge(e.dst_parent, &e.dst_name, e.id)?;
        self.put_inode(rec)?;
        self.touch_dir(e.src_parent, e.mtime_ms)?;
        self.touch_dir(e.dst_parent, e.mtime_ms)?;
        Ok(Applied::default())
    }

    fn mount(&mut self, e: &MountEntry) -> Result<Applied> {
        let (Some(inode), Some(mount)) = (&e.inode, &e.mount) else {
            return Err(Error::invalid_argument(
                "journal entry",
                "mount without inode or record",
            ));
        };
        if self.mounts.iter().any(|m| m.path == mount.path) {
            return Err(Error::AlreadyExists {
                path: mount.path.clone(),
            });
        }
        if mount.mount_id == 0 || self.mounts.iter().any(|m| m.mount_id == mount.mount_id) {
            // Two leaders' handlers may pick the same id: the second is refused.
            return Err(Error::NotPermitted {
                path: mount.path.clone(),
                reason: format!("mount id {} is already in use", mount.mount_id),
            });
        }
        // The handler checks these too, against the table it saw; two mounts
        // racing past it (on one leader, or on two) meet here, in log order.
        if let Some(m) = self
            .mounts
            .iter()
            .find(|m| uris_overlap(&m.uri, &mount.uri))
        {
            return Err(Error::NotPermitted {
                path: mount.path.clone(),
                reason: format!("{} overlaps the mount {} ({})", mount.uri, m.path, m.uri),
            });
        }
        if let Some(m) = self.mounts.iter().find(|m| {
            m.path != "/"
                && mount
                    .path
                    .starts_with(&format!("{}/", m.path.trim_end_matches('/')))
        }) {
            return Err(Error::NotPermitted {
                path: mount.path.clone(),
                reason: format!("lies inside the mount {}; mounts cannot nest", m.path),
            });
        }
        if inode.id == FileId::ROOT.0 {
            let mut root = self
                .inode(FileId::ROOT.0)?
                .ok_or_else(|| Error::internal("root inode missing"))?;
            root.mount_id = mount.mount_id;
            root.persisted = true;
            self.put_inode(root)?;
        } else {
            self.live_dir(e.parent_id, &parent_of(&mount.path))?;
            if self.inode(inode.id)?.is_some() {
                return Err(id_in_use(&mount.path, inode.id));
            }
            if self.child(e.parent_id, &inode.name)?.is_some() {
                return Err(Error::AlreadyExists {
                    path: mount.path.clone(),
                });
            }
            self.put_edge(e.parent_id, &inode.name, inode.id)?;
            self.put_inode(inode.clone())?;
            self.touch_dir(e.parent_id, inode.mtime_ms)?;
        }
        self.batch.put_cf(
            self.store.cf(CF_MOUNTS)?,
            mount.mount_id.to_be_bytes(),
            mount.encode_to_vec(),
        );
        self.bump_meta(KEY_LAST_MOUNT_ID, mount.mount_id)?;
        self.mounts.push(mount.clone());
        self.mounts_changed = true;
        Ok(Applied::default())
    }

    fn unmount(&mut self, e: &UnmountEntry) -> Result<Applied> {
        let Some(mount) = self
            .mounts
            .iter()
            .find(|m| m.mount_id == e.mount_id)
            .cloned()
        else {
            return Err(Error::NotAMountPoint {
                path: e.path.clone(),
            });
        };
        if mount.inode_id == FileId::ROOT.0 {
            return Err(Error::NotPermitted {
                path: e.path.clone(),
                reason: "the root mount cannot be unmounted".to_string(),
            });
        }
        let rec = self
            .inode(mount.inode_id)?
            .ok_or_else(|| Error::NotPermitted {
                path: e.path.clone(),
                reason: format!("mount {} has lost its directory", mount.mount_id),
            })?;
        self.delete_edge(rec.parent_id, &rec.name)?;
        let (parent_id, mtime_ms) = (rec.parent_id, rec.mtime_ms);
        let applied = self.remove_or_detach(rec)?;
        self.batch
            .delete_cf(self.store.cf(CF_MOUNTS)?, mount.mount_id.to_be_bytes());
        self.touch_dir(parent_id, mtime_ms)?;
        self.mounts.retain(|m| m.mount_id != e.mount_id);
        self.mounts_changed = true;
        Ok(applied)
    }
}

fn id_in_use(path: &str, id: u64) -> Error {
    Error::NotPermitted {
        path: path.to_string(),
        reason: format!("inode id {id} is already in use"),
    }
}

/// `path` without its last `n` components.
fn ancestor(path: &str, n: usize) -> String {
    let mut p = path.to_string();
    for _ in 0..n {
        p = parent_of(&p);
    }
    p
}

fn parent_of(path: &str) -> String {
    match path.trim_end_matches('/').rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}
