//! The local-folder under-store (`file:///abs/dir`).
//!
//! Invariant: all access is descriptor-relative, beneath the descriptor of the mount
//! root opened once at [`LocalStore::open`]; no path string is ever resolved from `/`
//! or from the working directory. Every lookup goes through `openat2` with
//! `RESOLVE_BENEATH`, so the kernel itself refuses, at the moment of the lookup, any
//! component (a `..` in a symlink, an absolute symlink, a magic link) that would leave
//! the root. There is no check-then-use window for a symlink swapped in mid-operation
//! to exploit: what was checked is the descriptor that is then used.
//!
//! Entries are acted on through their parent directory's descriptor plus the final
//! name (`mkdirat`, `unlinkat`, `renameat2`), which never follow a final symlink;
//! status and reads follow a final symlink only through `openat2`, so one that stays
//! inside the folder works and one that leads out is refused. A recursive delete
//! never follows a symlink at all: it removes the link.
//!
//! Files are written under a temporary name in the target's directory and renamed
//! into place on completion; temporary names are never listed or reported.
//!
//! Linux only (`openat2` appeared in 5.6); a kernel without it is refused with a
//! clear error rather than served through a racy fallback.

use crate::{
    Capabilities, UfsFingerprint, UfsListing, UfsPath, UfsReader, UfsStatus, UfsWriter, UnderStore,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::ffi::{CStr, CString};
use std::io::{self, Seek};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use strata_common::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Marks a file still being written; such files are never listed.
const TEMP_SUFFIX: &str = ".strata-tmp";

/// The staging name of the file with key (file id) `key`: short, since the
/// target's own name may already be at the length limit, and hidden from listings.
fn temp_name(key: u64) -> Sys<CString> {
    c_name(&format!(".{key:x}{TEMP_SUFFIX}"))
}

/// A folder on a local (or locally mounted) filesystem.
#[derive(Debug)]
pub struct LocalStore {
    uri: String,
    /// The mount root, `O_PATH`: the anchor every lookup is resolved beneath.
    root: Arc<OwnedFd>,
}

/// A failed system call, and whether it failed while resolving a path beneath the
/// root. The distinction matters for EXDEV: from a lookup it means "leads outside
/// the folder", from `renameat2` it means "crosses a filesystem boundary".
#[derive(Debug)]
struct Fail {
    io: io::Error,
    resolving: bool,
}

impl Fail {
    fn resolving(io: io::Error) -> Self {
        Fail {
            io,
            resolving: true,
        }
    }

    fn errno(&self) -> Option<i32> {
        self.io.raw_os_error()
    }
}

impl From<io::Error> for Fail {
    fn from(io: io::Error) -> Self {
        Fail {
            io,
            resolving: false,
        }
    }
}

type Sys<T> = std::result::Result<T, Fail>;

/// The one mapping from a failed system call to Strata's error, by errno.
fn to_error(path: String, fail: Fail) -> Error {
    let permanent = |path: String, reason: String| Error::UnderStore {
        path,
        reason,
        temporary: false,
    };
    let Some(errno) = fail.errno() else {
        // Not from the OS (a short write reported by the I/O layer, ...).
        return permanent(path, fail.io.to_string());
    };
    match errno {
        libc::ENOENT => Error::NotFound { path },
        libc::EEXIST => Error::AlreadyExists { path },
        libc::ENOTDIR => Error::NotADirectory { path },
        libc::EISDIR => Error::IsADirectory { path },
        libc::ENOTEMPTY => Error::DirectoryNotEmpty { path },
        libc::EXDEV if fail.resolving => Error::NotPermitted {
            path,
            reason: "resolves outside the mounted folder".to_string(),
        },
        libc::EXDEV => permanent(
            path,
            "crosses a filesystem boundary inside the mounted folder".to_string(),
        ),
        // Only lookups fail with ELOOP: a symlink loop, or a link RESOLVE_BENEATH
        // will not follow (a magic link such as /proc/self/fd/N).
        libc::ELOOP => Error::NotPermitted {
            path,
            reason: "leads through a symlink loop or a link that is not followed".to_string(),
        },
        libc::ENOSYS if fail.resolving => permanent(
            path,
            "this kernel lacks openat2 (Linux 5.6 or later is needed to confine access \
             to the mounted folder)"
                .to_string(),
        ),
        // Resources that a later try may find free again.
        libc::EINTR | libc::EAGAIN | libc::ETIMEDOUT | libc::EMFILE | libc::ENFILE => {
            Error::UnderStore {
                path,
                reason: fail.io.to_string(),
                temporary: true,
            }
        }
        _ => permanent(path, fail.io.to_string()),
    }
}

/// `a/b/c` for the components, `.` for none: a path for `openat2` beneath the root.
fn relative(components: &[String]) -> Sys<CString> {
    let joined = if components.is_empty() {
        ".".to_string()
    } else {
        components.join("/")
    };
    // Components are validated (no NUL); this only guards the conversion.
    CString::new(joined).map_err(|_| Fail::from(io::Error::from_raw_os_error(libc::EINVAL)))
}

fn c_name(name: &str) -> Sys<CString> {
    CString::new(name).map_err(|_| Fail::from(io::Error::from_raw_os_error(libc::EINVAL)))
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// The key of a staging name made by [`temp_name`]; `None` for any other name.
fn temp_key(name: &str) -> Option<u64> {
    let hex = name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Only the exact spelling `temp_name` makes (lowercase, no leading zeros), so a
    // look-alike name of someone else's is never taken for a staged copy.
    let key = u64::from_str_radix(hex, 16).ok()?;
    (format!("{key:x}") == hex).then_some(key)
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn is_regular(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// A file's identity: the inode survives renames but not replacement; the mtime (to
/// the nanosecond) changes with writes in place.
fn version_of(st: &libc::stat) -> String {
    format!("{:x}-{:x}", st.st_ino, mtime_nanos(st))
}

fn mtime_nanos(st: &libc::stat) -> i128 {
    i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec)
}

fn status_of(name: String, st: &libc::stat) -> UfsStatus {
    let dir = is_dir(st);
    UfsStatus {
        name,
        is_dir: dir,
        length: if dir {
            0
        } else {
            u64::try_from(st.st_size).unwrap_or(0)
        },
        mtime_ms: i64::try_from(mtime_nanos(st) / 1_000_000).unwrap_or(0),
        version: if dir { String::new() } else { version_of(st) },
    }
}

/// Opens `path` (relative, possibly several components) beneath `root`.
fn open_beneath(root: &OwnedFd, path: &CStr, flags: libc::c_int) -> Sys<OwnedFd> {
    sys::openat2(
        root.as_fd(),
        path,
        flags | libc::O_CLOEXEC,
        0,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    )
    .map_err(Fail::resolving)
}

/// The directory at `components`, `O_PATH`, for acting on the entries in it.
fn open_dir(root: &OwnedFd, components: &[String]) -> Sys<OwnedFd> {
    open_beneath(
        root,
        &relative(components)?,
        libc::O_PATH | libc::O_DIRECTORY,
    )
}

/// The directory at `components`, created with its missing parents.
fn ensure_dirs(root: &OwnedFd, components: &[String]) -> Sys<OwnedFd> {
    match open_dir(root, components) {
        Err(f) if f.errno() == Some(libc::ENOENT) => {}
        other => return other,
    }
    let mut dir = root.try_clone()?;
    for depth in 1..=components.len() {
        let name = c_name(&components[depth - 1])?;
        // mkdirat never follows `name`: if a symlink is there, it is EEXIST, and the
        // reopen below decides (beneath the root) whether it may be followed.
        match sys::mkdirat(dir.as_fd(), &name, 0o777) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e.into()),
            _ => {}
        }
        // Reopened from the root, not from `dir`, so a symlink inside the folder
        // whose target climbs with `..` above `dir` still resolves.
        dir = open_dir(root, &components[..depth])?;
    }
    Ok(dir)
}

/// Deepest folder nesting a recursive delete descends into: deeper than any path
/// Strata can name (4,096 bytes). The walk keeps one open descriptor per level.
const MAX_REMOVE_DEPTH: usize = 2048;

/// Opens the directory `name` in `parent` for removing what it holds, following
/// no symlink. `None` when there is nothing to descend into: the entry is gone,
/// or was replaced by a link or a file since it was looked at (then that entry
/// is removed).
fn open_for_removal(parent: &OwnedFd, name: &CStr) -> io::Result<Option<OwnedFd>> {
    match sys::openat2(
        parent.as_fd(),
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            ignore_missing(sys::unlinkat(parent.as_fd(), name, 0)).map(|()| None)
        }
        Err(e) => ignore_missing(Err(e)).map(|()| None),
    }
}

