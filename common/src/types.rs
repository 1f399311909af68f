//! Validated domain types and their conversions from and to the wire.
//!
//! Handlers and the client see only these. Every `TryFrom<proto::X>` turns a missing
//! or malformed field into [`Error::InvalidArgument`] (or [`Error::InvalidPath`]), so
//! nothing past the edge checks a prost `Option` again.

use crate::error::{Error, Result};
use crate::ids::{BlockId, FileId, WorkerId, MAX_FILE_ID};
use crate::path::{validate_name, StrataPath, MAX_PATH_BYTES};
use crate::proto;
pub use crate::units::SyncInterval;
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file made of blocks.
    File,
    /// A directory.
    Directory,
}

/// Where a write's bytes must be when the writer is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteType {
    /// Worker storage only: fastest, lost if evicted.
    MustCache,
    /// Worker storage and the under-store.
    CacheThrough,
    /// The under-store only.
    Through,
}

impl WriteType {
    /// Whether the bytes are kept in worker storage.
    pub fn caches(self) -> bool {
        matches!(self, WriteType::MustCache | WriteType::CacheThrough)
    }

    /// Whether the bytes are written to the under-store.
    pub fn persists(self) -> bool {
        matches!(self, WriteType::CacheThrough | WriteType::Through)
    }
}

/// Whether a read keeps what it reads in worker storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReadType {
    /// Cache blocks read from the under-store.
    Cache,
    /// Read without caching.
    NoCache,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s.to_ascii_uppercase().replace('-', "_").as_str() {
                    $($text => Ok($ty::$variant),)*
                    _ => Err(format!(concat!("unknown ", stringify!($ty), " {:?} (one of: ", $($text, " ",)* ")"), s)),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($ty::$variant => $text,)* })
            }
        }
    };
}
text_enum!(WriteType { MustCache => "MUST_CACHE", CacheThrough => "CACHE_THROUGH", Through => "THROUGH" });
text_enum!(ReadType { Cache => "CACHE", NoCache => "NO_CACHE" });

impl TryFrom<i32> for WriteType {
    type Error = Error;
    fn try_from(v: i32) -> Result<Self> {
        match proto::WriteType::try_from(v) {
            Ok(proto::WriteType::MustCache) => Ok(WriteType::MustCache),
            Ok(proto::WriteType::CacheThrough) => Ok(WriteType::CacheThrough),
            Ok(proto::WriteType::Through) => Ok(WriteType::Through),
            Ok(proto::WriteType::Unspecified) | Err(_) => Err(Error::invalid_argument(
                "write_type",
                format!("missing or unknown ({v})"),
            )),
        }
    }
}

impl From<WriteType> for proto::WriteType {
    fn from(w: WriteType) -> Self {
        match w {
            WriteType::MustCache => proto::WriteType::MustCache,
            WriteType::CacheThrough => proto::WriteType::CacheThrough,
            WriteType::Through => proto::WriteType::Through,
        }
    }
}

impl TryFrom<i32> for ReadType {
    type Error = Error;
    fn try_from(v: i32) -> Result<Self> {
        match proto::ReadType::try_from(v) {
            Ok(proto::ReadType::Cache) => Ok(ReadType::Cache),
            Ok(proto::ReadType::NoCache) => Ok(ReadType::NoCache),
            Ok(proto::ReadType::Unspecified) | Err(_) => Err(Error::invalid_argument(
                "read_type",
                format!("missing or unknown ({v})"),
            )),
        }
    }
}

impl From<ReadType> for proto::ReadType {
    fn from(r: ReadType) -> Self {
        match r {
            ReadType::Cache => proto::ReadType::Cache,
            ReadType::NoCache => proto::ReadType::NoCache,
        }
    }
}

/// Longest cluster id accepted from the wire.
const MAX_CLUSTER_ID_BYTES: usize = 128;

/// A cluster id field of a request: required, and short.
fn cluster_id(raw: String) -> Result<String> {
    if raw.is_empty() || raw.len() > MAX_CLUSTER_ID_BYTES {
        return Err(Error::invalid_argument(
            "cluster_id",
            format!("must be 1 to {MAX_CLUSTER_ID_BYTES} bytes"),
        ));
    }
    Ok(raw)
}

fn required<T>(v: Option<T>, field: &str) -> Result<T> {
    v.ok_or_else(|| Error::invalid_argument(field, "missing"))
}

/// Parses a path field of a request.
pub fn parse_path(raw: &str) -> Result<StrataPath> {
    StrataPath::parse(raw)
}

