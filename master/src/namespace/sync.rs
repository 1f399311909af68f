//! Metadata sync of a folder with its under-store: what the under-store has and
//! the namespace lacks is loaded (in bounded entries that name the folder's
//! version, so a concurrent delete is never undone), what it no longer has is
//! dropped when no bytes live only in Strata, and writers' staged copies are
//! swept.

use super::{now_ms, Namespace, LOAD_BATCH, SYNC_ATTEMPTS, SYNC_DROP_WALK_MAX, WALK_PAGE};
use crate::entries::{DeleteEntry, InodeRecord, LoadChildrenEntry, Op};
use strata_common::{Error, Result, StrataPath};

impl Namespace {
    /// Loads the children the under-store has and the namespace lacks, and drops the
    /// complete, persisted files and the all-persisted folders it no longer has. Returns the keys of the copies
    /// staged in the folder when it was last listed (see [`Self::sweep_staged`]).
    pub(super) async fn sync_children(&self, path: &StrataPath, dir_id: u64) -> Result<Vec<u64>> {
        let Some(hit) = self.mount_for(path) else {
            return Ok(Vec::new());
        };
        let ufs = self.under_store(&hit.record)?;
        let mut staged = Vec::new();
        for _ in 0..SYNC_ATTEMPTS {
            // The version is read before listing: apply refuses the load if the
            // directory changed after this point (a delete must not be undone).
            let version = self.inode(dir_id)?.children_version;
            // Files that are complete and persisted, and persisted folders (not
            // mount points), before the listing starts: if the listing lacks one,
            // it was removed or renamed outside Strata, or by a leader that died
            // before its journal entry. (One completed after this point is not a
            // candidate, however the listing raced it.) Only their ids are kept,
            // 8 bytes each.
            let mut persisted_ids = Vec::new();
            self.each_child_page(dir_id, |page| {
                for (_, id) in page {
                    if let Some(rec) = self.store.get_inode(*id)? {
                        let file = !rec.is_dir && rec.complete && rec.persisted;
                        let folder = rec.is_dir && rec.persisted && rec.mount_id == 0;
                        if file || folder {
                            persisted_ids.push(*id);
                        }
                    }
                }
                Ok(())
            })?;
            persisted_ids.sort_unstable();
            let listed = match ufs.list(&hit.ufs_path()?).await {
                Ok(v) => v,
                // The directory exists only in Strata (written MUST_CACHE): nothing to load.
                Err(Error::NotFound { .. } | Error::NotADirectory { .. }) => return Ok(staged),
                Err(e) => return Err(e),
            };
            staged = listed.staged;
            let mut listed = listed.entries;
            if !listed.is_sorted_by(|a, b| a.name <= b.name) {
                listed.sort_by(|a, b| a.name.cmp(&b.name));
            }
            // Gone from the under-store: candidates the listing lacks, found by
            // reading the namespace a page at a time against the sorted listing.
            let mut gone = Vec::new();
            self.each_child_page(dir_id, |page| {
                for (name, id) in page {
                    if persisted_ids.binary_search(id).is_ok()
                        && listed
                            .binary_search_by(|st| st.name.as_str().cmp(name))
                            .is_err()
                    {
                        gone.push((name.clone(), *id));
                    }
                }
                Ok(())
            })?;
            drop(persisted_ids);
            let mut removed_any = false;
            for (name, id) in gone {
                let child_path = path.join(&name)?;
                let Some(rec) = self.store.get_inode(id)? else {
                    continue; // removed meanwhile
                };
                // A folder goes only if nothing below it lives in Strata alone
                // (a file written MUST_CACHE, one being written): those bytes
                // would be lost with it.
                if rec.is_dir && !self.only_persisted_below(&child_path, &rec)? {
                    tracing::warn!(
                        path = %child_path,
                        "folder gone from the under-store keeps files that only Strata holds; kept"
                    );
                    continue;
                }
                let gone = DeleteEntry {
                    parent_id: dir_id,
                    path: child_path.to_string(),
                    name,
                    id,
                    recursive: rec.is_dir,
                    mtime_ms: now_ms(),
                };
                match self.propose(Op::Delete(gone)).await {
                    Ok(applied) => {
                        self.after_removal(&applied);
                        removed_any = true;
                    }
                    // Renamed or deleted through Strata meanwhile.
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if removed_any {
                continue; // the directory changed: list again before loading
            }
            // Load what the namespace lacks in bounded entries: each names the
            // version the one before it left, so a change in between (a delete
            // through Strata) stops the load and the listing starts over.
            let mut expected = version;
            let mut batch = Vec::new();
            let mut interrupted = false;
            for st in &listed {
                if self.store.get_child(dir_id, &st.name)?.is_none() {
                    batch.push(self.loaded_record(dir_id, st));
                }
                if batch.len() == LOAD_BATCH {
                    match self.load_batch(path, dir_id, expected, &mut batch).await? {
                        Some(v) => expected = v,
                        None => {
                            interrupted = true;
                            break;
                        }
                    }
                }
            }
            if !interrupted
                && self
                    .load_batch(path, dir_id, expected, &mut batch)
                    .await?
                    .is_some()
            {
                return Ok(staged);
            }
        }
        Ok(staged)
    }

    /// Whether every file below folder `rec` is complete and persisted (so the
    /// under-store has its bytes), looking at [`SYNC_DROP_WALK_MAX`] files at most
    /// (a bigger folder counts as not).
    fn only_persisted_below(&self, path: &StrataPath, rec: &InodeRecord) -> Result<bool> {
        let mut seen = 0usize;
        let mut only = true;
        let walked = self.walk_files(path, rec, |_, _, f| {
            seen += 1;
            if seen > SYNC_DROP_WALK_MAX || !(f.complete && f.persisted) {
                only = false;
                return Err(Error::unavailable("walk stopped"));
            }
            Ok(())
        });
        match walked {
            Ok(()) => Ok(true),
            Err(_) if !only => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Calls `visit` with each page of directory `dir`'s entries, in name order.
    fn each_child_page(
        &self,
        dir: u64,
        mut visit: impl FnMut(&[(String, u64)]) -> Result<()>,
    ) -> Result<()> {
        let mut after: Option<String> = None;
        loop {
            let (page, more) = self
                .store
                .list_children_page(dir, after.as_deref(), WALK_PAGE)?;
            visit(&page)?;
            match page.last() {
                Some((last, _)) if more => after = Some(last.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// Removes the copies staged in the under-store folder of directory `dir_id`
    /// (at `path`) that no writer can publish any more: their file was deleted (its
    /// lease expired, or a delete raced the writer's start), completed, or lives in
    /// another folder. The caller holds `path`'s lock and has checked that `path`
    /// still names `dir_id`, so no file can be created in the folder, nor the folder
    /// replaced, meanwhile. A failure is logged; the next listing tries again.
    pub(super) async fn sweep_staged(&self, path: &StrataPath, dir_id: u64, staged: &[u64]) {
        if staged.is_empty() {
            return;
        }
        let Some(hit) = self.mount_for(path) else {
            return;
        };
        if hit.record.read_only {
            return;
        }
        let (ufs, dir) = match (self.under_store(&hit.record), hit.ufs_path()) {
            (Ok(u), Ok(d)) => (u, d),
            _ => return,
        };
        for &key in staged {
            let live = match self.store.get_inode(key) {
                Ok(Some(rec)) => !rec.is_dir && !rec.complete && rec.parent_id == dir_id,
                Ok(None) => false,
                Err(_) => true, // cannot tell: leave it
            };
            if live {
                continue;
            }
            match ufs.discard_in(&dir, key).await {
                Ok(()) => tracing::info!(%path, key, "removed a stale staged copy"),
                Err(e) => tracing::warn!(%path, key, "cannot remove a stale staged copy: {e}"),
            }
        }
    }

    /// Sweeps the staged copies a listing of `path` found, once `path` is locked and
    /// still names the folder `dir_id` that was listed.
    pub(super) async fn sweep_listed(
        &self,
        path: &StrataPath,
        dir_id: u64,
        staged: &[u64],
    ) -> Result<()> {
        if staged.is_empty() {
            return Ok(());
        }
        let _guard = self.locks.lock(&[path]).await;
        if self.resolve(path)?.found().map(|r| r.id) == Some(dir_id) {
            self.sweep_staged(path, dir_id, staged).await;
        }
        Ok(())
    }

    /// Proposes loading `batch` (emptied) into the directory, expecting its children
    /// at `expected`; the version after, or `None` if the directory changed first.
    async fn load_batch(
        &self,
        path: &StrataPath,
        dir_id: u64,
        expected: u64,
        batch: &mut Vec<InodeRecord>,
    ) -> Result<Option<u64>> {
        if batch.is_empty() {
            return Ok(Some(expected));
        }
        let applied = self
            .propose(Op::LoadChildren(LoadChildrenEntry {
                parent_id: dir_id,
                path: path.to_string(),
                children: std::mem::take(batch),
                expected_version: expected,
            }))
            .await?;
        Ok(applied.children_version)
    }
}