/// Removes the directory `name` in `parent` and everything below it, following no
/// symlink: a link is removed, never what it points at. The walk is iterative (an
/// explicit stack), and a tree nested deeper than [`MAX_REMOVE_DEPTH`] is refused
/// part way (what was removed stays removed).
fn remove_tree(parent: &OwnedFd, name: &CStr) -> io::Result<()> {
    struct Level {
        dir: OwnedFd,
        names: std::vec::IntoIter<CString>,
        name: CString,
    }
    let Some(dir) = open_for_removal(parent, name)? else {
        return Ok(());
    };
    let names = sys::read_dir_names(&dir)?.into_iter();
    let mut stack = vec![Level {
        dir,
        names,
        name: name.to_owned(),
    }];
    loop {
        let depth = stack.len();
        let Some(top) = stack.last_mut() else {
            return Ok(());
        };
        let Some(child) = top.names.next() else {
            let done = stack.pop().expect("the stack has a top");
            drop(done.dir);
            let holder = stack.last().map_or(parent, |l| &l.dir);
            ignore_missing(sys::unlinkat(
                holder.as_fd(),
                &done.name,
                libc::AT_REMOVEDIR,
            ))?;
            continue;
        };
        let st = match sys::fstatat_nofollow(top.dir.as_fd(), &child) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        if !is_dir(&st) {
            ignore_missing(sys::unlinkat(top.dir.as_fd(), &child, 0))?;
            continue;
        }
        if depth >= MAX_REMOVE_DEPTH {
            return Err(io::Error::other(format!(
                "folders nested more than {MAX_REMOVE_DEPTH} deep"
            )));
        }
        if let Some(dir) = open_for_removal(&top.dir, &child)? {
            let names = sys::read_dir_names(&dir)?.into_iter();
            stack.push(Level {
                dir,
                names,
                name: child,
            });
        }
    }
}

/// Something else removing the entry first is as good as removing it.
fn ignore_missing(res: io::Result<()>) -> io::Result<()> {
    match res {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
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
        let path = CString::new(dir).map_err(|_| Error::InvalidPath {
            path: uri.to_string(),
            reason: "path contains a NUL byte".to_string(),
        })?;
        // The one resolution from `/`: the configured folder itself. Everything later
        // is beneath this descriptor, wherever the folder's path comes to point.
        let root = sys::open_path_dir(&path).map_err(|e| to_error(uri.to_string(), e.into()))?;
        // Fail at mount time, not on the first request, on a kernel without openat2.
        open_beneath(&root, c".", libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|f| to_error(uri.to_string(), f))?;
        Ok(LocalStore {
            uri: uri.to_string(),
            root: Arc::new(root),
        })
    }

    fn display(&self, path: &UfsPath) -> String {
        if path.is_root() {
            self.uri.clone()
        } else {
            format!("{}{}", self.uri.trim_end_matches('/'), path)
        }
    }

    /// Runs blocking system calls against the root off the async threads; failures
    /// are reported at `path`.
    async fn run<T: Send + 'static>(
        &self,
        path: &UfsPath,
        f: impl FnOnce(&OwnedFd) -> Sys<T> + Send + 'static,
    ) -> Result<T> {
        let root = self.root.clone();
        blocking(move || f(&root))
            .await?
            .map_err(|fail| to_error(self.display(path), fail))
    }

    fn split(path: &UfsPath) -> (Vec<String>, String) {
        let comps = path.components();
        match comps.split_last() {
            Some((last, parent)) => (parent.to_vec(), last.clone()),
            None => (Vec::new(), String::new()),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("blocking task failed: {e}")))
}

