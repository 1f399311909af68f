//! A filesystem in memory, mounted through FUSE, that can lose power.
//!
//! Processes use it like any folder. Each file remembers how much of its content
//! was made durable by its last `fsync`/`fdatasync`; [`LazyFs::power_loss`]
//! unmounts it and returns every file to that content, as a disk loses its write
//! cache when the power goes, then mounts it again. Durability tests put a
//! daemon's data folder here, kill the daemon, cut the power and check that
//! everything it acknowledged is still there.
//!
//! The model is about file **data**: bytes written, truncated or allocated since
//! a file's last sync are lost, and a file never synced comes back empty. Names
//! (create, rename, link, unlink, mkdir) are kept at once, as if every directory
//! were synced after each change; this is kinder than a real disk for names and
//! exactly as strict for data, which is what a write-ahead log's acknowledgement
//! rests on. Files are opened with direct I/O, so the kernel caches no pages:
//! every write reaches this model, and every read sees it.

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// The most a file may hold: far above what a test writes, and a bound on a
/// write's or an allocation's offset from the kernel.
const MAX_FILE_BYTES: u64 = 1 << 34;

/// Nothing is cached by the kernel: every lookup and attribute comes from here,
/// so a remount after a power loss never meets a stale size.
const TTL: Duration = Duration::ZERO;

/// A mounted lazy filesystem. Dropping it unmounts it.
pub struct LazyFs {
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

/// What a power loss dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Files whose content differed from their last synced content.
    pub files: u64,
    /// Bytes written since a sync that are gone (lengths of undone writes and
    /// bytes cut from the end).
    pub bytes: u64,
}

