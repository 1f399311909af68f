//! The local-folder under-store (`file:///abs/dir`).
//!
//! Invariant: every filesystem call goes through [`LocalStore::resolve`], which builds
//! the path from validated names and then checks that its deepest existing ancestor,
//! with symlinks resolved, still lies inside the canonical root. A symlink planted in
//! the folder therefore cannot lead Strata outside it.

use crate::{UfsPath, UfsReader, UfsStatus, UfsWriter, UnderStore};
use async_trait::async_trait;
use bytes::Bytes;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;
use strata_common::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Marks a file still being written; such files are never listed.
const TEMP_SUFFIX: &str = ".strata-tmp";

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A folder on a local (or locally mounted) filesystem.
#[derive(Debug)]
pub struct LocalStore {
    uri: String,
    root: PathBuf,
}

impl LocalStore {
    /// Opens the folder `dir` (absolute, existing) for the mount URI `uri`.
    pub fn open(uri: &str, dir: &str) -> Result<Self> {
        if !dir.starts_with('/') {
            return Err(Error::invalid_argument(
                "uri",
                format!("{uri:?}: a local under-store needs an absolute folder"),
            ));
        }
        let root = std::fs::canonicalize(dir).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound {
                path: uri.to_string(),
            },
            _ => Error::UnderStore {
                path: uri.to_string(),
                reason: e.to_string(),
                temporary: false,
            },
        })?;
        if !root.is_dir() {
            return Err(Error::NotADirectory {
                path: uri.to_string(),
            });
        }
        Ok(LocalStore {
            uri: uri.to_string(),
            root,
        })
    }

    fn display(&self, path: &UfsPath) -> String {
        if path.is_root() {
            self.uri.clone()
        } else {
            format!("{}{}", self.uri.trim_end_matches('/'), path)
        }
    }

    fn err(&self, path: &UfsPath, e: io::Error) -> Error {
        let p = self.display(path);
        use io::ErrorKind as K;
        match e.kind() {
            K::NotFound => Error::NotFound { path: p },
            K::AlreadyExists => Error::AlreadyExists { path: p },
            K::NotADirectory => Error::NotADirectory { path: p },
            K::IsADirectory => Error::IsADirectory { path: p },
            K::DirectoryNotEmpty => Error::DirectoryNotEmpty { path: p },
            K::Interrupted | K::TimedOut | K::WouldBlock => Error::UnderStore {
                path: p,
                reason: e.to_string(),
                temporary: true,
            },
            _ => Error::UnderStore {
                path: p,
                reason: e.to_string(),
                temporary: false,
            },
        }
    }

    /// The local path for `path`, refused if it would resolve outside the root.
    fn resolve(&self, path: &UfsPath) -> Result<PathBuf> {
        let mut full = self.root.clone();
        for c in path.components() {
            full.push(c);
        }
        let mut probe = full.clone();
        loop {
            match std::fs::canonicalize(&probe) {
                Ok(real) => {
                    if !real.starts_with(&self.root) {
                        return Err(Error::NotPermitted {
                            path: self.display(path),
                            reason: "resolves outside the mounted folder".to_string(),
                        });
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !probe.pop() || probe.as_os_str().len() < self.root.as_os_str().len() {
                        break;
                    }
                }
                Err(e) => return Err(self.err(path, e)),
            }
        }
        Ok(full)
    }

    fn status_of(name: String, meta: &std::fs::Metadata) -> UfsStatus {
        let mtime_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        UfsStatus {
            name,
            is_dir: meta.is_dir(),
            length: if meta.is_dir() { 0 } else { meta.len() },
            mtime_ms,
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("blocking task failed: {e}")))
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

#[async_trait]
impl UnderStore for LocalStore {
    fn uri(&self) -> &str {
        &self.uri
    }

    async fn status(&self, path: &UfsPath) -> Result<Option<UfsStatus>> {
        let full = self.resolve(path)?;
        match tokio::fs::metadata(&full).await {
            Ok(meta) => {
                let name = path.components().last().cloned().unwrap_or_default();
                Ok(Some(Self::status_of(name, &meta)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(path, e)),
        }
    }

    async fn list(&self, path: &UfsPath) -> Result<Vec<UfsStatus>> {
        let full = self.resolve(path)?;
        let root = self.root.clone();
        let listed = blocking(move || -> io::Result<Vec<UfsStatus>> {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&full)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue; // not UTF-8: cannot be named in the namespace
                };
                if is_temp_name(&name) || strata_common::path::validate_name(&name).is_err() {
                    continue;
                }
                // Skip entries (symlinks) that lead outside the root, and dangling ones.
                let Ok(real) = std::fs::canonicalize(entry.path()) else {
                    continue;
                };
                if !real.starts_with(&root) {
                    continue;
                }
                let meta = std::fs::metadata(&real)?;
                out.push(Self::status_of(name, &meta));
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await?;
        listed.map_err(|e| self.err(path, e))
    }

    async fn open_range(&self, path: &UfsPath, offset: u64, length: u64) -> Result<UfsReader> {
        let full = self.resolve(path)?;
        let mut file = tokio::fs::File::open(&full)
            .await
            .map_err(|e| self.err(path, e))?;
        file.seek(io::SeekFrom::Start(offset))
            .await
            .map_err(|e| self.err(path, e))?;
        Ok(Box::pin(file.take(length)))
    }

    async fn create(&self, path: &UfsPath) -> Result<Box<dyn UfsWriter>> {
        let full = self.resolve(path)?;
        if path.is_root() {
            return Err(Error::IsADirectory {
                path: self.display(path),
            });
        }
        let parent = full
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| self.err(path, e))?;
        // A short name: the target's own name may already be at the length limit.
        let temp = parent.join(format!(
            ".{}-{}{TEMP_SUFFIX}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| self.err(path, e))?;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            temp,
            target: full,
            display: self.display(path),
        }))
    }

    async fn mkdirs(&self, path: &UfsPath) -> Result<()> {
        let full = self.resolve(path)?;
        tokio::fs::create_dir_all(&full)
            .await
            .map_err(|e| self.err(path, e))
    }

    async fn delete(&self, path: &UfsPath, recursive: bool) -> Result<()> {
        if path.is_root() {
            return Err(Error::NotPermitted {
                path: self.display(path),
                reason: "the mount root cannot be deleted".to_string(),
            });
        }
        let full = self.resolve(path)?;
        let meta = match tokio::fs::symlink_metadata(&full).await {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err(path, e)),
        };
        let res = if meta.is_dir() {
            if recursive {
                tokio::fs::remove_dir_all(&full).await
            } else {
                tokio::fs::remove_dir(&full).await
            }
        } else {
            tokio::fs::remove_file(&full).await
        };
        match res {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.err(path, e)),
            _ => Ok(()),
        }
    }

    async fn rename(&self, src: &UfsPath, dst: &UfsPath) -> Result<()> {
        let from = self.resolve(src)?;
        let to = self.resolve(dst)?;
        if tokio::fs::symlink_metadata(&to).await.is_ok() {
            return Err(Error::AlreadyExists {
                path: self.display(dst),
            });
        }
        if let Some(parent) = to.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| self.err(dst, e))?;
        }
        tokio::fs::rename(&from, &to)
            .await
            .map_err(|e| self.err(src, e))
    }
}

