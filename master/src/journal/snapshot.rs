//! Snapshots of the state machine on disk, beside the metastore
//! (`<metastore_dir>-snapshots`: on its filesystem, so a checkpoint is hard
//! links, not copies):
//!
//! - `snap-<index>-<term>/`: the latest snapshot, a RocksDB checkpoint of the
//!   metastore holding exactly the entries up to `index`, with `snapshot.meta`
//!   (Raft's snapshot metadata: index, term, membership). Written as
//!   `snap-….tmp` and renamed when complete; older ones are removed once a newer
//!   one is in place. The log is never compacted past the latest snapshot, so a
//!   member too far behind for the log can always be sent one.
//! - `incoming-<index>-<term>/`: a snapshot received from the leader, complete
//!   (received as `incoming-….tmp`, renamed when every file arrived and was
//!   synced), waiting to be installed; once installed it becomes this master's
//!   latest snapshot.
//! - `work/`: table files exported while installing.
//!
//! A checkpoint shares its table files with the metastore through hard links, so
//! a snapshot costs little disk until the metastore compacts those files away.

use crate::store::MetaStore;
use protobuf::Message as _;
use raft::eraftpb::SnapshotMetadata;
use std::path::{Path, PathBuf};
use strata_common::{Error, Result};

/// The metadata file inside a snapshot folder.
pub const META_FILE: &str = "snapshot.meta";
/// Longest file name accepted in a snapshot received from a peer.
pub const MAX_FILE_NAME: usize = 255;
/// Most files accepted in a snapshot received from a peer (a checkpoint holds a
/// few per level of the store's tree, plus its manifest and options).
pub const MAX_FILES: usize = 100_000;

/// The snapshot folder of the metastore in `metastore_dir`.
pub fn folder_for(metastore_dir: &Path) -> PathBuf {
    let name = metastore_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metastore".into());
    metastore_dir.with_file_name(format!("{name}-snapshots"))
}

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("journal snapshots: {what} {}: {e}", path.display()))
}

/// Whether `name` may be the name of a file in a snapshot: a plain name, no
/// folder, nothing hidden.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Syncs a folder, so that names created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