/// What the master knows of one file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Inode id.
    pub id: FileId,
    /// Full path.
    pub path: StrataPath,
    /// File or directory.
    pub kind: FileKind,
    /// Bytes (files; 0 for directories).
    pub length: u64,
    /// Block size the file was created with.
    pub block_size: u64,
    /// Whether the writer closed it.
    pub complete: bool,
    /// Whether its bytes are in the under-store.
    pub persisted: bool,
    /// Last modification, ms since the epoch.
    pub mtime_ms: i64,
    /// Whether a mount is rooted here.
    pub mount_point: bool,
    /// Share of the bytes held by workers, 0..=100.
    pub cached_percent: u32,
}

impl FileInfo {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }

    /// The last path component (`/` for the root).
    pub fn name(&self) -> &str {
        self.path.name().unwrap_or("/")
    }
}

impl TryFrom<proto::FileInfo> for FileInfo {
    type Error = Error;
    fn try_from(p: proto::FileInfo) -> Result<Self> {
        let kind = match proto::FileKind::try_from(p.kind) {
            Ok(proto::FileKind::File) => FileKind::File,
            Ok(proto::FileKind::Directory) => FileKind::Directory,
            Ok(proto::FileKind::Unspecified) | Err(_) => {
                return Err(Error::invalid_argument("kind", "missing or unknown"))
            }
        };
        Ok(FileInfo {
            id: FileId(p.id),
            path: StrataPath::parse(&p.path)?,
            kind,
            length: p.length,
            block_size: p.block_size,
            complete: p.complete,
            persisted: p.persisted,
            mtime_ms: p.mtime_ms,
            mount_point: p.mount_point,
            cached_percent: p.cached_percent.min(100),
        })
    }
}

impl From<FileInfo> for proto::FileInfo {
    fn from(f: FileInfo) -> Self {
        proto::FileInfo {
            id: f.id.0,
            name: f.name().to_string(),
            path: f.path.to_string(),
            kind: match f.kind {
                FileKind::File => proto::FileKind::File,
                FileKind::Directory => proto::FileKind::Directory,
            } as i32,
            length: f.length,
            block_size: f.block_size,
            complete: f.complete,
            persisted: f.persisted,
            mtime_ms: f.mtime_ms,
            mount_point: f.mount_point,
            cached_percent: f.cached_percent,
        }
    }
}

/// Where a worker answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerAddress {
    /// Id from registration.
    pub id: WorkerId,
    /// Host name, for locality.
    pub host: String,
    /// `host:port` of its gRPC server.
    pub rpc_address: String,
}

impl TryFrom<proto::WorkerAddress> for WorkerAddress {
    type Error = Error;
    fn try_from(p: proto::WorkerAddress) -> Result<Self> {
        if p.rpc_address.is_empty() {
            return Err(Error::invalid_argument("rpc_address", "missing"));
        }
        Ok(WorkerAddress {
            id: WorkerId(p.worker_id),
            host: p.host,
            rpc_address: p.rpc_address,
        })
    }
}

impl From<WorkerAddress> for proto::WorkerAddress {
    fn from(w: WorkerAddress) -> Self {
        proto::WorkerAddress {
            worker_id: w.id.0,
            host: w.host,
            rpc_address: w.rpc_address,
        }
    }
}

/// A file's place in an under-store: the mount URI and the validated path below it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UfsLocation {
    /// URI of the mount's root, e.g. `file:///data/lake`.
    pub mount_uri: String,
    /// Components below the mount root; empty for the root itself.
    pub components: Vec<String>,
}

impl UfsLocation {
    /// Builds a location, validating every component (no `..`, no empty name).
    pub fn new(mount_uri: impl Into<String>, relative: &str) -> Result<Self> {
        let components = split_relative(relative)?;
        Ok(UfsLocation {
            mount_uri: mount_uri.into(),
            components,
        })
    }

    /// The relative path, `/`-joined.
    pub fn relative(&self) -> String {
        self.components.join("/")
    }
}

/// Splits and validates an under-store relative path (`a/b/c`, or empty for the root).
/// It is no longer than a namespace path below `/` can be (a file's under-store path
/// is its namespace path below its mount point).
pub fn split_relative(relative: &str) -> Result<Vec<String>> {
    if relative.is_empty() {
        return Ok(Vec::new());
    }
    if relative.len() >= MAX_PATH_BYTES {
        return Err(Error::InvalidPath {
            path: relative.to_string(),
            reason: format!(
                "under-store path is longer than {} bytes",
                MAX_PATH_BYTES - 1
            ),
        });
    }
    relative
        .split('/')
        .map(|c| {
            validate_name(c)
                .map(|_| c.to_string())
                .map_err(|reason| Error::InvalidPath {
                    path: relative.to_string(),
                    reason,
                })
        })
        .collect()
}

impl TryFrom<proto::UfsLocation> for UfsLocation {
    type Error = Error;
    fn try_from(p: proto::UfsLocation) -> Result<Self> {
        if p.mount_uri.is_empty() {
            return Err(Error::invalid_argument("ufs.mount_uri", "missing"));
        }
        UfsLocation::new(p.mount_uri, &p.path)
    }
}