impl LazyFs {
    /// Mounts an empty lazy filesystem on `mountpoint` (an existing, empty folder).
    pub fn mount(mountpoint: &Path) -> io::Result<LazyFs> {
        let state = Arc::new(Mutex::new(State::new()));
        let session = mount_session(&state, mountpoint)?;
        Ok(LazyFs {
            state,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: unmounts, returns every file to its last synced content,
    /// drops files no name reaches any more, and mounts again. Processes that
    /// used the filesystem must have ended first (the unmount fails otherwise).
    pub fn power_loss(&mut self) -> io::Result<Dropped> {
        if let Some(session) = self.session.take() {
            match session.umount_and_join() {
                Ok(()) => {}
                // The kernel ends the connection as the mount goes; a request in
                // flight then (the files of a process just killed being released)
                // surfaces as an aborted connection, not as a failure.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => return Err(e),
            }
        }
        let dropped = lock(&self.state).power_loss();
        self.session = Some(mount_session(&self.state, &self.mountpoint)?);
        Ok(dropped)
    }

    /// Bytes written and not yet synced, over all files.
    pub fn unsynced_bytes(&self) -> u64 {
        lock(&self.state)
            .nodes
            .values()
            .map(|n| {
                n.undo.iter().map(|(_, old)| old.len() as u64).sum::<u64>()
                    + (n.data.len() as u64).saturating_sub(n.synced_len)
            })
            .sum()
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

fn mount_session(state: &Arc<Mutex<State>>, at: &Path) -> io::Result<fuser::BackgroundSession> {
    let mut config = Config::default();
    // Only the mounting user (who also runs the daemons under test) may use it:
    // `allow_other` would need `user_allow_other` in /etc/fuse.conf when not root.
    config.mount_options = vec![MountOption::FSName("strata-lazyfs".into())];
    fuser::spawn_mount(Adapter(state.clone()), at, &config)
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

struct Node {
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    nlink: u32,
    /// Open handles: a file unlinked while open lives until its last close.
    open: u32,
    data: Vec<u8>,
    /// Length of the content at the last sync.
    synced_len: u64,
    /// Bytes of the synced content overwritten since the last sync, oldest
    /// first: replayed newest first, they give back the synced content.
    undo: Vec<(u64, Vec<u8>)>,
    children: BTreeMap<OsString, u64>,
    parent: u64,
    target: PathBuf,
    mtime: SystemTime,
    ctime: SystemTime,
    atime: SystemTime,
}

impl Node {
    fn new(kind: FileType, perm: u16, req: &Request, parent: u64) -> Node {
        let now = SystemTime::now();
        Node {
            kind,
            perm,
            uid: req.uid(),
            gid: req.gid(),
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            open: 0,
            data: Vec::new(),
            synced_len: 0,
            undo: Vec::new(),
            children: BTreeMap::new(),
            parent,
            target: PathBuf::new(),
            mtime: now,
            ctime: now,
            atime: now,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let size = match self.kind {
            FileType::Symlink => self.target.as_os_str().len() as u64,
            _ => self.data.len() as u64,
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind: self.kind,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Remembers the synced bytes in `[offset, offset + len)` before they change.
    fn save(&mut self, offset: u64, len: u64) {
        let end = (offset + len)
            .min(self.synced_len)
            .min(self.data.len() as u64);
        if offset < end {
            let old = self.data[offset as usize..end as usize].to_vec();
            self.undo.push((offset, old));
        }
    }

    fn set_len(&mut self, len: u64) {
        if len < self.data.len() as u64 {
            self.save(len, self.data.len() as u64 - len);
        }
        self.data.resize(len as usize, 0);
    }

    fn write(&mut self, offset: u64, buf: &[u8]) {
        self.save(offset, buf.len() as u64);
        let end = offset as usize + buf.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(buf);
    }

    fn sync(&mut self) {
        self.undo.clear();
        self.synced_len = self.data.len() as u64;
    }

    /// Returns the content to its last synced state; the bytes that were lost.
    fn revert(&mut self) -> u64 {
        let mut lost = 0;
        for (offset, old) in self.undo.drain(..).rev() {
            let end = offset as usize + old.len();
            if self.data.len() < end {
                self.data.resize(end, 0);
            }
            lost += old.len() as u64;
            self.data[offset as usize..end].copy_from_slice(&old);
        }
        lost += (self.data.len() as u64).saturating_sub(self.synced_len);
        self.data.resize(self.synced_len as usize, 0);
        lost
    }
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    handles: HashMap<u64, u64>,
    next_fh: u64,
}

impl State {
    fn new() -> State {
        let root = Node {
            kind: FileType::Directory,
            perm: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            open: 0,
            data: Vec::new(),
            synced_len: 0,
            undo: Vec::new(),
            children: BTreeMap::new(),
            parent: 1,
            target: PathBuf::new(),
            mtime: SystemTime::now(),
            ctime: SystemTime::now(),
            atime: SystemTime::now(),
        };
        State {
            nodes: HashMap::from([(1, root)]),
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
        }
    }

    fn power_loss(&mut self) -> Dropped {
        let mut dropped = Dropped::default();
        self.handles.clear();
        self.nodes.retain(|_, n| n.nlink > 0);
        for node in self.nodes.values_mut() {
            node.open = 0;
            let lost = node.revert();
            if lost > 0 {
                dropped.files += 1;
                dropped.bytes += lost;
            }
        }
        dropped
    }

    fn node(&self, ino: INodeNo) -> Result<&Node, Errno> {
        self.nodes.get(&ino.0).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: INodeNo) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: INodeNo) -> Result<&Node, Errno> {
        let n = self.node(ino)?;
        if n.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(n)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .children
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// Adds a new node named `name` in `parent`; its inode number.
    fn insert(&mut self, parent: INodeNo, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.dir(parent)?.children.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let is_dir = node.kind == FileType::Directory;
        self.nodes.insert(ino, node);
        let p = self.node_mut(parent)?;
        p.children.insert(name.to_os_string(), ino);
        if is_dir {
            p.nlink += 1;
        }
        p.mtime = SystemTime::now();
        Ok(ino)
    }

    /// Drops one link to `ino`; frees it when no name and no handle holds it.
    fn unlink_ino(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
            n.ctime = SystemTime::now();
            if n.kind == FileType::Directory || (n.nlink == 0 && n.open == 0) {
                self.nodes.remove(&ino);
            }
        }
    }

    fn remove(&mut self, parent: INodeNo, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        match (want_dir, node.kind == FileType::Directory) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            (true, true) if !node.children.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        let p = self.node_mut(parent)?;
        p.children.remove(name);
        if want_dir {
            p.nlink -= 1;
        }
        p.mtime = SystemTime::now();
        self.unlink_ino(ino);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        let ino = self.child(parent, name)?;
        self.dir(new_parent)?;
        let moving_dir = self.nodes[&ino].kind == FileType::Directory;
        // A folder may not move below itself.
        let mut up = new_parent.0;
        while moving_dir && up != 1 {
            if up == ino {
                return Err(Errno::EINVAL);
            }
            up = self.nodes[&up].parent;
        }
        if let Ok(old) = self.child(new_parent, new_name) {
            if old == ino {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            let old_is_dir = self.nodes[&old].kind == FileType::Directory;
            if moving_dir != old_is_dir {
                return Err(if old_is_dir {
                    Errno::EISDIR
                } else {
                    Errno::ENOTDIR
                });
            }
            self.remove(new_parent, new_name, old_is_dir)?;
        }
        let now = SystemTime::now();
        let p = self.node_mut(parent)?;
        p.children.remove(name);
        p.mtime = now;
        if moving_dir {
            p.nlink -= 1;
        }
        let np = self.node_mut(new_parent)?;
        np.children.insert(new_name.to_os_string(), ino);
        np.mtime = now;
        if moving_dir {
            np.nlink += 1;
        }
        let n = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        n.parent = new_parent.0;
        n.ctime = now;
        Ok(())
    }

    fn open(&mut self, ino: u64) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, ino);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.open += 1;
        }
        fh
    }

    fn release(&mut self, fh: u64) {
        let Some(ino) = self.handles.remove(&fh) else {
            return;
        };
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.open = n.open.saturating_sub(1);
            if n.open == 0 && n.nlink == 0 {
                self.nodes.remove(&ino);
            }
        }
    }

    fn file(&mut self, ino: INodeNo) -> Result<&mut Node, Errno> {
        let n = self.node_mut(ino)?;
        match n.kind {
            FileType::RegularFile => Ok(n),
            FileType::Directory => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }
}

/// The kernel-facing side: each request takes the state's lock once.
struct Adapter(Arc<Mutex<State>>);

impl Adapter {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.0)
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for Adapter {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = self.state();
        match s.child(parent, name) {
            Ok(ino) => reply.entry(&TTL, &s.nodes[&ino].attr(ino), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().node(ino) {
            Ok(n) => reply.attr(&TTL, &n.attr(ino.0)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.state();
        let result = (|| {
            if let Some(size) = size {
                if size > MAX_FILE_BYTES {
                    return Err(Errno::EFBIG);
                }
                let n = s.file(ino)?;
                n.set_len(size);
                n.mtime = SystemTime::now();
            }
            let n = s.node_mut(ino)?;
            if let Some(mode) = mode {
                n.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                n.uid = uid;
            }
            if let Some(gid) = gid {
                n.gid = gid;
            }
            if let Some(t) = atime {
                n.atime = time(t);
            }
            if let Some(t) = mtime {
                n.mtime = time(t);
            }
            n.ctime = SystemTime::now();
            Ok(n.attr(ino.0))
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.state().node(ino) {
            Ok(n) if n.kind == FileType::Symlink => {
                reply.data(std::os::unix::ffi::OsStrExt::as_bytes(n.target.as_os_str()))
            }
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.state();
        let node = Node::new(
            FileType::Directory,
            (mode & !umask & 0o7777) as u16,
            req,
            parent.0,
        );
        match s.insert(parent, name, node) {
            Ok(ino) => reply.entry(&TTL, &s.nodes[&ino].attr(ino), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.state().remove(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.state().remove(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut s = self.state();
        let mut node = Node::new(FileType::Symlink, 0o777, req, parent.0);
        node.target = target.to_path_buf();
        match s.insert(parent, link_name, node) {
            Ok(ino) => reply.entry(&TTL, &s.nodes[&ino].attr(ino), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.state().rename(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut s = self.state();
        let result = (|| {
            if s.node(ino)?.kind == FileType::Directory {
                return Err(Errno::EPERM);
            }
            if s.dir(newparent)?.children.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            s.node_mut(newparent)?
                .children
                .insert(newname.to_os_string(), ino.0);
            let n = s.node_mut(ino)?;
            n.nlink += 1;
            n.ctime = SystemTime::now();
            Ok(n.attr(ino.0))
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.state();
        match s.file(ino) {
            Ok(_) => {
                let fh = s.open(ino.0);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = self.state();
        match s.file(ino) {
            Ok(n) => {
                let start = (offset as usize).min(n.data.len());
                let end = start.saturating_add(size as usize).min(n.data.len());
                n.atime = SystemTime::now();
                reply.data(&n.data[start..end])
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if offset.saturating_add(data.len() as u64) > MAX_FILE_BYTES {
            return reply.error(Errno::EFBIG);
        }
        let mut s = self.state();
        match s.file(ino) {
            Ok(n) => {
                n.write(offset, data);
                n.mtime = SystemTime::now();
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close is not a sync: nothing becomes durable here.
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().release(fh.0);
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().file(ino) {
            Ok(n) => {
                n.sync();
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.state();
        let dir = match s.dir(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".")),
            (dir.parent, FileType::Directory, OsStr::new("..")),
        ];
        let children = dir
            .children
            .iter()
            .map(|(name, c)| (*c, s.nodes[c].kind, name.as_os_str()));
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(children)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Names are durable at once (see the module's note).
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.state();
        let used: u64 = s.nodes.values().map(|n| n.data.len() as u64 / 4096).sum();
        let blocks = MAX_FILE_BYTES / 4096;
        let free = blocks.saturating_sub(used);
        reply.statfs(blocks, free, free, 1 << 20, 1 << 20, 4096, 255, 4096)
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.state().node(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.state();
        let node = Node::new(
            FileType::RegularFile,
            (mode & !umask & 0o7777) as u16,
            req,
            parent.0,
        );
        match s.insert(parent, name, node) {
            Ok(ino) => {
                let fh = s.open(ino);
                let attr = s.nodes[&ino].attr(ino);
                reply.created(
                    &TTL,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let end = offset.saturating_add(length);
        if end > MAX_FILE_BYTES {
            return reply.error(Errno::EFBIG);
        }
        let mut s = self.state();
        let n = match s.file(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match mode {
            // Space reserved without a size change: nothing to model.
            libc::FALLOC_FL_KEEP_SIZE => reply.ok(),
            0 => {
                if end > n.data.len() as u64 {
                    n.set_len(end);
                }
                reply.ok()
            }
            _ => reply.error(Errno::EOPNOTSUPP),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &[u8]) -> Node {
        let mut n = Node {
            kind: FileType::RegularFile,
            perm: 0o644,
            uid: 0,
            gid: 0,
            nlink: 1,
            open: 0,
            data: Vec::new(),
            synced_len: 0,
            undo: Vec::new(),
            children: BTreeMap::new(),
            parent: 1,
            target: PathBuf::new(),
            mtime: SystemTime::now(),
            ctime: SystemTime::now(),
            atime: SystemTime::now(),
        };
        n.write(0, content);
        n.sync();
        n
    }

    #[test]
    fn a_revert_gives_back_the_synced_content_after_any_writes() {
        let mut n = file(b"0123456789");
        n.write(8, b"abcdef");
        n.set_len(3);
        n.write(1, b"XY");
        n.set_len(20);
        n.write(15, b"tail");
        // Undone: 2 bytes at 8, 7 cut from 3, 2 at 1; and the 10 bytes past the synced end.
        assert_eq!(n.revert(), 2 + 7 + 2 + 10);
        assert_eq!(n.data, b"0123456789");
        // After a sync the new content is the one kept.
        n.write(10, b"more");
        n.sync();
        n.write(0, b"lost");
        n.revert();
        assert_eq!(n.data, b"0123456789more");
    }
}
