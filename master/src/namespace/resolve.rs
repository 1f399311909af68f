//! Resolving paths: walking the namespace from the root, finding a path's
//! mount, and loading from the under-store what a path names and the namespace
//! lacks (lookups take the path's lock while they load, so a load never races a
//! mutation of the same path).

use super::{Namespace, SYNC_ATTEMPTS};
use crate::entries::{CreateEntry, InodeRecord, MountRecord, Op};
use std::sync::Arc;
use strata_common::ids::{block_count, FileId, MAX_BLOCKS_PER_FILE};
use strata_common::types::{FileInfo, FileKind, UfsLocation};
use strata_common::{Error, Result, StrataPath};
use strata_ufs::{UfsPath, UfsStatus};

/// A path resolved as far as the namespace reaches.
pub(super) struct Resolved {
    /// Inodes from the root down to the deepest existing component.
    pub(super) chain: Vec<Arc<InodeRecord>>,
    /// Components below that, which do not exist.
    pub(super) missing: Vec<String>,
}

impl Resolved {
    pub(super) fn deepest(&self) -> &Arc<InodeRecord> {
        // The chain always holds at least the root.
        &self.chain[self.chain.len() - 1]
    }

    pub(super) fn found(&self) -> Option<&Arc<InodeRecord>> {
        self.missing.is_empty().then(|| self.deepest())
    }
}

/// A path's mount: the record and the path below the mount root.
pub(super) struct MountHit {
    pub(super) record: MountRecord,
    pub(super) relative: String,
}

impl MountHit {
    pub(super) fn location(&self) -> Result<UfsLocation> {
        UfsLocation::new(self.record.uri.clone(), &self.relative)
    }

    pub(super) fn ufs_path(&self) -> Result<UfsPath> {
        UfsPath::parse(&self.relative)
    }

    pub(super) fn writable(&self, path: &StrataPath) -> Result<()> {
        if self.record.read_only {
            return Err(Error::NotPermitted {
                path: path.to_string(),
                reason: format!("mount {} is read-only", self.record.path),
            });
        }
        Ok(())
    }
}

impl Namespace {
    pub(super) fn inode(&self, id: u64) -> Result<Arc<InodeRecord>> {
        self.store
            .get_inode(id)?
            .ok_or_else(|| Error::internal(format!("inode {id} is referenced but missing")))
    }

    pub(super) fn resolve(&self, path: &StrataPath) -> Result<Resolved> {
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

    pub(super) fn mount_for(&self, path: &StrataPath) -> Option<MountHit> {
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

    pub(super) fn mounts_below(&self, path: &StrataPath) -> Option<String> {
        self.store.mounts().into_iter().map(|m| m.path).find(|p| {
            StrataPath::parse(p)
                .map(|mp| mp != *path && mp.starts_with(path))
                .unwrap_or(false)
        })
    }

    pub(super) fn loaded_record(&self, parent_id: u64, st: &UfsStatus) -> InodeRecord {
        InodeRecord {
            id: self.new_id(),
            parent_id,
            name: st.name.clone(),
            is_dir: st.is_dir,
            mtime_ms: st.mtime_ms,
            length: st.length,
            // Large enough that the file fits in the blocks a file may have.
            block_size: if st.is_dir {
                0
            } else {
                self.default_block_size
                    .max(st.length.div_ceil(MAX_BLOCKS_PER_FILE).next_power_of_two())
            },
            complete: !st.is_dir,
            persisted: true,
            mount_id: 0,
            children_version: 0,
            ufs_version: st.version.clone(),
        }
    }

    /// Resolves `path`, loading from the under-store what the namespace lacks.
    pub(super) async fn resolve_synced(&self, path: &StrataPath) -> Result<Resolved> {
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
    pub(super) async fn load_missing(&self, path: &StrataPath, r: &Resolved) -> Result<bool> {
        if r.missing.is_empty() || !r.deepest().is_dir {
            return Ok(false);
        }
        let Some(hit) = self.mount_for(path) else {
            return Ok(false);
        };
        let ufs = self.under_store(&hit.record)?;
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
    pub(super) async fn lookup_unlocked(&self, path: &StrataPath) -> Result<Arc<InodeRecord>> {
        if let Some(rec) = self.resolve(path)?.found() {
            return Ok(rec.clone());
        }
        let _guard = self.locks.lock(&[path]).await;
        self.lookup(path).await
    }

    /// The inode at `path`, loading it from the under-store if need be.
    pub(super) async fn lookup(&self, path: &StrataPath) -> Result<Arc<InodeRecord>> {
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

    pub(super) fn info(&self, path: StrataPath, rec: &InodeRecord) -> Result<FileInfo> {
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

    /// The path of inode `id` now; `None` if it was deleted (or lies in a deleted
    /// folder).
    pub(super) fn current_path(&self, id: FileId) -> Result<Option<StrataPath>> {
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
}

pub(super) fn prefix_path<S: AsRef<str>>(names: &[S]) -> String {
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
