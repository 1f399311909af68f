//! Metadata sync of a folder with its under-store: what the under-store has and
//! the namespace lacks is loaded (in bounded entries that name the folder's
//! version, so a concurrent delete is never undone), what it no longer has is
//! dropped when no bytes live only in Strata, and writers' staged copies are
//! swept.

use super::resolve::MountHit;
use super::{
    now_ms, recorded_fingerprint, Namespace, LOAD_BATCH, SYNC_ATTEMPTS, SYNC_DROP_WALK_MAX,
    WALK_PAGE,
};
use crate::entries::{DeleteEntry, InodeRecord, LoadChildrenEntry, Op, RefreshFileEntry};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use strata_common::types::{mount_sync_interval, SyncInterval};
use strata_common::{Error, Result, StrataPath};
use strata_ufs::UfsStatus;

/// What [`Namespace::sync_children`] did.
#[derive(Debug, Default)]
pub(super) struct ChildrenSync {
    /// Keys of the copies staged in the folder (see [`Namespace::sweep_staged`]).
    pub(super) staged: Vec<u64>,
    /// False when concurrent changes kept interrupting the load.
    pub(super) complete: bool,
}

/// What a recorded sync time is for: an inode's own status, or a folder's children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Synced {
    /// The inode compared with the under-store's status of its path.
    Status,
    /// A folder's children compared with the under-store's listing.
    Children,
}

impl Namespace {
    /// The sync interval for a path of mount `hit`: the request's, else the
    /// mount's `sync_interval` option, else the master's `ufs_sync_interval`.
    pub(super) fn interval_for(&self, hit: &MountHit, asked: Option<SyncInterval>) -> SyncInterval {
        asked
            .or_else(|| mount_sync_interval(&hit.record.options).ok().flatten())
            .unwrap_or(self.sync_default)
    }

    /// Whether `what` of inode `id` is due for a comparison with the under-store.
    /// With `Never`, a folder's children are compared once (the first listing this
    /// master serves, as the sync times are kept in memory) and a file never: it
    /// was looked at when loaded.
    fn sync_due(&self, id: u64, what: Synced, interval: SyncInterval) -> bool {
        match (interval, self.synced.get(&(id, what))) {
            (SyncInterval::Always, _) => true,
            (SyncInterval::Never, last) => what == Synced::Children && last.is_none(),
            (SyncInterval::Every(_), None) => true,
            (i, Some(at)) => i.is_due(at.elapsed()),
        }
    }

    /// Records that `what` of inode `id` matched the under-store as of `at`. A
    /// folder's listing is recorded whatever interval asked (a later request
    /// with `-1` must not list it again); a file's status only when asked with an
    /// interval, so that lookups at `0` (the default) do not crowd the bounded
    /// record with times nobody reads.
    fn mark_synced(&self, id: u64, what: Synced, at: Instant, interval: SyncInterval) {
        if what == Synced::Children || interval != SyncInterval::Always {
            self.synced.insert((id, what), at);
        }
    }

