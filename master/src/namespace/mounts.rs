//! Mount points: mounting an under-store at a new folder, unmounting one (the
//! namespace below goes, the under-store stays), and the mount table.

use super::requests::RequestKind;
use super::{now_ms, Namespace};
use crate::entries::{InodeRecord, MountEntry, MountRecord, Op, UnmountEntry};
use std::sync::atomic::Ordering;
use strata_common::ids::FileId;
use strata_common::types::{check_mount_options, MountOptions, MountPointInfo, RequestId};
use strata_common::{Error, Result, StrataPath};

impl Namespace {
    /// Mounts the under-store `uri` with `options` at `path`, which must not exist
    /// yet. The store is asked first ([`strata_ufs::UnderStore::check`]): a missing
    /// bucket or folder, or refused credentials, fail the mount and leave nothing.
    pub async fn mount(
        &self,
        path: &StrataPath,
        uri: &str,
        read_only: bool,
        options: &MountOptions,
        req: Option<&RequestId>,
    ) -> Result<()> {
        self.once(
            req,
            RequestKind::Mount,
            self.mount_once(path, uri, read_only, options, req),
        )
        .await
    }

    async fn mount_once(
        &self,
        path: &StrataPath,
        uri: &str,
        read_only: bool,
        options: &MountOptions,
        req: Option<&RequestId>,
    ) -> Result<()> {
        check_mount_options(options)?;
        let _guard = self.locks.lock(&[path]).await;
        if let Some(done) = self.answered(req, RequestKind::Mount)? {
            return done;
        }
        let r = self.resolve_synced(path).await?;
        if r.found().is_some() {
            return Err(Error::AlreadyExists {
                path: path.to_string(),
            });
        }
        self.check_parent(path, &r, false)?;
        if let Some(hit) = self.mount_for(path) {
            if hit.record.inode_id != FileId::ROOT.0 {
                return Err(Error::NotPermitted {
                    path: path.to_string(),
                    reason: format!(
                        "lies inside the mount {}; mounts cannot nest",
                        hit.record.path
                    ),
                });
            }
        }
        let ufs = self.stores.get(uri, options)?;
        for m in self.store.mounts() {
            if crate::store::uris_overlap(&m.uri, ufs.uri()) {
                return Err(Error::NotPermitted {
                    path: path.to_string(),
                    reason: format!("{uri} overlaps the mount {} ({})", m.path, m.uri),
                });
            }
        }
        ufs.check().await?;
        self.propose_mount(r.deepest().id, path, uri, read_only, options, req)
            .await
    }

    async fn propose_mount(
        &self,
        parent_id: u64,
        path: &StrataPath,
        uri: &str,
        read_only: bool,
        options: &MountOptions,
        req: Option<&RequestId>,
    ) -> Result<()> {
        let mount_id = self.next_mount.fetch_add(1, Ordering::Relaxed);
        let inode_id = if path.is_root() {
            FileId::ROOT.0
        } else {
            self.new_id()
        };
        let op = Op::Mount(MountEntry {
            parent_id,
            inode: Some(InodeRecord {
                id: inode_id,
                parent_id,
                name: path.name().unwrap_or_default().to_string(),
                is_dir: true,
                mtime_ms: now_ms(),
                persisted: true,
                mount_id,
                ..Default::default()
            }),
            mount: Some(MountRecord {
                mount_id,
                inode_id,
                path: path.to_string(),
                uri: uri.to_string(),
                read_only,
                options: options.clone(),
            }),
        });
        self.propose_deciding(req, RequestKind::Mount, op, ())
            .await?;
        Ok(())
    }

    /// Mounts `uri` at `/` if nothing is mounted there yet (first start).
    pub async fn ensure_root_mount(&self, uri: &str) -> Result<()> {
        if uri.is_empty() {
            return Ok(());
        }
        if let Some(m) = self.store.mounts().into_iter().find(|m| m.path == "/") {
            if m.uri != uri {
                tracing::warn!(
                    mounted = %m.uri,
                    configured = uri,
                    "root is already mounted; keeping the journaled mount"
                );
            }
            return Ok(());
        }
        strata_ufs::open(uri)?;
        self.propose_mount(
            0,
            &StrataPath::root(),
            uri,
            false,
            &MountOptions::new(),
            None,
        )
        .await
    }

    /// Removes the mount at `path` and its namespace (the under-store is untouched).
    pub async fn unmount(&self, path: &StrataPath, req: Option<&RequestId>) -> Result<()> {
        self.once(req, RequestKind::Unmount, self.unmount_once(path, req))
            .await
    }

    async fn unmount_once(&self, path: &StrataPath, req: Option<&RequestId>) -> Result<()> {
        let _guard = self.locks.lock(&[path]).await;
        if let Some(done) = self.answered(req, RequestKind::Unmount)? {
            return done;
        }
        if path.is_root() {
            return Err(Error::NotPermitted {
                path: "/".into(),
                reason: "the root mount cannot be unmounted".into(),
            });
        }
        let r = self.resolve(path)?;
        let Some(rec) = r.found() else {
            return Err(Error::NotFound {
                path: path.to_string(),
            });
        };
        if rec.mount_id == 0 {
            return Err(Error::NotAMountPoint {
                path: path.to_string(),
            });
        }
        let op = Op::Unmount(UnmountEntry {
            mount_id: rec.mount_id,
            path: path.to_string(),
        });
        let (applied, ()) = self
            .propose_deciding(req, RequestKind::Unmount, op, ())
            .await?;
        self.after_removal(&applied);
        Ok(())
    }

    /// The mount table.
    pub fn mount_table(&self) -> Vec<MountPointInfo> {
        self.store
            .mounts()
            .into_iter()
            .filter_map(|m| {
                Some(MountPointInfo {
                    path: StrataPath::parse(&m.path).ok()?,
                    uri: m.uri,
                    read_only: m.read_only,
                    mount_id: m.mount_id,
                    options: m.options,
                })
            })
            .collect()
    }
}