impl From<UfsLocation> for proto::UfsLocation {
    fn from(u: UfsLocation) -> Self {
        proto::UfsLocation {
            path: u.relative(),
            mount_uri: u.mount_uri,
        }
    }
}

/// Identity of an under-store file's content as Strata recorded it.
///
/// A read-through compares it with the file it opens, and the master compares it
/// with the file's record before it accepts a block read that way: bytes of another
/// file (one renamed into the path, or changed in place) are never cached as this
/// one's. `version` is opaque to everyone but the backend that made it; empty means
/// only the length is known (files recorded before versions were kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct UfsFingerprint {
    /// Bytes in the file.
    pub length: u64,
    /// Backend-specific content identity (local folder: inode number and mtime).
    pub version: String,
}

impl UfsFingerprint {
    /// Why `found` is not the file this fingerprint describes, if it is not.
    pub fn mismatch(&self, found: &UfsFingerprint) -> Option<String> {
        if self.length != found.length {
            return Some(format!(
                "{} bytes recorded, {} found",
                self.length, found.length
            ));
        }
        if !self.version.is_empty() && self.version != found.version {
            return Some(format!(
                "version {:?} recorded, {:?} found",
                self.version, found.version
            ));
        }
        None
    }
}

/// Longest fingerprint version accepted from the wire (an ETag is under 100 bytes).
pub const MAX_FINGERPRINT_VERSION_BYTES: usize = 1024;

impl TryFrom<proto::UfsFingerprint> for UfsFingerprint {
    type Error = Error;
    fn try_from(p: proto::UfsFingerprint) -> Result<Self> {
        if p.version.len() > MAX_FINGERPRINT_VERSION_BYTES {
            return Err(Error::invalid_argument(
                "fingerprint.version",
                format!(
                    "{} bytes, more than {MAX_FINGERPRINT_VERSION_BYTES}",
                    p.version.len()
                ),
            ));
        }
        Ok(UfsFingerprint {
            length: p.length,
            version: p.version,
        })
    }
}

impl From<UfsFingerprint> for proto::UfsFingerprint {
    fn from(f: UfsFingerprint) -> Self {
        proto::UfsFingerprint {
            length: f.length,
            version: f.version,
        }
    }
}

/// One block of a file and the workers holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLocation {
    /// Block id.
    pub block_id: BlockId,
    /// Offset of the block's first byte in the file.
    pub offset: u64,
    /// Bytes in the block.
    pub length: u64,
    /// Workers that hold it, best first.
    pub workers: Vec<WorkerAddress>,
}

impl TryFrom<proto::BlockLocation> for BlockLocation {
    type Error = Error;
    fn try_from(p: proto::BlockLocation) -> Result<Self> {
        Ok(BlockLocation {
            block_id: BlockId(p.block_id),
            offset: p.offset,
            length: p.length,
            workers: p
                .workers
                .into_iter()
                .map(WorkerAddress::try_from)
                .collect::<Result<_>>()?,
        })
    }
}

impl From<BlockLocation> for proto::BlockLocation {
    fn from(b: BlockLocation) -> Self {
        proto::BlockLocation {
            block_id: b.block_id.0,
            offset: b.offset,
            length: b.length,
            workers: b.workers.into_iter().map(Into::into).collect(),
        }
    }
}

/// A file, its blocks with their locations, and its under-store copy if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBlocks {
    /// The file.
    pub info: FileInfo,
    /// Its blocks in order.
    pub blocks: Vec<BlockLocation>,
    /// Its under-store copy, when persisted.
    pub ufs: Option<UfsLocation>,
    /// The under-store copy's identity as recorded (meaningful with `ufs`).
    pub ufs_fingerprint: UfsFingerprint,
    /// The cluster the block ids belong to.
    pub cluster_id: String,
}

impl FileBlocks {
    /// Checks that the block list is the one the file's length and block size imply
    /// (count, ids, offsets, lengths), so a reader can index it without further checks.
    pub fn validate(&self) -> Result<()> {
        let info = &self.info;
        let bad = |reason: String| {
            Error::internal(format!("{}: inconsistent block list: {reason}", info.path))
        };
        if info.is_dir() {
            return Err(bad("a directory has no blocks".into()));
        }
        if info.block_size == 0 && info.length > 0 {
            return Err(bad("block size 0".into()));
        }
        let expected = crate::ids::block_count(info.length, info.block_size);
        if self.blocks.len() as u64 != expected {
            return Err(bad(format!(
                "{} blocks for {} bytes at block size {}",
                self.blocks.len(),
                info.length,
                info.block_size
            )));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            let i = i as u64;
            let offset = i * info.block_size;
            let length = (info.length - offset).min(info.block_size);
            if BlockId::new(info.id, i).ok() != Some(b.block_id)
                || b.offset != offset
                || b.length != length
            {
                return Err(bad(format!(
                    "block {i} is {}@{}+{}, expected {}@{offset}+{length}",
                    b.block_id,
                    b.offset,
                    b.length,
                    BlockId::new(info.id, i).map(|b| b.0).unwrap_or(0)
                )));
            }
        }
        if self.ufs.is_some() && self.ufs_fingerprint.length != info.length {
            return Err(bad(format!(
                "under-store copy recorded with {} bytes, file has {}",
                self.ufs_fingerprint.length, info.length
            )));
        }
        Ok(())
    }
}

