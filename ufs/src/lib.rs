//! Under-stores: the slow or remote storage Strata caches (a local folder and S3;
//! HDFS follows behind the same trait).
//!
//! Every backend has the same shape: a config parsed from the mount URI and its
//! options, the backend itself, a ranged reader, a staged writer, and a lister. Paths handed to a backend
//! are [`UfsPath`]s, lists of validated names relative to the mount root: `..`, empty
//! names and `/` inside a name cannot be expressed, and the local backend also
//! refuses any path that resolves (through symlinks) outside its root.

pub mod local;
pub mod observed;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
pub use strata_common::types::{UfsFingerprint, UfsLocation};
use strata_common::{Error, Result};
use tokio::io::AsyncRead;

/// A path below a mount root, as validated components.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct UfsPath(Vec<String>);

impl UfsPath {
    /// The mount root itself.
    pub fn root() -> Self {
        UfsPath(Vec::new())
    }

    /// Parses `a/b/c` (empty for the root), validating each component.
    pub fn parse(relative: &str) -> Result<Self> {
        Ok(UfsPath(strata_common::types::split_relative(relative)?))
    }

    /// The components.
    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// This path with one more (validated) name.
    pub fn join(&self, name: &str) -> Result<Self> {
        let mut v = self.0.clone();
        v.extend(strata_common::types::split_relative(name)?);
        Ok(UfsPath(v))
    }

    /// Whether this is the mount root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The folder holding this path (the root for the root).
    pub fn parent(&self) -> UfsPath {
        UfsPath(self.0[..self.0.len().saturating_sub(1)].to_vec())
    }
}

impl From<&UfsLocation> for UfsPath {
    fn from(loc: &UfsLocation) -> Self {
        UfsPath(loc.components.clone())
    }
}

impl fmt::Display for UfsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

impl fmt::Debug for UfsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// What an under-store knows of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UfsStatus {
    /// The entry's name (last component).
    pub name: String,
    /// Directory or file.
    pub is_dir: bool,
    /// Bytes, for files.
    pub length: u64,
    /// Modification time, ms since the epoch.
    pub mtime_ms: i64,
    /// Backend-specific identity of the content (see [`UfsFingerprint`]); empty for
    /// directories.
    pub version: String,
}

impl UfsStatus {
    /// The fingerprint of the file this status describes.
    pub fn fingerprint(&self) -> UfsFingerprint {
        UfsFingerprint {
            length: self.length,
            version: self.version.clone(),
        }
    }
}

/// A folder's entries, and the staged copies (by key) that lie in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UfsListing {
    /// Entries in name order; staged copies are not among them.
    pub entries: Vec<UfsStatus>,
    /// Keys (file ids) of the copies staged in the folder and not yet published.
    pub staged: Vec<u64>,
}

/// One page of a folder's entries (see [`UnderStore::list_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UfsPage {
    /// This page's entries in name order; staged copies are not among them.
    pub entries: Vec<UfsStatus>,
    /// Keys (file ids) of the staged copies this page found.
    pub staged: Vec<u64>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<String>,
}

/// What a backend can do, so that callers choose how to use it (and say what to
/// expect) without knowing which backend it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// A rename (of a file or a whole folder) happens at once or not at all. On a
    /// backend without it, a folder rename copies and deletes one entry at a time
    /// (a failure midway leaves both names partly filled), and a moved file may
    /// get a new version.
    pub atomic_rename: bool,
    /// Folders exist by themselves (an empty folder is a folder), rather than as
    /// key prefixes with optional markers.
    pub real_directories: bool,
    /// A range of a file can be read without reading what comes before it.
    pub ranged_reads: bool,
    /// An existing file can be appended to in place.
    pub append: bool,
}

/// A byte stream from an under-store.
pub type UfsReader = Pin<Box<dyn AsyncRead + Send>>;