    /// Compares `rec`, found at `path`, with the under-store when its sync interval
    /// (`asked`, else its mount's, else the master's) says it is due. A file
    /// changed in place is refreshed: replaced by a new inode for the copy found,
    /// so no block cached from the old bytes is served as the new ones. A file or
    /// folder gone, or replaced by one of the other kind, is dropped unless it
    /// holds bytes only Strata has. Returns what `path` names afterwards.
    pub(super) async fn sync_found(
        &self,
        path: &StrataPath,
        rec: Arc<InodeRecord>,
        asked: Option<SyncInterval>,
    ) -> Result<Option<Arc<InodeRecord>>> {
        // Mount points, folders made in Strata alone, files being written or not
        // persisted: the under-store is not their reference.
        if rec.mount_id != 0 || !rec.persisted || (!rec.is_dir && !rec.complete) {
            return Ok(Some(rec));
        }
        let Some(hit) = self.mount_for(path) else {
            return Ok(Some(rec));
        };
        let interval = self.interval_for(&hit, asked);
        if !self.sync_due(rec.id, Synced::Status, interval) {
            return Ok(Some(rec));
        }
        let started = Instant::now();
        let ufs = self.under_store(&hit.record)?;
        let upath = hit.ufs_path()?;
        let agrees = |rec: &InodeRecord, found: &Option<UfsStatus>| match found {
            Some(st) if st.is_dir == rec.is_dir => {
                rec.is_dir
                    || recorded_fingerprint(rec)
                        .mismatch(&st.fingerprint())
                        .is_none()
            }
            _ => false,
        };
        // The common case, unlocked: the under-store agrees. One that does not
        // answer leaves the recorded view served (cached bytes stay readable).
        let found = match ufs.status(&upath).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(%path, "cannot compare with the under-store; serving Strata's view: {e}");
                return Ok(Some(rec));
            }
        };
        if agrees(&rec, &found) {
            self.mark_synced(rec.id, Synced::Status, started, interval);
            return Ok(Some(rec));
        }
        // Locked, a mutation of the path is either done or not begun: look again,
        // so a half-done rename or overwrite is never taken for a change outside.
        let _guard = self.locks.lock(&[path]).await;
        let rec = match self.resolve(path)?.found() {
            Some(r) if r.id == rec.id => r.clone(),
            other => return Ok(other.cloned()), // changed meanwhile: as good
        };
        let found = ufs.status(&upath).await?;
        let now = match found {
            _ if agrees(&rec, &found) => Some(rec),
            Some(st) if st.is_dir == rec.is_dir => {
                let reason = recorded_fingerprint(&rec)
                    .mismatch(&st.fingerprint())
                    .unwrap_or_default();
                self.refresh(path, &rec, &st, &reason).await?
            }
            found => {
                let parent = self.inode(rec.parent_id)?;
                if !self.drop_gone(path, &parent, &rec).await? {
                    return Ok(Some(rec)); // kept: only Strata has some of its bytes
                }
                match found {
                    // The other kind now: load what is there.
                    Some(_) => self.resolve_synced(path).await?.found().cloned(),
                    None => None,
                }
            }
        };
        if let Some(r) = &now {
            self.mark_synced(r.id, Synced::Status, started, interval);
        }
        Ok(now)
    }

    /// Replaces file `rec` at `path` by a new inode for the under-store copy `st`
    /// (see [`RefreshFileEntry`]); the caller holds `path`'s lock. Returns what
    /// `path` names afterwards.
    async fn refresh(
        &self,
        path: &StrataPath,
        rec: &InodeRecord,
        st: &UfsStatus,
        reason: &str,
    ) -> Result<Option<Arc<InodeRecord>>> {
        // A file found anew: the block size a load gives it, not the old one's.
        let mut new = self.loaded_record(rec.parent_id, st);
        new.name = rec.name.clone();
        tracing::info!(%path, old = rec.id, new = new.id, "changed in the under-store ({reason}): refreshed");
        let entry = RefreshFileEntry {
            old_id: rec.id,
            path: path.to_string(),
            record: Some(new.clone()),
        };
        match self.propose(Op::RefreshFile(entry)).await {
            Ok(applied) => {
                self.after_removal(&applied);
                Ok(Some(Arc::new(new)))
            }
            // Changed through Strata meanwhile: what is there now is current.
            Err(Error::NotFound { .. } | Error::NotPermitted { .. }) => {
                Ok(self.resolve(path)?.found().cloned())
            }
            Err(e) => Err(e),
        }
    }

    /// Drops `rec`, at `path` in folder `parent`, gone from the under-store;
    /// false (and kept, with a log line) for a folder below which some file lives
    /// in Strata alone (written `MUST_CACHE`, being written): those bytes would be
    /// lost with it. True too when it went meanwhile.
    async fn drop_gone(
        &self,
        path: &StrataPath,
        parent: &InodeRecord,
        rec: &InodeRecord,
    ) -> Result<bool> {
        if rec.is_dir && !self.only_persisted_below(path, rec)? {
            tracing::warn!(
                %path,
                "folder gone from the under-store keeps files that only Strata holds; kept"
            );
            return Ok(false);
        }
        let gone = DeleteEntry {
            parent_id: parent.id,
            path: path.to_string(),
            name: rec.name.clone(),
            id: rec.id,
            recursive: rec.is_dir,
            mtime_ms: now_ms(),
        };
        match self.propose(Op::Delete(gone)).await {
            Ok(applied) => {
                self.after_removal(&applied);
                Ok(true)
            }
            // Renamed or deleted through Strata meanwhile.
            Err(Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Compares folder `dir` at `path` with its under-store listing when its sync
    /// interval says it is due (see [`Self::sync_children`]), then sweeps the
    /// staged copies the listing found.
    pub(super) async fn sync_listing(
        &self,
        path: &StrataPath,
        dir: &InodeRecord,
        asked: Option<SyncInterval>,
    ) -> Result<()> {
        let Some(hit) = self.mount_for(path) else {
            return Ok(());
        };
        let interval = self.interval_for(&hit, asked);
        if !self.sync_due(dir.id, Synced::Children, interval) {
            return Ok(());
        }
        let started = Instant::now();
        let synced = match self.sync_children(path, dir.id, true).await {
            Ok(s) => s,
            // The under-store does not answer: the namespace's view is served as
            // it stands (cached data stays reachable), and the next listing tries
            // again.
            Err(e @ Error::UnderStore { .. }) => {
                tracing::warn!(%path, "cannot list the under-store; serving Strata's view: {e}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.sweep_listed(path, dir.id, &synced.staged).await?;
        if synced.complete {
            self.mark_synced(dir.id, Synced::Children, started, interval);
        }
        Ok(())
    }

    /// Compares folder `dir_id` at `path` with the under-store's listing, read a
    /// page at a time: loads the children the under-store has and the namespace
    /// lacks (in bounded entries that name the folder's version, so a concurrent
    /// delete is never undone), refreshes the complete, persisted files changed in
    /// place, and drops the complete, persisted files and all-persisted folders it
    /// no longer has, or has as the other kind. Memory holds one page, the ids of
    /// the folder's candidates for dropping and an 8-byte hash per listed name,
    /// never the whole listing. Returns the keys of the copies staged in the
    /// folder (see [`Self::sweep_staged`]).
    ///
    /// With `refresh` false (the caller holds the folder's lock, which a refresh
    /// of a child would take again), changed files are left for a later sync.
    pub(super) async fn sync_children(
        &self,
        path: &StrataPath,
        dir_id: u64,
        refresh: bool,
    ) -> Result<ChildrenSync> {
        let Some(hit) = self.mount_for(path) else {
            return Ok(ChildrenSync::default());
        };
        let ufs = self.under_store(&hit.record)?;
        let upath = hit.ufs_path()?;
        let mut staged = Vec::new();
        for _ in 0..SYNC_ATTEMPTS {
            // The version is read before listing: apply refuses a load if the
            // directory changed after this point (a delete must not be undone).
            let version = self.inode(dir_id)?.children_version;
            // Files that are complete and persisted, and persisted folders (not
            // mount points), before the listing starts: if the listing lacks one,
            // it was removed or renamed outside Strata, or by a leader that died
            // before its journal entry. (One completed after this point is not a
            // candidate, however the listing raced it.) Only their ids and kinds
            // are kept.
            let mut candidates: Vec<(u64, bool)> = Vec::new();
            self.each_child_page(dir_id, |page| {
                for (_, id) in page {
                    if let Some(rec) = self.store.get_inode(*id)? {
                        let file = !rec.is_dir && rec.complete && rec.persisted;
                        let folder = rec.is_dir && rec.persisted && rec.mount_id == 0;
                        if file || folder {
                            candidates.push((*id, rec.is_dir));
                        }
                    }
                }
                Ok(())
            })?;
            candidates.sort_unstable();
            staged.clear();
            let mut listed: HashSet<u64> = HashSet::new();
            let mut expected = version;
            let mut batch = Vec::new();
            let mut interrupted = false;
            let mut token: Option<String> = None;
            loop {
                let page = match ufs.list_page(&upath, token.as_deref()).await {
                    Ok(p) => p,
                    // The directory exists only in Strata (written MUST_CACHE):
                    // nothing to load.
                    Err(Error::NotFound { .. } | Error::NotADirectory { .. })
                        if token.is_none() =>
                    {
                        return Ok(ChildrenSync {
                            staged,
                            complete: true,
                        })
                    }
                    // Gone between two pages: nothing can be concluded.
                    Err(e @ (Error::NotFound { .. } | Error::NotADirectory { .. })) => {
                        return Err(Error::UnderStore {
                            path: path.to_string(),
                            reason: format!("the folder went away while being listed: {e}"),
                            temporary: true,
                        })
                    }
                    Err(e) => return Err(e),
                };
                // Tests hold a sync here, between its look at the under-store and
                // what it does with it.
                self.after_under_store().await;
                staged.extend(page.staged);
                for st in &page.entries {
                    // A name both a file and a folder (S3): the file, listed first
                    // (its key sorts before the folder's), is what the name is.
                    if st.is_dir && listed.contains(&name_key(&st.name, false)) {
                        continue;
                    }
                    listed.insert(name_key(&st.name, st.is_dir));
                    if interrupted {
                        continue; // listing on only to see what is gone
                    }
                    match self.store.get_child(dir_id, &st.name)? {
                        None => batch.push(self.loaded_record(dir_id, st)),
                        Some(id) if !st.is_dir => {
                            if let Some(rec) = self.store.get_inode(id)? {
                                if refresh && refreshable(&rec, st) {
                                    self.refresh_listed(path, dir_id, id, st).await?;
                                }
                            }
                        }
                        Some(_) => {}
                    }
                    if batch.len() == LOAD_BATCH {
                        // Each load names the version the one before left, so a
                        // change in between (a delete through Strata) stops the
                        // load and the listing starts over.
                        match self.load_batch(path, dir_id, expected, &mut batch).await? {
                            Some(v) => expected = v,
                            None => {
                                // The folder changed: stop loading (the next
                                // attempt lists again), but finish the listing
                                // so that what is gone still goes.
                                interrupted = true;
                                batch.clear();
                            }
                        }
                    }
                }
                match page.next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            if !interrupted
                && self
                    .load_batch(path, dir_id, expected, &mut batch)
                    .await?
                    .is_none()
            {
                interrupted = true;
            }
            // Gone from the under-store: candidates whose name and kind the
            // listing lacks, found by reading the namespace a page at a time.
            let mut gone = Vec::new();
            self.each_child_page(dir_id, |page| {
                for (name, id) in page {
                    let Ok(i) = candidates.binary_search_by_key(id, |(id, _)| *id) else {
                        continue;
                    };
                    let was_dir = candidates[i].1;
                    if !listed.contains(&name_key(name, was_dir)) {
                        let other_kind = listed.contains(&name_key(name, !was_dir));
                        gone.push((name.clone(), *id, other_kind));
                    }
                }
                Ok(())
            })?;
            drop((candidates, listed));
            let dir = self.inode(dir_id)?;
            let mut replaced = false;
            for (name, id, other_kind) in gone {
                let Some(rec) = self.store.get_inode(id)? else {
                    continue; // removed meanwhile
                };
                let dropped = self.drop_gone(&path.join(&name)?, &dir, &rec).await?;
                replaced |= dropped && other_kind;
            }
            if !replaced && !interrupted {
                return Ok(ChildrenSync {
                    staged,
                    complete: true,
                });
            }
            // Interrupted, or a name now of the other kind: list again to load
            // what is there.
        }
        // Changes kept interrupting: what was loaded stays, and the next listing
        // compares again.
        Ok(ChildrenSync {
            staged,
            complete: false,
        })
    }

    /// Refreshes file `id`, listed in folder `dir_id` at `path` with status `st`
    /// that differs from its record, under the file's lock and only if the
    /// folder still holds it and it still differs.
    async fn refresh_listed(
        &self,
        path: &StrataPath,
        dir_id: u64,
        id: u64,
        listed: &UfsStatus,
    ) -> Result<()> {
        let child = path.join(&listed.name)?;
        let _guard = self.locks.lock(&[&child]).await;
        if self.store.get_child(dir_id, &listed.name)? != Some(id) {
            return Ok(()); // changed through Strata meanwhile
        }
        let Some(rec) = self.store.get_inode(id)? else {
            return Ok(());
        };
        // The listing may predate a write through Strata that completed since:
        // the copy is looked at again now that no mutation of it can be under way.
        let Some(hit) = self.mount_for(&child) else {
            return Ok(());
        };
        let ufs = self.under_store(&hit.record)?;
        let Some(st) = ufs.status(&hit.ufs_path()?).await? else {
            return Ok(()); // gone: the listing's end drops it
        };
        if refreshable(&rec, &st) {
            let reason = recorded_fingerprint(&rec)
                .mismatch(&st.fingerprint())
                .unwrap_or_default();
            self.refresh(&child, &rec, &st, &reason).await?;
        }
        Ok(())
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

/// Whether file `rec` is one whose record the under-store's copy `st` replaces:
/// complete and persisted (the under-store holds its bytes), and described
/// otherwise than recorded.
fn refreshable(rec: &InodeRecord, st: &UfsStatus) -> bool {
    !rec.is_dir
        && !st.is_dir
        && rec.complete
        && rec.persisted
        && rec.mount_id == 0
        && recorded_fingerprint(rec)
            .mismatch(&st.fingerprint())
            .is_some()
}

/// A listed name and kind as 8 bytes. Two that collide make a gone entry look
/// listed: it is kept until a later sync, never dropped by mistake.
fn name_key(name: &str, is_dir: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    is_dir.hash(&mut h);
    h.finish()
}