impl TryFrom<proto::GetFileBlocksResponse> for FileBlocks {
    type Error = Error;
    fn try_from(p: proto::GetFileBlocksResponse) -> Result<Self> {
        let blocks = FileBlocks {
            info: required(p.info, "info")?.try_into()?,
            blocks: p
                .blocks
                .into_iter()
                .map(BlockLocation::try_from)
                .collect::<Result<_>>()?,
            // The fingerprint means something only with the location, and travels
            // only with it (see the `From` below); alone it is ignored.
            ufs_fingerprint: match &p.ufs {
                Some(_) => p
                    .ufs_fingerprint
                    .map(UfsFingerprint::try_from)
                    .transpose()?
                    .unwrap_or_default(),
                None => UfsFingerprint::default(),
            },
            ufs: p.ufs.map(UfsLocation::try_from).transpose()?,
            cluster_id: cluster_id(p.cluster_id)?,
        };
        blocks.validate()?;
        Ok(blocks)
    }
}

impl From<FileBlocks> for proto::GetFileBlocksResponse {
    fn from(f: FileBlocks) -> Self {
        proto::GetFileBlocksResponse {
            info: Some(f.info.into()),
            blocks: f.blocks.into_iter().map(Into::into).collect(),
            ufs_fingerprint: f.ufs.is_some().then(|| f.ufs_fingerprint.into()),
            ufs: f.ufs.map(Into::into),
            cluster_id: f.cluster_id,
        }
    }
}

/// One entry of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPointInfo {
    /// Where in the namespace.
    pub path: StrataPath,
    /// Under-store URI.
    pub uri: String,
    /// Whether writes to it are refused.
    pub read_only: bool,
    /// Mount id.
    pub mount_id: u64,
    /// The mount's options: the backend's, and Strata's own `sync_interval`.
    pub options: MountOptions,
}

/// A mount's options (`s3.endpoint = http://...`, `sync_interval = 5m`), in key order. They are
/// journaled and shown to anyone who lists the mounts, so they never hold secrets:
/// credentials come from each daemon's own environment.
pub type MountOptions = std::collections::BTreeMap<String, String>;

/// Most options one mount may carry.
pub const MAX_MOUNT_OPTIONS: usize = 32;
/// Longest option key.
pub const MAX_MOUNT_OPTION_KEY: usize = 64;
/// Longest option value.
pub const MAX_MOUNT_OPTION_VALUE: usize = 1024;

/// Checks the shape of a mount's options (what each means is the backend's to
/// check): at most 32, keys of 1 to 64 characters from `a-z 0-9 . _ -`, values of
/// at most 1,024 bytes.
pub fn check_mount_options(options: &MountOptions) -> Result<()> {
    if options.len() > MAX_MOUNT_OPTIONS {
        return Err(Error::invalid_argument(
            "options",
            format!("{} options; at most {MAX_MOUNT_OPTIONS}", options.len()),
        ));
    }
    for (k, v) in options {
        let key_ok = (1..=MAX_MOUNT_OPTION_KEY).contains(&k.len())
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !key_ok {
            return Err(Error::invalid_argument(
                "options",
                format!("{k:?} is not an option name (1 to 64 of a-z, 0-9, '.', '_', '-')"),
            ));
        }
        if v.len() > MAX_MOUNT_OPTION_VALUE {
            return Err(Error::invalid_argument(
                format!("option {k}"),
                format!("{} bytes; at most {MAX_MOUNT_OPTION_VALUE}", v.len()),
            ));
        }
    }
    mount_sync_interval(options)?;
    Ok(())
}

/// The mount option Strata reads itself (the backend never sees it): how stale
/// the namespace's view of the mount may grow, as a [`SyncInterval`].
pub const SYNC_INTERVAL_OPTION: &str = "sync_interval";

/// The sync interval a mount's options name, if any; a bad value is an error.
pub fn mount_sync_interval(options: &MountOptions) -> Result<Option<SyncInterval>> {
    options
        .get(SYNC_INTERVAL_OPTION)
        .map(|v| {
            v.parse()
                .map_err(|e| Error::invalid_argument(format!("option {SYNC_INTERVAL_OPTION}"), e))
        })
        .transpose()
}