struct LocalWriter {
    file: Option<tokio::fs::File>,
    temp: PathBuf,
    target: PathBuf,
    display: String,
}

impl LocalWriter {
    fn err(&self, e: io::Error) -> Error {
        Error::UnderStore {
            path: self.display.clone(),
            reason: e.to_string(),
            temporary: false,
        }
    }
}

#[async_trait]
impl UfsWriter for LocalWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(Error::internal("write after close"));
        };
        match file.write_all(&data).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn complete(mut self: Box<Self>) -> Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(Error::internal("complete after close"));
        };
        let res = async {
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&self.temp, &self.target).await
        }
        .await;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&self.temp).await;
            return Err(self.err(e));
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        match tokio::fs::remove_file(&self.temp).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.err(e)),
            _ => Ok(()),
        }
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Neither completed nor aborted (the writer's task was cut off): leave no trace.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(store: &LocalStore, p: &UfsPath, off: u64, len: u64) -> Vec<u8> {
        let mut r = store.open_range(p, off, len).await.unwrap();
        let mut v = Vec::new();
        r.read_to_end(&mut v).await.unwrap();
        v
    }

    #[tokio::test]
    async fn write_read_list_rename_delete() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("file://{}", dir.path().display());
        let store = LocalStore::open(&uri, dir.path().to_str().unwrap()).unwrap();
        let p = UfsPath::parse("a/b/f.bin").unwrap();
        let mut w = store.create(&p).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        // Not visible before complete.
        assert!(store.status(&p).await.unwrap().is_none());
        assert!(store
            .list(&UfsPath::parse("a/b").unwrap())
            .await
            .unwrap()
            .is_empty());
        w.write(Bytes::from_static(b"world")).await.unwrap();
        w.complete().await.unwrap();
        assert_eq!(store.status(&p).await.unwrap().unwrap().length, 11);
        assert_eq!(read_all(&store, &p, 6, 5).await, b"world");
        let q = UfsPath::parse("a/c.bin").unwrap();
        store.rename(&p, &q).await.unwrap();
        let names: Vec<_> = store
            .list(&UfsPath::parse("a").unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["b", "c.bin"]);
        assert!(matches!(
            store.delete(&UfsPath::parse("a").unwrap(), false).await,
            Err(Error::DirectoryNotEmpty { .. })
        ));
        store
            .delete(&UfsPath::parse("a").unwrap(), true)
            .await
            .unwrap();
        assert!(store
            .status(&UfsPath::parse("a").unwrap())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn aborted_and_dropped_writers_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open("file:///t", dir.path().to_str().unwrap()).unwrap();
        let p = UfsPath::parse("x").unwrap();
        let mut w = store.create(&p).await.unwrap();
        w.write(Bytes::from_static(b"junk")).await.unwrap();
        w.abort().await.unwrap();
        let w = store.create(&p).await.unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn symlinks_cannot_lead_outside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s3cr3t").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("s")).unwrap();
        let store = LocalStore::open("file:///t", dir.path().to_str().unwrap()).unwrap();
        for p in ["escape/secret", "s", "escape/new"] {
            let p = UfsPath::parse(p).unwrap();
            assert!(
                matches!(store.status(&p).await, Err(Error::NotPermitted { .. })),
                "{p}"
            );
            assert!(store.open_range(&p, 0, 6).await.is_err());
            assert!(store.create(&p).await.is_err());
        }
        assert!(store.list(&UfsPath::root()).await.unwrap().is_empty());
        assert_eq!(
            std::fs::read(outside.path().join("secret")).unwrap(),
            b"s3cr3t"
        );
    }
}