/// The snapshots of one master.
#[derive(Clone)]
pub struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    /// Opens the snapshot folder of the metastore in `metastore_dir`, creating it,
    /// and returns the latest complete snapshot's metadata. Unfinished folders are
    /// removed.
    pub fn open(metastore_dir: &Path) -> Result<(Snapshots, Option<SnapshotMetadata>)> {
        let dir = folder_for(metastore_dir);
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        let s = Snapshots { dir };
        let mut latest: Option<SnapshotMetadata> = None;
        for entry in std::fs::read_dir(&s.dir).map_err(|e| io("cannot list", &s.dir, e))? {
            let entry = entry.map_err(|e| io("cannot list", &s.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.ends_with(".tmp") || name.ends_with(".old") {
                std::fs::remove_dir_all(&path).map_err(|e| io("cannot remove", &path, e))?;
                continue;
            }
            if !name.starts_with("snap-") {
                continue;
            }
            let meta = match read_meta(&path) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!("journal: dropping an unreadable snapshot: {e}");
                    std::fs::remove_dir_all(&path).map_err(|e| io("cannot remove", &path, e))?;
                    continue;
                }
            };
            if latest.as_ref().is_none_or(|l| meta.index > l.index) {
                latest = Some(meta);
            }
        }
        if let Some(l) = &latest {
            s.remove_snapshots_before(l.index)?;
        }
        Ok((s, latest))
    }

    /// Where snapshot (`index`, `term`) lives.
    pub fn path(&self, index: u64, term: u64) -> PathBuf {
        self.dir.join(format!("snap-{index}-{term}"))
    }

    /// Where snapshot (`index`, `term`) received from a peer waits to be installed.
    pub fn incoming(&self, index: u64, term: u64) -> PathBuf {
        self.dir.join(format!("incoming-{index}-{term}"))
    }

    /// A folder for the table files an installation exports.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Takes a snapshot of `store` as it is now, which must be exactly the entries
    /// up to `meta.index`, and makes it the latest.
    pub fn take(&self, store: &MetaStore, meta: &SnapshotMetadata) -> Result<()> {
        let done = self.path(meta.index, meta.term);
        if done.exists() {
            return Ok(());
        }
        let tmp = done.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io("cannot remove", &tmp, e))?;
        }
        store.checkpoint(&tmp)?;
        write_meta(&tmp, meta)?;
        std::fs::rename(&tmp, &done).map_err(|e| io("cannot rename", &tmp, e))?;
        sync_dir(&self.dir)?;
        self.remove_snapshots_before(meta.index)
    }

    /// Makes the installed snapshot received as `incoming` the latest.
    pub fn adopt_incoming(&self, meta: &SnapshotMetadata) -> Result<()> {
        let from = self.incoming(meta.index, meta.term);
        let to = self.path(meta.index, meta.term);
        if to.exists() {
            std::fs::remove_dir_all(&from).map_err(|e| io("cannot remove", &from, e))?;
        } else {
            write_meta(&from, meta)?;
            std::fs::rename(&from, &to).map_err(|e| io("cannot rename", &from, e))?;
        }
        sync_dir(&self.dir)?;
        self.remove_snapshots_before(meta.index)
    }

    /// Removes snapshots, received ones included, older than `index`.
    fn remove_snapshots_before(&self, index: u64) -> Result<()> {
        for entry in std::fs::read_dir(&self.dir).map_err(|e| io("cannot list", &self.dir, e))? {
            let entry = entry.map_err(|e| io("cannot list", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let older = ["snap-", "incoming-"].iter().any(|p| {
                name.strip_prefix(p)
                    .and_then(|rest| rest.split('-').next()?.parse::<u64>().ok())
                    .is_some_and(|i| i < index)
            });
            if older {
                // Renamed first, so a transfer listing it meanwhile sees it gone
                // rather than a part of it; gone already is fine.
                let path = entry.path();
                let doomed = path.with_extension("old");
                match std::fs::rename(&path, &doomed) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("cannot rename", &path, e)),
                }
                match std::fs::remove_dir_all(&doomed) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io("cannot remove", &doomed, e))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The files of snapshot (`index`, `term`), opened (so a newer snapshot
    /// replacing it meanwhile does not cut a transfer short), with their lengths.
    pub fn open_files(&self, index: u64, term: u64) -> Result<Vec<(String, std::fs::File, u64)>> {
        let dir = self.path(index, term);
        if !dir.exists() {
            return Err(Error::NotFound {
                path: format!("snapshot {index} of term {term} (a newer one replaced it)"),
            });
        }
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io("cannot list", &dir, e))? {
            let entry = entry.map_err(|e| io("cannot list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let file = std::fs::File::open(&path).map_err(|e| io("cannot open", &path, e))?;
            let len = file
                .metadata()
                .map_err(|e| io("cannot read", &path, e))?
                .len();
            out.push((name, file, len));
        }
        // A newer snapshot renames an old one away before removing its files: if
        // the folder is still here, every file was listed and opened before that.
        if !dir.exists() {
            return Err(Error::NotFound {
                path: format!("snapshot {index} of term {term} (a newer one replaced it)"),
            });
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn write_meta(dir: &Path, meta: &SnapshotMetadata) -> Result<()> {
    let path = dir.join(META_FILE);
    let bytes = meta
        .write_to_bytes()
        .map_err(|e| io("cannot encode the metadata of", dir, e))?;
    std::fs::write(&path, bytes).map_err(|e| io("cannot write", &path, e))?;
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("cannot sync", &path, e))?;
    sync_dir(dir)
}

/// The metadata of the snapshot in `dir`.
pub fn read_meta(dir: &Path) -> Result<SnapshotMetadata> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).map_err(|e| io("cannot read", &path, e))?;
    SnapshotMetadata::parse_from_bytes(&bytes).map_err(|e| io("corrupt", &path, e))
}