/// A mount's options without those Strata reads itself: what its backend gets.
pub fn backend_options(options: &MountOptions) -> MountOptions {
    options
        .iter()
        .filter(|(k, _)| k.as_str() != SYNC_INTERVAL_OPTION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl TryFrom<proto::MountPointInfo> for MountPointInfo {
    type Error = Error;
    fn try_from(p: proto::MountPointInfo) -> Result<Self> {
        if p.uri.is_empty() {
            return Err(Error::invalid_argument("uri", "missing"));
        }
        check_mount_options(&p.options)?;
        Ok(MountPointInfo {
            path: StrataPath::parse(&p.path)?,
            uri: p.uri,
            read_only: p.read_only,
            mount_id: p.mount_id,
            options: p.options,
        })
    }
}

impl From<MountPointInfo> for proto::MountPointInfo {
    fn from(m: MountPointInfo) -> Self {
        proto::MountPointInfo {
            path: m.path.to_string(),
            uri: m.uri,
            read_only: m.read_only,
            mount_id: m.mount_id,
            options: m.options,
        }
    }
}

/// Bytes of a client id in a [`RequestId`].
pub const CLIENT_ID_BYTES: usize = 16;

/// Names one mutation of one client: a retry of it carries the same id, and the
/// master answers it with the first attempt's result instead of running it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId {
    /// The client, random per client instance.
    pub client: [u8; CLIENT_ID_BYTES],
    /// The mutation's number for this client, from 1.
    pub seq: u64,
    /// Every mutation of this client below this number has been answered (or
    /// given up), so its result can be forgotten. At most `seq`.
    pub answered_below: u64,
}

impl TryFrom<proto::RequestId> for RequestId {
    type Error = Error;
    fn try_from(p: proto::RequestId) -> Result<Self> {
        let client: [u8; CLIENT_ID_BYTES] = p.client.as_ref().try_into().map_err(|_| {
            Error::invalid_argument(
                "request.client",
                format!("{} bytes, expected {CLIENT_ID_BYTES}", p.client.len()),
            )
        })?;
        if p.seq == 0 {
            return Err(Error::invalid_argument("request.seq", "must be at least 1"));
        }
        if p.answered_below > p.seq {
            return Err(Error::invalid_argument(
                "request.answered_below",
                format!(
                    "{} is past the request's own seq {}",
                    p.answered_below, p.seq
                ),
            ));
        }
        Ok(RequestId {
            client,
            seq: p.seq,
            answered_below: p.answered_below,
        })
    }
}

impl From<RequestId> for proto::RequestId {
    fn from(r: RequestId) -> Self {
        proto::RequestId {
            client: r.client.to_vec().into(),
            seq: r.seq,
            answered_below: r.answered_below,
        }
    }
}

/// The optional request id of a mutation, checked.
pub fn request_id(p: Option<proto::RequestId>) -> Result<Option<RequestId>> {
    p.map(RequestId::try_from).transpose()
}

/// A request to create a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateFile {
    /// Where.
    pub path: StrataPath,
    /// Block size, > 0.
    pub block_size: u64,
    /// Create missing parents.
    pub recursive: bool,
    /// How it will be written.
    pub write_type: WriteType,
    /// Makes a retry safe.
    pub request: Option<RequestId>,
}

impl TryFrom<proto::CreateFileRequest> for CreateFile {
    type Error = Error;
    fn try_from(p: proto::CreateFileRequest) -> Result<Self> {
        crate::ids::check_block_size("block_size", p.block_size)?;
        Ok(CreateFile {
            path: StrataPath::parse(&p.path)?,
            block_size: p.block_size,
            recursive: p.recursive,
            write_type: p.write_type.try_into()?,
            request: request_id(p.request)?,
        })
    }
}

/// A block's bytes in the under-store, for read-through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UfsBlockSource {
    /// The file in the under-store.
    pub location: UfsLocation,
    /// Offset of the block's first byte in that file.
    pub block_start: u64,
    /// Bytes in the block.
    pub block_length: u64,
    /// The file as recorded; the worker refuses a file found different.
    pub fingerprint: UfsFingerprint,
}

/// A request to read part of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    /// Which block.
    pub block_id: BlockId,
    /// First byte, relative to the block.
    pub offset: u64,
    /// Bytes wanted.
    pub length: u64,
    /// Whether a miss is cached.
    pub read_type: ReadType,
    /// Where to read a miss from.
    pub source: Option<UfsBlockSource>,
    /// The cluster the block id belongs to.
    pub cluster_id: String,
}