/// A file being written to an under-store, staged under a name derived from its
/// key (the file id). Nothing is visible at the path until the master publishes
/// the staged copy ([`UnderStore::publish`]), so a writer can never undo a delete or
/// a rename the namespace made meanwhile. [`UfsWriter::abort`] (or a drop before
/// [`UfsWriter::finish`]) leaves no trace.
#[async_trait]
pub trait UfsWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Makes the staged bytes durable; returns the status (fingerprint) the file
    /// will have once published. The staged copy stays until published or
    /// discarded.
    async fn finish(self: Box<Self>) -> Result<UfsStatus>;
    /// Discards what was written.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// An under-store backend.
#[async_trait]
pub trait UnderStore: Send + Sync + fmt::Debug {
    /// The URI this store was opened from.
    fn uri(&self) -> &str;
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;
    /// Checks that the store can be used (the folder or bucket is there, the
    /// credentials are accepted), with an error that says what is wrong. A mount
    /// is refused when this fails.
    async fn check(&self) -> Result<()>;
    /// Status of the entry at `path`, `None` if there is none.
    async fn status(&self, path: &UfsPath) -> Result<Option<UfsStatus>>;
    /// Entries of the directory at `path`, in name order, and the keys of the
    /// copies staged in it.
    async fn list(&self, path: &UfsPath) -> Result<UfsListing>;
    /// A reader of `length` bytes from `offset` of the file at `path`, which must be
    /// the file `expect` describes: a file with another fingerprint (replaced,
    /// changed in place) is refused with [`Error::UfsChanged`], and the check and the
    /// read concern the same file (no window between them).
    async fn open_range(
        &self,
        path: &UfsPath,
        offset: u64,
        length: u64,
        expect: &UfsFingerprint,
    ) -> Result<UfsReader>;
    /// One page of the entries of the folder at `path`, from `token` (`None` for
    /// the first page, then each page's `next`), so that a folder of millions of
    /// entries is read in bounded memory. The pages together hold what
    /// [`Self::list`] holds, except that a name that is both a file and a folder
    /// (possible on S3) may come as a file on one page and as a folder on a later
    /// one (`list` shows the file). A backend that cannot page answers the whole
    /// folder as its first page. Errors as [`Self::list`].
    async fn list_page(&self, path: &UfsPath, token: Option<&str>) -> Result<UfsPage> {
        if token.is_some() {
            return Err(Error::invalid_argument(
                "page token",
                format!("{} lists a folder in one page", self.uri()),
            ));
        }
        let listing = self.list(path).await?;
        Ok(UfsPage {
            entries: listing.entries,
            staged: listing.staged,
            next: None,
        })
    }
    /// Starts writing the file at `path`, staged under `key` (the file id). The
    /// parent folder must exist (`NotFound` otherwise). A second writer with the
    /// same key is refused.
    async fn create(&self, path: &UfsPath, key: u64) -> Result<Box<dyn UfsWriter>>;
    /// Makes the staged copy of `key` visible at `path`, replacing any file there,
    /// and returns its status. `NotFound` if there is no staged copy (discarded, or
    /// its folder removed).
    async fn publish(&self, path: &UfsPath, key: u64) -> Result<UfsStatus>;
    /// Removes the staged copy of `key` for `path`, if there is one.
    async fn discard(&self, path: &UfsPath, key: u64) -> Result<()> {
        self.discard_in(&path.parent(), key).await
    }
    /// Removes the copy of `key` staged in the folder `dir`, if there is one (a
    /// missing folder is fine).
    async fn discard_in(&self, dir: &UfsPath, key: u64) -> Result<()>;
    /// Creates the directory at `path` and its missing parents; an existing
    /// directory is fine.
    async fn mkdirs(&self, path: &UfsPath) -> Result<()>;
    /// Deletes the entry at `path` (a directory with everything below it when
    /// `recursive`); a missing entry is fine.
    async fn delete(&self, path: &UfsPath, recursive: bool) -> Result<()>;
    /// Renames `src` to `dst`; `dst` must not exist.
    async fn rename(&self, src: &UfsPath, dst: &UfsPath) -> Result<()>;
}