#[async_trait]
impl UnderStore for LocalStore {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_rename: true,
            real_directories: true,
            ranged_reads: true,
            append: true,
        }
    }

    async fn check(&self) -> Result<()> {
        // The root was opened as a folder at `open`; it must still be one.
        match self.status(&UfsPath::root()).await? {
            Some(st) if st.is_dir => Ok(()),
            _ => Err(Error::NotFound {
                path: self.uri.clone(),
            }),
        }
    }

    async fn status(&self, path: &UfsPath) -> Result<Option<UfsStatus>> {
        let (_, name) = Self::split(path);
        if is_temp_name(&name) {
            return Ok(None);
        }
        let rel = path.components().to_vec();
        self.run(path, move |root| {
            // O_PATH follows a final symlink beneath the root without opening the
            // target for I/O (no blocking open of a FIFO, no access-time update).
            let fd = match open_beneath(root, &relative(&rel)?, libc::O_PATH) {
                Ok(fd) => fd,
                Err(f) if f.errno() == Some(libc::ENOENT) => return Ok(None),
                Err(f) => return Err(f),
            };
            let st = sys::fstat(fd.as_fd())?;
            Ok(Some(status_of(name, &st)))
        })
        .await
    }

    async fn list(&self, path: &UfsPath) -> Result<UfsListing> {
        let rel = path.components().to_vec();
        self.run(path, move |root| {
            let dir = open_beneath(root, &relative(&rel)?, libc::O_RDONLY | libc::O_DIRECTORY)?;
            let mut out = Vec::new();
            let mut staged = Vec::new();
            for raw in sys::read_dir_names(&dir)? {
                let Ok(name) = raw.to_str() else {
                    continue; // not UTF-8: cannot be named in the namespace
                };
                if is_temp_name(name) {
                    staged.extend(temp_key(name));
                    continue;
                }
                if strata_common::path::validate_name(name).is_err() {
                    continue;
                }
                let st = match sys::fstatat_nofollow(dir.as_fd(), &raw) {
                    Ok(st) => st,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e.into()),
                };
                let st = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    // Followed from the root, as a lookup of the entry's full path
                    // would be, so a link may climb with `..` as long as it stays in.
                    let mut entry = rel.clone();
                    entry.push(name.to_string());
                    match open_beneath(root, &relative(&entry)?, libc::O_PATH) {
                        Ok(fd) => sys::fstat(fd.as_fd())?,
                        // Leads outside, loops, or dangles: not part of the folder.
                        Err(f)
                            if matches!(
                                f.errno(),
                                Some(libc::EXDEV | libc::ELOOP | libc::ENOENT | libc::ENOTDIR)
                            ) =>
                        {
                            continue
                        }
                        Err(f) => return Err(f),
                    }
                } else {
                    st
                };
                out.push(status_of(name.to_string(), &st));
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            staged.sort_unstable();
            Ok(UfsListing {
                entries: out,
                staged,
            })
        })
        .await
    }

    async fn open_range(
        &self,
        path: &UfsPath,
        offset: u64,
        length: u64,
        expect: &UfsFingerprint,
    ) -> Result<UfsReader> {
        crate::range_end(&self.display(path), offset, length, expect)?;
        let rel = path.components().to_vec();
        // O_NONBLOCK so that a FIFO planted at the path cannot hang the open; it has
        // no effect on reads of the regular files that pass the check below.
        let fd = self
            .run(path, move |root| {
                open_beneath(root, &relative(&rel)?, libc::O_RDONLY | libc::O_NONBLOCK)
            })
            .await?;
        let want = expect.clone();
        let display = self.display(path);
        let checked = blocking(move || -> Result<std::fs::File> {
            // The fingerprint is taken from the descriptor that will be read, so the
            // file checked is the file served even if the path is replaced meanwhile.
            let st = sys::fstat(fd.as_fd()).map_err(|e| to_error(display.clone(), e.into()))?;
            if is_dir(&st) {
                return Err(Error::IsADirectory { path: display });
            }
            if !is_regular(&st) {
                return Err(Error::NotPermitted {
                    path: display,
                    reason: "not a regular file".to_string(),
                });
            }
            let found = UfsFingerprint {
                length: u64::try_from(st.st_size).unwrap_or(0),
                version: version_of(&st),
            };
            if let Some(reason) = want.mismatch(&found) {
                return Err(Error::UfsChanged {
                    path: display,
                    reason,
                });
            }
            let mut file = std::fs::File::from(fd);
            file.seek(io::SeekFrom::Start(offset))
                .map_err(|e| to_error(display, e.into()))?;
            Ok(file)
        })
        .await??;
        let probe = checked
            .try_clone()
            .map_err(|e| to_error(self.display(path), e.into()))?;
        Ok(Box::pin(CheckedReader {
            inner: tokio::fs::File::from_std(checked).take(length),
            probe,
            expect: expect.clone(),
            display: self.display(path),
            checked: false,
        }))
    }

    async fn create(&self, path: &UfsPath, key: u64) -> Result<Box<dyn UfsWriter>> {
        if path.is_root() {
            return Err(Error::IsADirectory {
                path: self.display(path),
            });
        }
        let (parent, name) = Self::split(path);
        let temp_c = temp_name(key).map_err(|f| to_error(self.display(path), f))?;
        let temp_open = temp_c.clone();
        let full = path.components().to_vec();
        let (dir, file) = self
            .run(path, move |root| {
                // The folder must exist: the master makes it when the file is
                // created. Making it here could bring back a folder renamed or
                // deleted since.
                let dir = open_dir(root, &parent)?;
                // Not needed for safety (completion replaces the entry itself, never a
                // link's target), but a path `status` refuses is refused here too.
                match open_beneath(root, &relative(&full)?, libc::O_PATH) {
                    Err(f) if f.errno() != Some(libc::ENOENT) => return Err(f),
                    _ => {}
                }
                let file = sys::openat2(
                    dir.as_fd(),
                    &temp_open,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o666,
                    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
                )?;
                Ok((dir, file))
            })
            .await?;
        Ok(Box::new(LocalWriter {
            file: Some(tokio::fs::File::from_std(std::fs::File::from(file))),
            dir: Arc::new(dir),
            temp: temp_c,
            name,
            display: self.display(path),
        }))
    }

    async fn publish(&self, path: &UfsPath, key: u64) -> Result<UfsStatus> {
        if path.is_root() {
            return Err(Error::IsADirectory {
                path: self.display(path),
            });
        }
        let (parent, name) = Self::split(path);
        self.run(path, move |root| {
            // The folder as it is now: a staged copy whose folder was removed is gone
            // with it, and is not brought back.
            let dir = open_dir(root, &parent)?;
            let target = c_name(&name)?;
            sys::renameat(dir.as_fd(), &temp_name(key)?, dir.as_fd(), &target)?;
            let st = sys::fstatat_nofollow(dir.as_fd(), &target)?;
            Ok(status_of(name, &st))
        })
        .await
    }

    async fn discard_in(&self, dir: &UfsPath, key: u64) -> Result<()> {
        let parent = dir.components().to_vec();
        self.run(dir, move |root| {
            let dir = match open_dir(root, &parent) {
                Ok(dir) => dir,
                Err(f) if f.errno() == Some(libc::ENOENT) => return Ok(()),
                Err(f) => return Err(f),
            };
            Ok(ignore_missing(sys::unlinkat(
                dir.as_fd(),
                &temp_name(key)?,
                0,
            ))?)
        })
        .await
    }

    async fn mkdirs(&self, path: &UfsPath) -> Result<()> {
        let rel = path.components().to_vec();
        self.run(path, move |root| ensure_dirs(root, &rel).map(drop))
            .await
    }

    async fn delete(&self, path: &UfsPath, recursive: bool) -> Result<()> {
        if path.is_root() {
            return Err(Error::NotPermitted {
                path: self.display(path),
                reason: "the mount root cannot be deleted".to_string(),
            });
        }
        let (parent, name) = Self::split(path);
        self.run(path, move |root| {
            let dir = match open_dir(root, &parent) {
                Ok(dir) => dir,
                Err(f) if f.errno() == Some(libc::ENOENT) => return Ok(()),
                Err(f) => return Err(f),
            };
            let name = c_name(&name)?;
            let st = match sys::fstatat_nofollow(dir.as_fd(), &name) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            // A symlink (even to a directory) is not a directory here: the link goes.
            let res = if !is_dir(&st) {
                sys::unlinkat(dir.as_fd(), &name, 0)
            } else if recursive {
                remove_tree(&dir, &name)
            } else {
                sys::unlinkat(dir.as_fd(), &name, libc::AT_REMOVEDIR)
            };
            Ok(ignore_missing(res)?)
        })
        .await
    }

    async fn rename(&self, src: &UfsPath, dst: &UfsPath) -> Result<()> {
        if src.is_root() || dst.is_root() {
            return Err(Error::NotPermitted {
                path: self.display(if src.is_root() { src } else { dst }),
                reason: "the mount root cannot be renamed".to_string(),
            });
        }
        let (src_parent, src_name) = Self::split(src);
        let (dst_parent, dst_name) = Self::split(dst);
        let from = self
            .run(src, move |root| open_dir(root, &src_parent))
            .await?;
        let to = self
            .run(dst, move |root| ensure_dirs(root, &dst_parent))
            .await?;
        let renamed = blocking(move || -> Sys<()> {
            // RENAME_NOREPLACE: the kernel refuses an existing destination in the same
            // step as the rename, so no check-then-rename window can clobber one.
            Ok(sys::renameat2(
                from.as_fd(),
                &c_name(&src_name)?,
                to.as_fd(),
                &c_name(&dst_name)?,
                libc::RENAME_NOREPLACE,
            )?)
        })
        .await?;
        match renamed {
            Ok(()) => Ok(()),
            Err(f) if f.errno() == Some(libc::EEXIST) => Err(to_error(self.display(dst), f)),
            Err(f) => Err(to_error(self.display(src), f)),
        }
    }
}