impl TryFrom<proto::ReadBlockRequest> for ReadBlock {
    type Error = Error;
    fn try_from(p: proto::ReadBlockRequest) -> Result<Self> {
        let source = match p.source {
            Some(s) => {
                let location = required(s.location, "source.location")?.try_into()?;
                let fingerprint: UfsFingerprint =
                    required(s.fingerprint, "source.fingerprint")?.try_into()?;
                if s.block_length == 0 || s.block_length > crate::ids::MAX_BLOCK_SIZE {
                    return Err(Error::invalid_argument(
                        "source.block_length",
                        format!(
                            "{} is outside 1..={} bytes",
                            s.block_length,
                            crate::ids::MAX_BLOCK_SIZE
                        ),
                    ));
                }
                let block_end = s.block_start.checked_add(s.block_length);
                if block_end.is_none_or(|end| end > fingerprint.length) {
                    return Err(Error::invalid_argument(
                        "source.block_length",
                        format!(
                            "block {}+{} ends past the {}-byte file",
                            s.block_start, s.block_length, fingerprint.length
                        ),
                    ));
                }
                Some(UfsBlockSource {
                    location,
                    block_start: s.block_start,
                    block_length: s.block_length,
                    fingerprint,
                })
            }
            None => None,
        };
        if p.length == 0 {
            return Err(Error::invalid_argument("length", "must be more than 0"));
        }
        if p.offset.checked_add(p.length).is_none() {
            return Err(Error::invalid_argument(
                "length",
                format!("range {}+{} ends past 2^64", p.offset, p.length),
            ));
        }
        if let Some(s) = &source {
            if p.offset
                .checked_add(p.length)
                .is_none_or(|end| end > s.block_length)
            {
                return Err(Error::invalid_argument(
                    "length",
                    "range ends past the block",
                ));
            }
        }
        Ok(ReadBlock {
            block_id: BlockId(p.block_id),
            offset: p.offset,
            length: p.length,
            read_type: p.read_type.try_into()?,
            source,
            cluster_id: cluster_id(p.cluster_id)?,
        })
    }
}

impl From<ReadBlock> for proto::ReadBlockRequest {
    fn from(r: ReadBlock) -> Self {
        proto::ReadBlockRequest {
            block_id: r.block_id.0,
            offset: r.offset,
            length: r.length,
            read_type: proto::ReadType::from(r.read_type) as i32,
            source: r.source.map(|s| proto::UfsBlockSource {
                location: Some(s.location.into()),
                block_start: s.block_start,
                block_length: s.block_length,
                fingerprint: Some(s.fingerprint.into()),
            }),
            cluster_id: r.cluster_id,
        }
    }
}

/// The header of a file write stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFileHeader {
    /// The file being written.
    pub file_id: FileId,
    /// Its block size.
    pub block_size: u64,
    /// Its write type.
    pub write_type: WriteType,
    /// Its under-store location; present exactly when the write type persists.
    pub ufs: Option<UfsLocation>,
    /// fsync blocks before they become visible.
    pub sync: bool,
    /// The cluster the file belongs to.
    pub cluster_id: String,
}

impl TryFrom<proto::WriteFileHeader> for WriteFileHeader {
    type Error = Error;
    fn try_from(p: proto::WriteFileHeader) -> Result<Self> {
        let write_type: WriteType = p.write_type.try_into()?;
        crate::ids::check_block_size("block_size", p.block_size)?;
        let ufs = p.ufs.map(UfsLocation::try_from).transpose()?;
        if write_type.persists() != ufs.is_some() {
            return Err(Error::invalid_argument(
                "ufs",
                if write_type.persists() {
                    format!("required by {write_type}")
                } else {
                    format!("not used by {write_type}")
                },
            ));
        }
        // The worker names the file's blocks by its id: 0 is no file, and an id past
        // MAX_FILE_ID has no block ids.
        if !(1..=MAX_FILE_ID).contains(&p.file_id) {
            return Err(Error::invalid_argument(
                "file_id",
                format!("{} is outside 1..={MAX_FILE_ID}", p.file_id),
            ));
        }
        Ok(WriteFileHeader {
            file_id: FileId(p.file_id),
            block_size: p.block_size,
            write_type,
            ufs,
            sync: p.sync,
            cluster_id: cluster_id(p.cluster_id)?,
        })
    }
}

impl From<WriteFileHeader> for proto::WriteFileHeader {
    fn from(h: WriteFileHeader) -> Self {
        proto::WriteFileHeader {
            file_id: h.file_id.0,
            block_size: h.block_size,
            write_type: proto::WriteType::from(h.write_type) as i32,
            ufs: h.ufs.map(Into::into),
            sync: h.sync,
            cluster_id: h.cluster_id,
        }
    }
}

/// A master's part in the journal (the Raft group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalRole {
    /// Takes proposals and replicates them.
    Leader,
    /// Follows a leader.
    Follower,
    /// Standing for election.
    Candidate,
    /// Stopped after a storage failure.
    Failed,
}