/// Checks that `length` bytes from `offset` lie inside the file `expect`
/// describes; the end of the range. A reader is never served short.
pub(crate) fn range_end(
    display: &str,
    offset: u64,
    length: u64,
    expect: &UfsFingerprint,
) -> Result<u64> {
    offset
        .checked_add(length)
        .filter(|end| *end <= expect.length)
        .ok_or_else(|| {
            Error::invalid_argument(
                "range",
                format!(
                    "{length} bytes from {offset} lie past the {} bytes of {display}",
                    expect.length
                ),
            )
        })
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`;
/// `None` if it cannot be asked.
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Opens the under-store a mount URI names, with no options: `file:///abs/dir` or
/// `/abs/dir` for a local folder, `s3://bucket/prefix` for S3 (AWS's endpoint).
pub fn open(uri: &str) -> Result<Arc<dyn UnderStore>> {
    open_with(uri, &BTreeMap::new())
}

/// Opens the under-store `uri` names with a mount's options (`s3.*` for S3; a
/// local folder takes none). Unknown schemes and options are clear errors.
pub fn open_with(uri: &str, options: &BTreeMap<String, String>) -> Result<Arc<dyn UnderStore>> {
    // Options Strata reads itself (the sync interval) are not the backend's.
    let options = &strata_common::types::backend_options(options);
    let scheme = uri.split_once("://").map(|(s, _)| s).unwrap_or("");
    if scheme == "s3" {
        return Ok(Arc::new(s3::S3Store::open(
            uri,
            s3::S3Options::parse(options)?,
        )?));
    }
    if scheme == "file" || uri.starts_with('/') {
        if let Some(k) = options.keys().next() {
            return Err(Error::invalid_argument(
                format!("option {k}"),
                "a local folder takes no options",
            ));
        }
        let path = uri.strip_prefix("file://").unwrap_or(uri);
        return Ok(Arc::new(local::LocalStore::open(uri, path)?));
    }
    Err(Error::invalid_argument(
        "uri",
        if scheme.is_empty() {
            format!("{uri:?} is not an under-store URI (use file:///absolute/folder or s3://bucket/prefix)")
        } else {
            format!("under-store scheme {scheme:?} is not supported by this build (supported: file, s3)")
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_schemes_are_clear_errors() {
        let err = open("hdfs://namenode:8020/x").unwrap_err();
        assert!(err.to_string().contains("hdfs"), "{err}");
        assert!(open("relative/dir").is_err());
    }

    #[test]
    fn ufs_paths_are_validated() {
        assert!(UfsPath::parse("a/../b").is_err());
        assert!(UfsPath::parse("..").is_err());
        assert_eq!(UfsPath::parse("a/b").unwrap().to_string(), "/a/b");
        assert!(UfsPath::parse("").unwrap().is_root());
    }
}

/// Opened under-stores by mount URI and options, so each is opened once per
/// process; each wrapped in [`observed::Observed`] (retries, deadlines, metrics).
#[derive(Default)]
pub struct StoreCache {
    stores: std::sync::Mutex<std::collections::HashMap<StoreKey, Arc<dyn UnderStore>>>,
    policy: observed::RetryPolicy,
    metrics: Arc<observed::UfsMetrics>,
}

/// A store's URI and options.
type StoreKey = (String, BTreeMap<String, String>);

impl StoreCache {
    /// The store for `uri` with `options`, opened on first use.
    pub fn get(
        &self,
        uri: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn UnderStore>> {
        let key = (uri.to_string(), options.clone());
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(&key) {
            return Ok(s.clone());
        }
        let s: Arc<dyn UnderStore> = Arc::new(observed::Observed::new(
            open_with(uri, options)?,
            self.policy,
            self.metrics.clone(),
        ));
        stores.insert(key, s.clone());
        Ok(s)
    }

    /// The counters of every store opened here (see [`observed::UfsMetrics`]).
    pub fn metrics(&self) -> BTreeMap<String, u64> {
        self.metrics.snapshot()
    }
}