/// A range of a file checked at both ends: the fingerprint was checked on the
/// descriptor at open, and is checked again on it when the range has been read, so
/// a file rewritten in place during the read (old and new bytes mixed) ends the
/// read with [`Error::UfsChanged`] instead of a clean end of stream.
struct CheckedReader {
    inner: tokio::io::Take<tokio::fs::File>,
    probe: std::fs::File,
    expect: UfsFingerprint,
    display: String,
    checked: bool,
}

impl tokio::io::AsyncRead for CheckedReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() == before && buf.remaining() > 0 && !this.checked {
            this.checked = true;
            let st = sys::fstat(this.probe.as_fd())?;
            let found = UfsFingerprint {
                length: u64::try_from(st.st_size).unwrap_or(0),
                version: version_of(&st),
            };
            if let Some(reason) = this.expect.mismatch(&found) {
                return std::task::Poll::Ready(Err(io::Error::other(Error::UfsChanged {
                    path: this.display.clone(),
                    reason: format!("while it was read: {reason}"),
                })));
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

struct LocalWriter {
    file: Option<tokio::fs::File>,
    /// The target's directory: the temp file lives here and is renamed within it, so
    /// completion lands where creation was checked, whatever happens to the path.
    dir: Arc<OwnedFd>,
    temp: CString,
    name: String,
    display: String,
}

impl LocalWriter {
    fn err(&self, e: io::Error) -> Error {
        to_error(self.display.clone(), e.into())
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

    async fn finish(mut self: Box<Self>) -> Result<UfsStatus> {
        let Some(mut file) = self.file.take() else {
            return Err(Error::internal("finish after close"));
        };
        // tokio reports a failed buffered write on the next operation: flush first.
        let res = match file.flush().await {
            Err(e) => Err(self.err(e)),
            Ok(()) => {
                let file = file.into_std().await;
                let name = self.name.clone();
                let display = self.display.clone();
                blocking(move || -> Sys<UfsStatus> {
                    file.sync_all()?;
                    // Publishing renames, which keeps the inode and the mtime: this is
                    // the fingerprint readers of the path will find.
                    let st = sys::fstat(file.as_fd())?;
                    Ok(status_of(name, &st))
                })
                .await
                .and_then(|r| r.map_err(|fail| to_error(display, fail)))
            }
        };
        if res.is_err() {
            let (dir, temp) = (self.dir.clone(), self.temp.clone());
            // Best effort: the error being returned matters more than the cleanup's.
            let _ = blocking(move || sys::unlinkat(dir.as_fd(), &temp, 0)).await;
        }
        res
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.file.take();
        let (dir, temp) = (self.dir.clone(), self.temp.clone());
        blocking(move || ignore_missing(sys::unlinkat(dir.as_fd(), &temp, 0)))
            .await?
            .map_err(|e| self.err(e))
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Neither completed nor aborted (the writer's task was cut off): leave no trace.
            let _ = sys::unlinkat(self.dir.as_fd(), &self.temp, 0);
        }
    }
}

/// Thin safe wrappers over the `*at` system calls; `io::Error` carries the errno.
mod sys {
    use std::ffi::{CStr, CString};
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
    use std::ptr::NonNull;

    fn check(ret: libc::c_int) -> io::Result<()> {
        if ret == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Opens an absolute folder `O_PATH|O_DIRECTORY`.
    pub(super) fn open_path_dir(path: &CStr) -> io::Result<OwnedFd> {
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `openat2(dir, path, {flags, mode, resolve})`.
    pub(super) fn openat2(
        dir: BorrowedFd<'_>,
        path: &CStr,
        flags: libc::c_int,
        mode: u64,
        resolve: u64,
    ) -> io::Result<OwnedFd> {
        // SAFETY: open_how is plain integers; all-zero is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.mode = mode;
        how.resolve = resolve;
        // A scoped lookup answers EAGAIN when a rename elsewhere raced it; the kernel
        // asks callers to retry. Bounded, so a rename storm surfaces as temporary.
        let mut tries = 0;
        loop {
            // SAFETY: `path` and `how` outlive the call, and `how`'s size is passed.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    dir.as_raw_fd(),
                    path.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if ret >= 0 {
                // SAFETY: a non-negative return is a new descriptor owned by nobody else.
                return Ok(unsafe { OwnedFd::from_raw_fd(ret as libc::c_int) });
            }
            let e = io::Error::last_os_error();
            tries += 1;
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) || tries >= 16 {
                return Err(e);
            }
        }
    }

    pub(super) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
        // SAFETY: stat is plain data, filled by the call.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open and `st` is a valid out-pointer.
        check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
        Ok(st)
    }

    pub(super) fn fstatat_nofollow(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
        // SAFETY: stat is plain data, filled by the call.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `dir` is open, `name` NUL-terminated, `st` a valid out-pointer.
        check(unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(st)
    }

    pub(super) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
        // SAFETY: `dir` is open and `name` NUL-terminated.
        check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
    }

    pub(super) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: `dir` is open and `name` NUL-terminated.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
    }

    pub(super) fn renameat(
        from_dir: BorrowedFd<'_>,
        from: &CStr,
        to_dir: BorrowedFd<'_>,
        to: &CStr,
    ) -> io::Result<()> {
        renameat2(from_dir, from, to_dir, to, 0)
    }

    pub(super) fn renameat2(
        from_dir: BorrowedFd<'_>,
        from: &CStr,
        to_dir: BorrowedFd<'_>,
        to: &CStr,
        flags: libc::c_uint,
    ) -> io::Result<()> {
        // SAFETY: both descriptors are open and both names NUL-terminated.
        check(unsafe {
            libc::renameat2(
                from_dir.as_raw_fd(),
                from.as_ptr(),
                to_dir.as_raw_fd(),
                to.as_ptr(),
                flags,
            )
        })
    }

    /// An open directory stream, closed on drop.
    struct DirStream(NonNull<libc::DIR>);

    impl Drop for DirStream {
        fn drop(&mut self) {
            // SAFETY: the stream came from fdopendir and is closed exactly once.
            unsafe { libc::closedir(self.0.as_ptr()) };
        }
    }

    /// The names in the directory `dir` (opened for reading), without `.` and `..`.
    pub(super) fn read_dir_names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
        // fdopendir takes the descriptor it is given; a duplicate leaves `dir` usable
        // for the *at calls on the entries.
        let dup = dir.as_fd().try_clone_to_owned()?;
        let raw = dup.into_raw_fd();
        // SAFETY: `raw` is an open descriptor whose ownership passes to the stream.
        let Some(stream) = NonNull::new(unsafe { libc::fdopendir(raw) }) else {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `raw` is still ours to close.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
            return Err(e);
        };
        let stream = DirStream(stream);
        let mut names = Vec::new();
        loop {
            // readdir signals an error only through errno, so clear it first.
            // SAFETY: errno is thread-local; writing it is always allowed.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: the stream is open and used by this thread only.
            let entry = unsafe { libc::readdir(stream.0.as_ptr()) };
            if entry.is_null() {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(0) | None => Ok(names),
                    Some(_) => Err(e),
                };
            }
            // SAFETY: a non-null entry is valid until the next readdir on the stream,
            // and d_name is NUL-terminated; it is copied before then.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes != b"." && bytes != b".." {
                names.push(name.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    fn store_at(dir: &Path) -> LocalStore {
        LocalStore::open("file:///t", dir.to_str().unwrap()).unwrap()
    }

    fn p(s: &str) -> UfsPath {
        UfsPath::parse(s).unwrap()
    }

    async fn fingerprint(store: &LocalStore, path: &UfsPath) -> UfsFingerprint {
        store.status(path).await.unwrap().unwrap().fingerprint()
    }

    async fn read_all(store: &LocalStore, path: &UfsPath, off: u64, len: u64) -> Vec<u8> {
        let fp = fingerprint(store, path).await;
        let mut r = store.open_range(path, off, len, &fp).await.unwrap();
        let mut v = Vec::new();
        r.read_to_end(&mut v).await.unwrap();
        v
    }

    async fn write_file(store: &LocalStore, path: &UfsPath, data: &'static [u8]) -> UfsStatus {
        make_parent(store, path).await;
        let mut w = store.create(path, 1).await.unwrap();
        w.write(Bytes::from_static(data)).await.unwrap();
        let finished = w.finish().await.unwrap();
        let published = store.publish(path, 1).await.unwrap();
        assert_eq!(finished, published, "publishing keeps the fingerprint");
        published
    }

    /// Makes `path`'s folder, as the master does before a writer stages a file.
    async fn make_parent(store: &LocalStore, path: &UfsPath) {
        if let Some((_, dirs)) = path.components().split_last() {
            store
                .mkdirs(&UfsPath::parse(&dirs.join("/")).unwrap())
                .await
                .unwrap();
        }
    }

    /// Every file below `dir` with its content, following no symlink.
    fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let ty = e.file_type().unwrap();
            let name = e.file_name().into_string().unwrap();
            if ty.is_dir() {
                for (n, c) in snapshot(&e.path()) {
                    out.push((format!("{name}/{n}"), c));
                }
                out.push((format!("{name}/"), Vec::new()));
            } else {
                out.push((name, std::fs::read(e.path()).unwrap()));
            }
        }
        out.sort();
        out
    }

    fn not_permitted<T>(res: Result<T>) -> bool {
        matches!(res, Err(Error::NotPermitted { .. }))
    }

    #[tokio::test]
    async fn write_read_list_rename_delete() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("file://{}", dir.path().display());
        let store = LocalStore::open(&uri, dir.path().to_str().unwrap()).unwrap();
        let f = p("a/b/f.bin");
        // The folder must exist: staging never makes folders.
        assert!(matches!(
            store.create(&f, 1).await,
            Err(Error::NotFound { .. })
        ));
        make_parent(&store, &f).await;
        let mut w = store.create(&f, 1).await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        // Not visible before complete.
        assert!(store.status(&f).await.unwrap().is_none());
        let listed = store.list(&p("a/b")).await.unwrap();
        assert!(listed.entries.is_empty());
        assert_eq!(listed.staged, [1]);
        w.write(Bytes::from_static(b"world")).await.unwrap();
        let finished = w.finish().await.unwrap();
        // Finished is durable, not yet visible.
        assert!(store.status(&f).await.unwrap().is_none());
        let done = store.publish(&f, 1).await.unwrap();
        assert_eq!(done, finished);
        assert_eq!(done.length, 11);
        assert_eq!(done.name, "f.bin");
        assert_eq!(store.status(&f).await.unwrap().unwrap().length, 11);
        assert_eq!(read_all(&store, &f, 6, 5).await, b"world");
        let q = p("a/c.bin");
        store.rename(&f, &q).await.unwrap();
        // A rename keeps the file's identity.
        assert_eq!(fingerprint(&store, &q).await, done.fingerprint());
        let names: Vec<_> = store
            .list(&p("a"))
            .await
            .unwrap()
            .entries
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["b", "c.bin"]);
        assert!(matches!(
            store.delete(&p("a"), false).await,
            Err(Error::DirectoryNotEmpty { .. })
        ));
        store.delete(&p("a"), true).await.unwrap();
        assert!(store.status(&p("a")).await.unwrap().is_none());
        // Deleting what is not there is fine.
        store.delete(&p("a/zz"), true).await.unwrap();
    }

    #[tokio::test]
    async fn aborted_and_dropped_writers_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let x = p("x");
        let mut w = store.create(&x, 1).await.unwrap();
        w.write(Bytes::from_static(b"junk")).await.unwrap();
        w.abort().await.unwrap();
        let w = store.create(&x, 1).await.unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn staged_copies_publish_once_and_discard_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let f = p("d/f");
        make_parent(&store, &f).await;
        let mut w = store.create(&f, 7).await.unwrap();
        // One writer per key.
        assert!(store.create(&f, 7).await.is_err());
        w.write(Bytes::from_static(b"staged")).await.unwrap();
        w.finish().await.unwrap();
        // Discarded before publishing (the file was deleted meanwhile): nothing
        // appears, and publishing afterwards finds nothing to publish.
        store.discard(&f, 7).await.unwrap();
        store.discard(&f, 7).await.unwrap();
        assert!(matches!(
            store.publish(&f, 7).await,
            Err(Error::NotFound { .. })
        ));
        assert!(store.status(&f).await.unwrap().is_none());
        assert_eq!(snapshot(dir.path()), [("d/".to_string(), Vec::new())]);
        // A staged copy whose folder was renamed is published where the folder is
        // now, and only there.
        let mut w = store.create(&f, 8).await.unwrap();
        w.write(Bytes::from_static(b"moved")).await.unwrap();
        w.finish().await.unwrap();
        store.rename(&p("d"), &p("e")).await.unwrap();
        assert!(matches!(
            store.publish(&f, 8).await,
            Err(Error::NotFound { .. })
        ));
        store.publish(&p("e/f"), 8).await.unwrap();
        assert_eq!(
            snapshot(dir.path()),
            [
                ("e/".to_string(), Vec::new()),
                ("e/f".to_string(), b"moved".to_vec())
            ]
        );
        // A staged copy whose folder was removed is gone with it.
        let mut w = store.create(&p("e/g"), 9).await.unwrap();
        w.write(Bytes::from_static(b"gone")).await.unwrap();
        w.finish().await.unwrap();
        store.delete(&p("e"), true).await.unwrap();
        assert!(matches!(
            store.publish(&p("e/g"), 9).await,
            Err(Error::NotFound { .. })
        ));
        assert!(snapshot(dir.path()).is_empty());
        // Discarding by folder: a copy staged there goes, a missing folder is fine.
        let mut w = store.create(&p("h"), 10).await.unwrap();
        w.write(Bytes::from_static(b"swept")).await.unwrap();
        w.finish().await.unwrap();
        store.discard_in(&p("nowhere"), 10).await.unwrap();
        assert_eq!(store.list(&UfsPath::root()).await.unwrap().staged, [10]);
        store.discard_in(&UfsPath::root(), 10).await.unwrap();
        assert!(snapshot(dir.path()).is_empty());
    }

    /// Makes `n` nested folders named `d` under `root` (deeper than a path can
    /// spell, so level by level through descriptors).
    fn nest(root: &Path, n: usize) {
        let mut dir = std::fs::File::open(root).unwrap().into();
        let d = CString::new("d").unwrap();
        for _ in 0..n {
            sys::mkdirat(OwnedFd::as_fd(&dir), &d, 0o755).unwrap();
            dir = sys::openat2(
                dir.as_fd(),
                &d,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
                libc::RESOLVE_BENEATH,
            )
            .unwrap();
        }
    }

    /// A recursive delete of a tree nested deeper than any Strata path is refused
    /// with an error instead of exhausting the stack or the descriptors; a tree
    /// within the limit goes entirely.
    #[tokio::test]
    async fn a_recursive_delete_of_a_bottomless_tree_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("deep")).unwrap();
        nest(&dir.path().join("deep"), MAX_REMOVE_DEPTH + 10);
        std::fs::create_dir(dir.path().join("ok")).unwrap();
        nest(&dir.path().join("ok"), MAX_REMOVE_DEPTH - 1);
        let store = store_at(dir.path());
        assert!(store.delete(&p("deep"), true).await.is_err());
        store.delete(&p("ok"), true).await.unwrap();
        assert!(store.status(&p("ok")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn temp_files_are_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let w = store.create(&p("f"), 1).await.unwrap();
        let temp = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name()
            .into_string()
            .unwrap();
        assert!(is_temp_name(&temp), "{temp}");
        assert!(store.status(&p(&temp)).await.unwrap().is_none());
        let listed = store.list(&UfsPath::root()).await.unwrap();
        assert!(listed.entries.is_empty());
        assert_eq!(listed.staged, [1]);
        drop(w);
        // Only names of exactly the staging shape count as staged copies.
        for (name, key) in [
            (".ff.strata-tmp", Some(255)),
            (".ffffffffffffffff.strata-tmp", Some(u64::MAX)),
            (".1ffffffffffffffff.strata-tmp", None),
            ("..strata-tmp", None),
            (".x1.strata-tmp", None),
            (".+1.strata-tmp", None),
            (".FF.strata-tmp", None),
            (".0ff.strata-tmp", None),
            (".0.strata-tmp", Some(0)),
            ("1.strata-tmp", None),
        ] {
            assert_eq!(temp_key(name), key, "{name}");
        }
    }

    #[tokio::test]
    async fn symlinks_cannot_lead_outside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s3cr3t").unwrap();
        let dir = tempfile::tempdir().unwrap();
        symlink(outside.path(), dir.path().join("escape")).unwrap();
        symlink(outside.path().join("secret"), dir.path().join("s")).unwrap();
        // A relative link that climbs out is refused just like an absolute one.
        let rel_out = Path::new("..").join(outside.path().file_name().unwrap());
        symlink(&rel_out, dir.path().join("up")).unwrap();
        let store = store_at(dir.path());
        let any = UfsFingerprint {
            length: 6,
            version: String::new(),
        };
        for path in ["escape/secret", "s", "escape/new", "up/secret"] {
            let path = p(path);
            assert!(not_permitted(store.status(&path).await), "{path}");
            assert!(
                not_permitted(store.open_range(&path, 0, 6, &any).await),
                "{path}"
            );
            assert!(not_permitted(store.create(&path, 1).await), "{path}");
        }
        assert!(store
            .list(&UfsPath::root())
            .await
            .unwrap()
            .entries
            .is_empty());
        assert_eq!(
            snapshot(outside.path()),
            [("secret".to_string(), b"s3cr3t".to_vec())]
        );
    }

    #[tokio::test]
    async fn open_range_refuses_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let f = p("f");
        let first = write_file(&store, &f, b"0123456789").await;
        let fp = first.fingerprint();
        assert!(store.open_range(&f, 0, 10, &fp).await.is_ok());
        let wrong_length = UfsFingerprint {
            length: 11,
            ..fp.clone()
        };
        assert!(matches!(
            store.open_range(&f, 0, 10, &wrong_length).await,
            Err(Error::UfsChanged { .. })
        ));
        let wrong_version = UfsFingerprint {
            version: "1-2".to_string(),
            ..fp.clone()
        };
        assert!(matches!(
            store.open_range(&f, 0, 10, &wrong_version).await,
            Err(Error::UfsChanged { .. })
        ));
        // Replaced behind Strata's back by a file of the same length.
        let other = dir.path().join("other");
        std::fs::write(&other, b"abcdefghij").unwrap();
        std::fs::rename(&other, dir.path().join("f")).unwrap();
        assert_eq!(store.status(&f).await.unwrap().unwrap().length, 10);
        assert!(matches!(
            store.open_range(&f, 0, 10, &fp).await,
            Err(Error::UfsChanged { .. })
        ));
        assert_eq!(read_all(&store, &f, 2, 3).await, b"cde");
    }

    #[tokio::test]
    async fn a_file_rewritten_in_place_during_a_read_fails_the_read() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let f = p("f");
        let fp = write_file(&store, &f, b"0123456789").await.fingerprint();
        let mut r = store.open_range(&f, 0, 10, &fp).await.unwrap();
        let mut head = [0u8; 4];
        r.read_exact(&mut head).await.unwrap();
        // Rewritten in place, same length; its mtime moved on explicitly, so the
        // test does not depend on the clock's granularity.
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.write_all_at(b"abcdefghij", 0).unwrap();
        let mtime = file.metadata().unwrap().modified().unwrap();
        file.set_modified(mtime + Duration::from_secs(1)).unwrap();
        let mut rest = Vec::new();
        let err = r.read_to_end(&mut rest).await.unwrap_err();
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
        assert!(matches!(inner, Some(Error::UfsChanged { .. })), "{err}");
    }

    #[tokio::test]
    async fn completed_status_is_the_fingerprint_readers_see() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let f = p("d/f");
        let first = write_file(&store, &f, b"same").await;
        assert_eq!(store.status(&f).await.unwrap().unwrap(), first);
        assert!(!first.version.is_empty());
        let second = write_file(&store, &f, b"same").await;
        assert_eq!(store.status(&f).await.unwrap().unwrap(), second);
        assert_ne!(first.fingerprint(), second.fingerprint());
        assert!(matches!(
            store.open_range(&f, 0, 4, &first.fingerprint()).await,
            Err(Error::UfsChanged { .. })
        ));
        assert!(store
            .status(&p("d"))
            .await
            .unwrap()
            .unwrap()
            .version
            .is_empty());
    }

    #[tokio::test]
    async fn a_symlink_swapped_in_after_open_leads_nowhere() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f"), b"secret").unwrap();
        std::fs::create_dir(outside.path().join("sub")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let inside = write_file(&store, &p("a/f"), b"inside").await;
        write_file(&store, &p("g"), b"g").await;
        std::fs::rename(dir.path().join("a"), dir.path().join("a-old")).unwrap();
        symlink(outside.path(), dir.path().join("a")).unwrap();
        let before = snapshot(outside.path());

        let af = p("a/f");
        assert!(not_permitted(store.status(&af).await));
        assert!(not_permitted(store.list(&p("a")).await));
        assert!(not_permitted(
            store.open_range(&af, 0, 6, &inside.fingerprint()).await
        ));
        assert!(not_permitted(store.create(&p("a/new"), 1).await));
        assert!(not_permitted(store.create(&af, 1).await));
        assert!(not_permitted(store.mkdirs(&p("a/newdir")).await));
        assert!(not_permitted(store.mkdirs(&p("a/sub/deeper")).await));
        assert!(not_permitted(store.delete(&af, false).await));
        assert!(not_permitted(store.delete(&p("a/sub"), true).await));
        assert!(not_permitted(store.rename(&af, &p("h")).await));
        assert!(not_permitted(store.rename(&p("g"), &p("a/g")).await));
        assert!(store.status(&p("g")).await.unwrap().is_some());
        assert_eq!(snapshot(outside.path()), before);
    }

    #[test]
    fn racing_symlink_swaps_never_escape() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x"), b"secret").unwrap();
        std::fs::write(outside.path().join("victim"), b"keep").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/x"), b"inside-content").unwrap();
        symlink(outside.path(), dir.path().join("swap")).unwrap();
        let before = snapshot(outside.path());
        let store = store_at(dir.path());

        // `a` and `swap` trade places atomically, so `a` is always there: one moment
        // the real directory, the next a symlink to the outside folder.
        let stop = Arc::new(AtomicBool::new(false));
        let flipper = {
            let stop = stop.clone();
            let root = std::fs::File::open(dir.path()).unwrap();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut flips = 0u64;
                while !stop.load(Ordering::Relaxed)
                    && flips < 2_000_000
                    && started.elapsed() < Duration::from_secs(5)
                {
                    let exchanged = sys::renameat2(
                        root.as_fd(),
                        c"a",
                        root.as_fd(),
                        c"swap",
                        libc::RENAME_EXCHANGE,
                    );
                    // Fails only once the test is over and its folder gone.
                    if exchanged.is_err() {
                        break;
                    }
                    flips += 1;
                }
                flips
            })
        };

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (ok, refused) = rt.block_on(async {
            let (mut ok, mut refused) = (0u32, 0u32);
            let x = p("a/x");
            let victim = p("a/victim");
            let expect = UfsFingerprint {
                length: 14,
                version: String::new(),
            };
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(2) {
                match store.status(&x).await {
                    Ok(Some(st)) => assert_eq!(st.length, 14),
                    Ok(None) => panic!("a/x is always there"),
                    Err(e) => assert!(matches!(e, Error::NotPermitted { .. }), "{e}"),
                }
                match store.open_range(&x, 0, 14, &expect).await {
                    Ok(mut r) => {
                        let mut v = Vec::new();
                        r.read_to_end(&mut v).await.unwrap();
                        assert_eq!(v, b"inside-content");
                        ok += 1;
                    }
                    Err(Error::NotPermitted { .. }) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
                if let Ok(mut w) = store.create(&victim, 1).await {
                    w.write(Bytes::from_static(b"overwritten")).await.unwrap();
                    w.finish().await.unwrap();
                    // Publishing resolves the folder again, beneath the root.
                    let _ = store.publish(&victim, 1).await;
                    let _ = store.discard(&victim, 1).await;
                }
                let _ = store.delete(&victim, false).await;
                let _ = store.mkdirs(&p("a/made")).await;
                let _ = store.delete(&p("a/made"), true).await;
            }
            (ok, refused)
        });
        stop.store(true, Ordering::Relaxed);
        let flips = flipper.join().unwrap();
        assert_eq!(snapshot(outside.path()), before);
        assert!(flips > 100, "only {flips} flips");
        // Both sides of the race were seen, so the test exercised it.
        assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    }

    #[tokio::test]
    async fn rename_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        write_file(&store, &p("src"), b"source").await;
        write_file(&store, &p("d/dst"), b"destination").await;
        assert!(matches!(
            store.rename(&p("src"), &p("d/dst")).await,
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            store.rename(&p("src"), &p("d")).await,
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(read_all(&store, &p("src"), 0, 6).await, b"source");
        assert_eq!(read_all(&store, &p("d/dst"), 0, 11).await, b"destination");
        assert!(matches!(
            store.rename(&p("missing"), &p("new")).await,
            Err(Error::NotFound { .. })
        ));
        store.rename(&p("src"), &p("e/moved")).await.unwrap();
        assert_eq!(read_all(&store, &p("e/moved"), 0, 6).await, b"source");
    }

    #[tokio::test]
    async fn symlinks_inside_the_root_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        write_file(&store, &p("real/file"), b"content").await;
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        // Climbs with `..` but stays inside.
        symlink("../real/file", dir.path().join("sub/link")).unwrap();
        symlink("real", dir.path().join("dirlink")).unwrap();
        symlink("nowhere", dir.path().join("dangling")).unwrap();
        let listed = store.list(&p("sub")).await.unwrap().entries;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "link");
        assert_eq!(listed[0].length, 7);
        assert_eq!(read_all(&store, &p("sub/link"), 0, 7).await, b"content");
        let names: Vec<_> = store
            .list(&UfsPath::root())
            .await
            .unwrap()
            .entries
            .into_iter()
            .map(|s| (s.name, s.is_dir))
            .collect();
        assert_eq!(
            names,
            [
                ("dirlink".to_string(), true),
                ("real".to_string(), true),
                ("sub".to_string(), true)
            ]
        );
        assert_eq!(read_all(&store, &p("dirlink/file"), 0, 3).await, b"con");
        write_file(&store, &p("dirlink/new"), b"n").await;
        assert!(dir.path().join("real/new").is_file());
    }

    #[tokio::test]
    async fn recursive_delete_removes_links_not_their_targets() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"keep").unwrap();
        std::fs::create_dir(outside.path().join("sub")).unwrap();
        std::fs::write(outside.path().join("sub/keep2"), b"keep2").unwrap();
        let before = snapshot(outside.path());
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        write_file(&store, &p("d/inner/f"), b"f").await;
        symlink(outside.path(), dir.path().join("d/out")).unwrap();
        symlink(outside.path(), dir.path().join("d/inner/out2")).unwrap();
        symlink(outside.path().join("keep"), dir.path().join("d/filelink")).unwrap();
        store.delete(&p("d"), true).await.unwrap();
        assert!(!dir.path().join("d").exists());
        assert_eq!(snapshot(outside.path()), before);
        // A link to a directory, deleted by its own name, goes as a link.
        symlink(outside.path(), dir.path().join("top")).unwrap();
        store.delete(&p("top"), true).await.unwrap();
        assert!(std::fs::symlink_metadata(dir.path().join("top")).is_err());
        assert_eq!(snapshot(outside.path()), before);
    }
}