impl fmt::Display for JournalRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JournalRole::Leader => "leader",
            JournalRole::Follower => "follower",
            JournalRole::Candidate => "candidate",
            JournalRole::Failed => "failed",
        })
    }
}

impl From<JournalRole> for proto::JournalRole {
    fn from(r: JournalRole) -> Self {
        match r {
            JournalRole::Leader => proto::JournalRole::Leader,
            JournalRole::Follower => proto::JournalRole::Follower,
            JournalRole::Candidate => proto::JournalRole::Candidate,
            JournalRole::Failed => proto::JournalRole::Failed,
        }
    }
}

/// One master's journal, as `strata fsadmin report` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JournalReport {
    /// The master's id in the group.
    pub id: u64,
    /// Its role.
    pub role: JournalRole,
    /// Current term.
    pub term: u64,
    /// The leader's id as this master knows it; 0 for none.
    pub leader_id: u64,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied to the metastore.
    pub applied_index: u64,
    /// First index held in the log.
    pub first_index: u64,
    /// Last index held in the log.
    pub last_index: u64,
    /// Fsynced appends of the log since the master started.
    pub log_syncs: u64,
    /// Entries those appends held.
    pub entries_appended: u64,
    /// Bytes of the log on disk.
    pub log_bytes: u64,
}

impl TryFrom<proto::GetJournalReportResponse> for JournalReport {
    type Error = Error;
    fn try_from(p: proto::GetJournalReportResponse) -> Result<Self> {
        let role = match proto::JournalRole::try_from(p.role) {
            Ok(proto::JournalRole::Leader) => JournalRole::Leader,
            Ok(proto::JournalRole::Follower) => JournalRole::Follower,
            Ok(proto::JournalRole::Candidate) => JournalRole::Candidate,
            Ok(proto::JournalRole::Failed) => JournalRole::Failed,
            Ok(proto::JournalRole::Unspecified) | Err(_) => {
                return Err(Error::invalid_argument(
                    "role",
                    format!("missing or unknown ({})", p.role),
                ))
            }
        };
        if p.applied_index > p.commit_index || p.first_index > p.last_index.saturating_add(1) {
            return Err(Error::invalid_argument(
                "journal report",
                format!(
                    "indexes out of order: applied {} commit {} first {} last {}",
                    p.applied_index, p.commit_index, p.first_index, p.last_index
                ),
            ));
        }
        Ok(JournalReport {
            id: p.id,
            role,
            term: p.term,
            leader_id: p.leader_id,
            commit_index: p.commit_index,
            applied_index: p.applied_index,
            first_index: p.first_index,
            last_index: p.last_index,
            log_syncs: p.log_syncs,
            entries_appended: p.entries_appended,
            log_bytes: p.log_bytes,
        })
    }
}

impl From<JournalReport> for proto::GetJournalReportResponse {
    fn from(r: JournalReport) -> Self {
        proto::GetJournalReportResponse {
            id: r.id,
            role: proto::JournalRole::from(r.role) as i32,
            term: r.term,
            leader_id: r.leader_id,
            commit_index: r.commit_index,
            applied_index: r.applied_index,
            first_index: r.first_index,
            last_index: r.last_index,
            log_syncs: r.log_syncs,
            entries_appended: r.entries_appended,
            log_bytes: r.log_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_are_invalid_arguments() {
        let err = ReadBlock::try_from(proto::ReadBlockRequest {
            block_id: 1,
            read_type: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }));
        let err = WriteFileHeader::try_from(proto::WriteFileHeader {
            file_id: 1,
            block_size: 10,
            write_type: proto::WriteType::Through as i32,
            ufs: None,
            sync: false,
            cluster_id: "c".into(),
        })
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }));
    }

    fn header(write_type: proto::WriteType, ufs: bool, file_id: u64) -> proto::WriteFileHeader {
        proto::WriteFileHeader {
            file_id,
            block_size: 1 << 20,
            write_type: write_type as i32,
            ufs: ufs.then(|| proto::UfsLocation {
                mount_uri: "file:///lake".into(),
                path: "a/b".into(),
            }),
            sync: false,
            cluster_id: "c".into(),
        }
    }

    #[test]
    fn a_write_header_has_a_location_exactly_when_it_persists() {
        use proto::WriteType as W;
        for (write_type, ufs, ok) in [
            (W::MustCache, false, true),
            (W::MustCache, true, false),
            (W::CacheThrough, true, true),
            (W::CacheThrough, false, false),
            (W::Through, true, true),
            (W::Through, false, false),
        ] {
            let got = WriteFileHeader::try_from(header(write_type, ufs, 7));
            assert_eq!(got.is_ok(), ok, "{write_type:?} with ufs {ufs}: {got:?}");
        }
    }

    #[test]
    fn a_write_header_names_a_file_that_can_have_blocks() {
        for file_id in [0, MAX_FILE_ID + 1, u64::MAX] {
            let err =
                WriteFileHeader::try_from(header(proto::WriteType::MustCache, false, file_id))
                    .unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { ref field, .. } if field == "file_id"),
                "{err:?}"
            );
        }
        let h = WriteFileHeader::try_from(header(proto::WriteType::MustCache, false, MAX_FILE_ID))
            .unwrap();
        assert!(BlockId::new(h.file_id, 0).is_ok());
    }

    #[test]
    fn a_read_range_past_u64_is_refused() {
        // Accepted before when the request named no under-store source.
        let err = ReadBlock::try_from(proto::ReadBlockRequest {
            block_id: 1 << 24,
            offset: 1,
            length: u64::MAX,
            read_type: proto::ReadType::Cache as i32,
            source: None,
            cluster_id: "c".into(),
        })
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    }

    #[test]
    fn an_under_store_path_longer_than_a_namespace_path_is_refused() {
        let name = "x".repeat(crate::path::MAX_NAME_BYTES);
        let long = vec![name.as_str(); 17].join("/");
        assert!(long.len() > MAX_PATH_BYTES);
        assert!(matches!(
            split_relative(&long),
            Err(Error::InvalidPath { .. })
        ));
        assert!(UfsLocation::new("file:///x", &long).is_err());
        let at_limit = &long[..MAX_PATH_BYTES - 1];
        assert_eq!(split_relative(at_limit).unwrap().len(), 16);
    }

    #[test]
    fn a_fingerprint_without_a_location_is_ignored() {
        let resp = proto::GetFileBlocksResponse {
            info: Some(proto::FileInfo {
                id: 2,
                path: "/f".into(),
                kind: proto::FileKind::File as i32,
                block_size: 4096,
                ..Default::default()
            }),
            blocks: Vec::new(),
            ufs: None,
            ufs_fingerprint: Some(proto::UfsFingerprint {
                length: 0,
                version: "v".into(),
            }),
            cluster_id: "c".into(),
        };
        let blocks = FileBlocks::try_from(resp).unwrap();
        // Was kept, so the decoded value did not survive its own encoding.
        assert_eq!(blocks.ufs_fingerprint, UfsFingerprint::default());
        let again = FileBlocks::try_from(proto::GetFileBlocksResponse::from(blocks.clone()));
        assert_eq!(again.unwrap(), blocks);
    }

    #[test]
    fn a_mount_without_a_uri_is_refused() {
        let m = proto::MountPointInfo {
            path: "/m".into(),
            uri: String::new(),
            read_only: false,
            mount_id: 3,
            options: Default::default(),
        };
        assert!(MountPointInfo::try_from(m).is_err());
    }

    #[test]
    fn mount_options_are_bounded() {
        let one = |k: &str, v: &str| MountOptions::from([(k.to_string(), v.to_string())]);
        assert!(check_mount_options(&one("s3.endpoint", "http://127.0.0.1:9000")).is_ok());
        assert!(check_mount_options(&one("", "x")).is_err());
        assert!(check_mount_options(&one("S3.Endpoint", "x")).is_err());
        assert!(check_mount_options(&one(&"k".repeat(65), "x")).is_err());
        assert!(check_mount_options(&one("k", &"v".repeat(1025))).is_err());
        let many: MountOptions = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_mount_options(&many).is_err());
        assert!(check_mount_options(&one("sync_interval", "5m")).is_ok());
        assert!(check_mount_options(&one("sync_interval", "sometimes")).is_err());
        assert_eq!(
            mount_sync_interval(&one("sync_interval", "-1")).unwrap(),
            Some(SyncInterval::Never)
        );
        let both = MountOptions::from([
            ("sync_interval".to_string(), "0".to_string()),
            ("s3.region".to_string(), "x".to_string()),
        ]);
        assert_eq!(backend_options(&both), one("s3.region", "x"));
    }

    #[test]
    fn ufs_location_rejects_escapes() {
        assert!(UfsLocation::new("file:///x", "a/../../etc").is_err());
        assert!(UfsLocation::new("file:///x", "/abs").is_err());
        assert!(UfsLocation::new("file:///x", "a//b").is_err());
        assert_eq!(
            UfsLocation::new("file:///x", "a/b").unwrap().relative(),
            "a/b"
        );
    }

    #[test]
    fn modes_parse_from_text() {
        assert_eq!(
            "cache_through".parse::<WriteType>().unwrap(),
            WriteType::CacheThrough
        );
        assert_eq!("NO_CACHE".parse::<ReadType>().unwrap(), ReadType::NoCache);
        assert!("sometimes".parse::<WriteType>().is_err());
        assert_eq!(WriteType::MustCache.to_string(), "MUST_CACHE");
    }
}
