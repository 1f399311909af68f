//! The namespace and the data path against a reference model: random sequences of
//! file-system operations run on a real mini-cluster (one master, two workers, a
//! local folder mounted at `/`) and on a small in-memory tree, and every answer
//! must agree: success or the same error kind, byte-exact reads, listings with the
//! same names, kinds, lengths, block sizes and persistence.
//!
//! The operations: create and write a file (any write type, block size and length,
//! in several `write` calls), create one and abandon its writer (the file stays
//! incomplete), mkdir, rename, delete, free, read a whole file, read a range
//! (positioned or after a seek), list, get the status, and drop a file into the
//! under-store behind Strata's back. Names come from `{a, b, c}` at depth up to
//! three, so operations collide often. After each sequence the whole tree is
//! compared, every complete file read back, and the under-store checked: it holds
//! exactly the persisted files, with their bytes, and nothing Strata does not know.
//!
//! The expected outcomes follow `master/src/namespace.rs` (`mkdir`, `create_file`,
//! `rename`, `delete`, `free`, `list_page`, `lookup`). The model's invariant that
//! makes under-store drops exact: everything in the under-store below a case's
//! folder is in the model, so a file dropped where the model has nothing is found
//! by the next lookup or listing (and not earlier than the model can tell).
//!
//! One cluster serves every sequence; each sequence, shrinking runs included, works
//! in a fresh folder `/case-N` and removes it at the end. A failure prints the
//! shortest sequence proptest could find. To run longer:
//!
//! ```text
//! PROPTEST_CASES=1000 cargo nextest run -p strata-tests --test model
//! ```
//!
//! With `--no-capture` the run ends by counting each operation's answers (success,
//! or the error kind), to show what the sequences reached.

use proptest::prelude::*;
use proptest::test_runner::{contextualize_config, Config, TestCaseError, TestRunner};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use strata_client::{CreateOptions, Error, FileInfo, OpenOptions, ReadType, WriteType};
use strata_tests::{pattern, ClusterOptions, MiniCluster};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Sequences run when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 64;
/// Most operations in one sequence.
const MAX_OPS: usize = 40;
/// Names of files and folders: few, so paths collide.
const NAMES: [&str; 3] = ["a", "b", "c"];
/// Block sizes of files written (the master's minimum is 4 KiB).
const BLOCK_SIZES: [u64; 3] = [4 << 10, 8 << 10, 16 << 10];
/// The cluster's default block size: the one files found in the under-store get.
const CLUSTER_BLOCK_SIZE: u64 = 64 << 10;
/// Longest file of random length.
const MAX_LEN: usize = 40 << 10;
/// Most whole blocks in a file of a length near a block boundary.
const MAX_BLOCKS: usize = 3;
/// Bytes a writer buffers before it opens a stream to a worker.
const CHUNK_SIZE: u64 = 64 << 10;
/// The longest file written: of random length, or one byte past whole blocks.
const LONGEST: usize = {
    let near_blocks = MAX_BLOCKS * BLOCK_SIZES[BLOCK_SIZES.len() - 1] as usize + 1;
    if near_blocks > MAX_LEN {
        near_blocks
    } else {
        MAX_LEN
    }
};
// An abandoned writer must never have opened a stream, so that its file stays
// exactly as created, whatever a worker would do with a stream cut off.
const _: () = assert!(LONGEST < CHUNK_SIZE as usize);

/// A path below the sequence's folder, as its components (none: the folder itself).
#[derive(Clone, PartialEq, Eq)]
struct RelPath(Vec<&'static str>);

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"/{}\"", self.0.join("/"))
    }
}

/// One operation, as the client makes it.
#[derive(Clone)]
enum Op {
    /// Create a file, write `len` bytes of `pattern(len, seed)` in pieces cut at
    /// `cuts`, and close it.
    Write {
        path: RelPath,
        write_type: WriteType,
        block_size: u64,
        len: usize,
        seed: u64,
        cuts: Vec<usize>,
        recursive: bool,
    },
    /// Create a file, write `len` bytes (less than a chunk, so no worker ever hears
    /// of it), and drop the writer without closing: the file stays incomplete (its
    /// write lease outlasts the run).
    Abandon {
        path: RelPath,
        write_type: WriteType,
        block_size: u64,
        len: usize,
        recursive: bool,
    },
    Mkdir {
        path: RelPath,
        recursive: bool,
    },
    Rename {
        src: RelPath,
        dst: RelPath,
    },
    Delete {
        path: RelPath,
        recursive: bool,
    },
    Free {
        path: RelPath,
    },
    Read {
        path: RelPath,
        read_type: ReadType,
    },
    /// Read up to `len` bytes at `offset`: with `read_at`, or a seek and a read.
    ReadRange {
        path: RelPath,
        offset: u64,
        len: usize,
        seek: bool,
    },
    List {
        path: RelPath,
    },
    Status {
        path: RelPath,
    },
    /// Write a file straight into the under-store (with its missing folders), where
    /// the model has nothing; skipped elsewhere.
    DropInUnderStore {
        path: RelPath,
        len: usize,
        seed: u64,
    },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write {
                path,
                write_type,
                block_size,
                len,
                seed,
                cuts,
                recursive,
            } => write!(
                f,
                "write {path:?} {write_type} block {block_size} len {len} seed {seed} cuts {cuts:?}{}",
                if *recursive { " recursive" } else { "" }
            ),
            Op::Abandon {
                path,
                write_type,
                block_size,
                len,
                recursive,
            } => write!(
                f,
                "abandon {path:?} {write_type} block {block_size} len {len}{}",
                if *recursive { " recursive" } else { "" }
            ),
            Op::Mkdir { path, recursive } => write!(
                f,
                "mkdir {path:?}{}",
                if *recursive { " recursive" } else { "" }
            ),
            Op::Rename { src, dst } => write!(f, "rename {src:?} {dst:?}"),
            Op::Delete { path, recursive } => write!(
                f,
                "delete {path:?}{}",
                if *recursive { " recursive" } else { "" }
            ),
            Op::Free { path } => write!(f, "free {path:?}"),
            Op::Read { path, read_type } => write!(f, "read {path:?} {read_type:?}"),
            Op::ReadRange {
                path,
                offset,
                len,
                seek,
            } => write!(
                f,
                "read {path:?} at {offset} len {len} {}",
                if *seek { "after a seek" } else { "positioned" }
            ),
            Op::List { path } => write!(f, "list {path:?}"),
            Op::Status { path } => write!(f, "status {path:?}"),
            Op::DropInUnderStore { path, len, seed } => {
                write!(f, "under-store gets {path:?} len {len} seed {seed}")
            }
        }
    }
}

/// A path of `min_depth` to three components, shallow ones likelier (there are 27
/// paths of depth three, and an operation on a missing one says little).
fn path(min_depth: usize) -> impl Strategy<Value = RelPath> {
    // Skewed, so that paths repeat more often still.
    let name = || prop_oneof![3 => Just(NAMES[0]), 2 => Just(NAMES[1]), 1 => Just(NAMES[2])];
    let depth = |weight: u32, d: usize| (if d < min_depth { 0 } else { weight }, d);
    prop::strategy::Union::new_weighted(
        [depth(1, 0), depth(4, 1), depth(4, 2), depth(2, 3)]
            .into_iter()
            .filter(|(w, _)| *w > 0)
            .map(|(w, d)| {
                (
                    w,
                    prop::collection::vec(name(), d).prop_map(RelPath).boxed(),
                )
            })
            .collect(),
    )
}

/// Mostly true: a missing parent is refused often enough without it.
fn recursive() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.7)
}

fn write_type() -> impl Strategy<Value = WriteType> {
    prop_oneof![
        Just(WriteType::MustCache),
        Just(WriteType::CacheThrough),
        Just(WriteType::Through),
    ]
}

/// A block size and a length: empty, a whole number of blocks or one byte either
/// side of it, or anything up to [`MAX_LEN`].
fn block_size_and_len() -> impl Strategy<Value = (u64, usize)> {
    prop::sample::select(&BLOCK_SIZES[..]).prop_flat_map(|bs| {
        let b = bs as usize;
        let len = prop_oneof![
            Just(0usize),
            (1..=MAX_BLOCKS, -1isize..=1).prop_map(move |(k, d)| (k * b).wrapping_add_signed(d)),
            0..=MAX_LEN,
        ];
        (Just(bs), len)
    })
}

fn op() -> impl Strategy<Value = Op> {
    let write = (
        path(1),
        write_type(),
        block_size_and_len(),
        any::<u64>(),
        prop::collection::vec(0..=MAX_LEN, 0..4),
        recursive(),
    )
        .prop_map(
            |(path, write_type, (block_size, len), seed, cuts, recursive)| Op::Write {
                path,
                write_type,
                block_size,
                len,
                seed,
                cuts,
                recursive,
            },
        );
    let abandon = (path(1), write_type(), block_size_and_len(), recursive()).prop_map(
        |(path, write_type, (block_size, len), recursive)| Op::Abandon {
            path,
            write_type,
            block_size,
            len,
            recursive,
        },
    );
    let read_type = prop_oneof![Just(ReadType::Cache), Just(ReadType::NoCache)];
    prop_oneof![
        6 => write,
        1 => abandon,
        3 => (path(1), recursive())
            .prop_map(|(path, recursive)| Op::Mkdir { path, recursive }),
        4 => (path(1), path(1)).prop_map(|(src, dst)| Op::Rename { src, dst }),
        3 => (path(1), recursive())
            .prop_map(|(path, recursive)| Op::Delete { path, recursive }),
        2 => path(0).prop_map(|path| Op::Free { path }),
        3 => (path(1), read_type).prop_map(|(path, read_type)| Op::Read { path, read_type }),
        2 => (path(1), 0..=(MAX_LEN as u64 + 100), 0..=(MAX_LEN / 2), any::<bool>())
            .prop_map(|(path, offset, len, seek)| Op::ReadRange { path, offset, len, seek }),
        2 => path(0).prop_map(|path| Op::List { path }),
        2 => path(0).prop_map(|path| Op::Status { path }),
        1 => (path(1), 0..=MAX_LEN, any::<u64>())
            .prop_map(|(path, len, seed)| Op::DropInUnderStore { path, len, seed }),
    ]
}

/// The error kinds the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NotFound,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    NotPermitted,
    FileIncomplete,
}

/// The model's kind of a client error; `None` for errors the model never predicts.
fn kind_of(e: &Error) -> Option<Kind> {
    match e {
        Error::NotFound { .. } => Some(Kind::NotFound),
        Error::AlreadyExists { .. } => Some(Kind::AlreadyExists),
        Error::NotADirectory { .. } => Some(Kind::NotADirectory),
        Error::IsADirectory { .. } => Some(Kind::IsADirectory),
        Error::DirectoryNotEmpty { .. } => Some(Kind::DirectoryNotEmpty),
        Error::NotPermitted { .. } => Some(Kind::NotPermitted),
        Error::FileIncomplete { .. } => Some(Kind::FileIncomplete),
        Error::InvalidPath { .. }
        | Error::NotAMountPoint { .. }
        | Error::InvalidArgument { .. }
        | Error::BlockNotFound { .. }
        | Error::NoSpace { .. }
        | Error::UnderStore { .. }
        | Error::StorageIo { .. }
        | Error::UfsChanged { .. }
        | Error::Unavailable { .. }
        | Error::NotLeader { .. }
        | Error::Internal { .. } => None,
    }
}

/// File contents, shown by length and a checksum rather than byte by byte.
#[derive(Clone, PartialEq, Eq)]
struct Data(Vec<u8>);

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sum = self
            .0
            .iter()
            .fold(0u32, |h, &b| h.rotate_left(5) ^ u32::from(b));
        write!(f, "{} bytes (sum {sum:08x})", self.0.len())
    }
}

/// A listing entry, or a status, as far as the model knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir {
        name: String,
    },
    File {
        name: String,
        length: u64,
        complete: bool,
        persisted: bool,
        block_size: u64,
    },
}

impl Entry {
    fn of(info: &FileInfo) -> Entry {
        let name = info.name().to_string();
        if info.is_dir() {
            Entry::Dir { name }
        } else {
            Entry::File {
                name,
                length: info.length,
                complete: info.complete,
                persisted: info.persisted,
                block_size: info.block_size,
            }
        }
    }
}

/// What an operation answered, in terms both sides can give.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Done,
    Entry(Entry),
    Entries(Vec<Entry>),
    Data(Data),
    /// The operation does not apply to the model's state (an under-store drop where
    /// something exists).
    Skipped,
}

#[derive(Clone)]
enum Node {
    Dir,
    /// A file; one that is not `complete` has no bytes yet and is not persisted.
    File {
        data: Vec<u8>,
        complete: bool,
        persisted: bool,
        block_size: u64,
    },
}

/// The reference: every path below the sequence's folder (the folder is `[]`).
struct Model {
    nodes: BTreeMap<Vec<&'static str>, Node>,
}

impl Model {
    fn new() -> Self {
        Model {
            nodes: BTreeMap::from([(Vec::new(), Node::Dir)]),
        }
    }

    /// How far `p` resolves: 0 when it exists, else how many trailing components are
    /// missing. Passing through a file is `NotADirectory` (namespace `resolve`).
    fn resolve(&self, p: &[&'static str]) -> Result<usize, Kind> {
        for i in 0..p.len() {
            if let Some(Node::File { .. }) = self.nodes.get(&p[..i]) {
                return Err(Kind::NotADirectory);
            }
            if !self.nodes.contains_key(&p[..=i]) {
                return Ok(p.len() - i);
            }
        }
        Ok(0)
    }

    /// The node at `p` (namespace `lookup`).
    fn lookup(&self, p: &[&'static str]) -> Result<&Node, Kind> {
        match self.resolve(p)? {
            0 => Ok(&self.nodes[p]),
            _ => Err(Kind::NotFound),
        }
    }

    /// `p` and everything below it, in path order.
    fn subtree(&self, p: &[&'static str]) -> Vec<(Vec<&'static str>, Node)> {
        self.nodes
            .range(p.to_vec()..)
            .take_while(|(k, _)| k.starts_with(p))
            .map(|(k, n)| (k.clone(), n.clone()))
            .collect()
    }

    fn children(&self, p: &[&'static str]) -> Vec<Entry> {
        self.subtree(p)
            .iter()
            .filter(|(k, _)| k.len() == p.len() + 1)
            .map(|(k, n)| entry(k, n))
            .collect()
    }

    /// Adds the missing folders of `p` above its last `missing` components, and
    /// the last one as `last`.
    fn add(&mut self, p: &[&'static str], missing: usize, last: Node) {
        for i in (p.len() - missing + 1)..p.len() {
            self.nodes.insert(p[..i].to_vec(), Node::Dir);
        }
        self.nodes.insert(p.to_vec(), last);
    }

    /// Namespace `mkdir`: an existing folder is fine only with `recursive`.
    fn mkdir(&mut self, p: &[&'static str], recursive: bool) -> Result<Answer, Kind> {
        let missing = self.resolve(p)?;
        if missing == 0 {
            return match self.nodes[p] {
                Node::Dir if recursive => Ok(Answer::Entry(entry(p, &Node::Dir))),
                _ => Err(Kind::AlreadyExists),
            };
        }
        if missing > 1 && !recursive {
            return Err(Kind::NotFound);
        }
        self.add(p, missing, Node::Dir);
        Ok(Answer::Entry(entry(p, &Node::Dir)))
    }

    /// Namespace `create_file`, then the writer's close.
    fn create(&mut self, p: &[&'static str], recursive: bool, file: Node) -> Result<Answer, Kind> {
        let missing = self.resolve(p)?;
        if missing == 0 {
            return Err(Kind::AlreadyExists);
        }
        if missing > 1 && !recursive {
            return Err(Kind::NotFound);
        }
        let answer = Answer::Entry(entry(p, &file));
        self.add(p, missing, file);
        Ok(answer)
    }

    /// Namespace `rename`: the source is looked up first, renaming onto itself is a
    /// no-op, then into its own subtree or of a file being written is refused, then
    /// the destination must be missing with its parent present.
    fn rename(&mut self, src: &[&'static str], dst: &[&'static str]) -> Result<Answer, Kind> {
        let node = self.lookup(src)?;
        if src == dst {
            return Ok(Answer::Done);
        }
        let being_written = matches!(
            node,
            Node::File {
                complete: false,
                ..
            }
        );
        if dst.starts_with(src) || being_written {
            return Err(Kind::NotPermitted);
        }
        match self.resolve(dst)? {
            0 => return Err(Kind::AlreadyExists),
            1 => {}
            _ => return Err(Kind::NotFound),
        }
        for (k, n) in self.subtree(src) {
            self.nodes.remove(&k);
            let mut moved = dst.to_vec();
            moved.extend_from_slice(&k[src.len()..]);
            self.nodes.insert(moved, n);
        }
        Ok(Answer::Done)
    }

    /// Namespace `delete`: a folder with children only with `recursive`.
    fn delete(&mut self, p: &[&'static str], recursive: bool) -> Result<Answer, Kind> {
        self.lookup(p)?;
        let subtree = self.subtree(p);
        if subtree.len() > 1 && !recursive {
            return Err(Kind::DirectoryNotEmpty);
        }
        for (k, _) in subtree {
            self.nodes.remove(&k);
        }
        Ok(Answer::Done)
    }

    /// Namespace `free`: refused if any file below is in worker storage only.
    fn free(&self, p: &[&'static str]) -> Result<Answer, Kind> {
        self.lookup(p)?;
        let only_cached = self.subtree(p).iter().any(|(_, n)| {
            matches!(
                n,
                Node::File {
                    persisted: false,
                    ..
                }
            )
        });
        if only_cached {
            return Err(Kind::NotPermitted);
        }
        Ok(Answer::Done)
    }

    fn data(&self, p: &[&'static str]) -> Result<&[u8], Kind> {
        match self.lookup(p)? {
            Node::Dir => Err(Kind::IsADirectory),
            Node::File {
                complete: false, ..
            } => Err(Kind::FileIncomplete),
            Node::File { data, .. } => Ok(data),
        }
    }

    /// Namespace `list_page`: a folder lists its children, a file itself.
    fn list(&self, p: &[&'static str]) -> Result<Answer, Kind> {
        Ok(Answer::Entries(match self.lookup(p)? {
            Node::Dir => self.children(p),
            file => vec![entry(p, file)],
        }))
    }
}

/// The entry of `node` at `p`, named as its last component.
fn entry(p: &[&'static str], node: &Node) -> Entry {
    let name = p.last().copied().unwrap_or_default().to_string();
    match node {
        Node::Dir => Entry::Dir { name },
        Node::File {
            data,
            complete,
            persisted,
            block_size,
        } => Entry::File {
            name,
            length: data.len() as u64,
            complete: *complete,
            persisted: *persisted,
            block_size: *block_size,
        },
    }
}

/// The sequence's folder and where it lies in the under-store.
struct Case<'a> {
    c: &'a MiniCluster,
    root: String,
}

impl Case<'_> {
    fn path(&self, p: &[&str]) -> String {
        if p.is_empty() {
            self.root.clone()
        } else {
            format!("{}/{}", self.root, p.join("/"))
        }
    }

    fn ufs_path(&self, p: &[&str]) -> std::path::PathBuf {
        let mut out = self.c.underfs().join(self.root.trim_start_matches('/'));
        for name in p {
            out.push(name);
        }
        out
    }
}

/// A client answer in the model's terms; an error the model never predicts fails
/// the sequence.
fn outcome<T>(
    got: strata_client::Result<T>,
    what: impl FnOnce(T) -> Answer,
) -> Result<Result<Answer, Kind>, TestCaseError> {
    match got {
        Ok(v) => Ok(Ok(what(v))),
        Err(e) => match kind_of(&e) {
            Some(k) => Ok(Err(k)),
            None => Err(TestCaseError::fail(format!("unexpected error: {e}"))),
        },
    }
}

/// Runs `op` on the cluster and on the model; both answers.
async fn step(
    case: &Case<'_>,
    model: &mut Model,
    op: &Op,
) -> Result<(Result<Answer, Kind>, Result<Answer, Kind>), TestCaseError> {
    let fs = &case.c.fs;
    Ok(match op {
        Op::Write {
            path,
            write_type,
            block_size,
            len,
            seed,
            cuts,
            recursive,
        } => {
            let data = pattern(*len, *seed);
            let file = Node::File {
                data: data.clone(),
                complete: true,
                persisted: write_type.persists(),
                block_size: *block_size,
            };
            let expected = model.create(&path.0, *recursive, file);
            let opts = CreateOptions {
                write_type: Some(*write_type),
                block_size: Some(*block_size),
                recursive: *recursive,
            };
            let got = match fs.create(&case.path(&path.0), opts).await {
                Ok(mut w) => {
                    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
                    cuts.sort_unstable();
                    cuts.push(*len);
                    let mut at = 0;
                    for cut in cuts {
                        w.write(&data[at..cut]).await.map_err(|e| {
                            TestCaseError::fail(format!("write at {at} failed: {e}"))
                        })?;
                        at = cut;
                    }
                    let info = w
                        .close()
                        .await
                        .map_err(|e| TestCaseError::fail(format!("close failed: {e}")))?;
                    Ok(Answer::Entry(Entry::of(&info)))
                }
                Err(e) => outcome(Err::<(), _>(e), |_| Answer::Done)?,
            };
            (expected, got)
        }
        Op::Abandon {
            path,
            write_type,
            block_size,
            len,
            recursive,
        } => {
            let file = Node::File {
                data: Vec::new(),
                complete: false,
                persisted: false,
                block_size: *block_size,
            };
            let expected = model.create(&path.0, *recursive, file);
            let opts = CreateOptions {
                write_type: Some(*write_type),
                block_size: Some(*block_size),
                recursive: *recursive,
            };
            let got = match fs.create(&case.path(&path.0), opts).await {
                Ok(mut w) => {
                    w.write(&pattern(*len, 0))
                        .await
                        .map_err(|e| TestCaseError::fail(format!("write failed: {e}")))?;
                    let info = Entry::of(w.info());
                    drop(w);
                    Ok(Answer::Entry(info))
                }
                Err(e) => outcome(Err::<(), _>(e), |_| Answer::Done)?,
            };
            (expected, got)
        }
        Op::Mkdir { path, recursive } => {
            let expected = model.mkdir(&path.0, *recursive);
            let got = outcome(fs.mkdir(&case.path(&path.0), *recursive).await, |i| {
                Answer::Entry(Entry::of(&i))
            })?;
            (expected, got)
        }
        Op::Rename { src, dst } => {
            let expected = model.rename(&src.0, &dst.0);
            let got = fs.rename(&case.path(&src.0), &case.path(&dst.0)).await;
            (expected, outcome(got, |_| Answer::Done)?)
        }
        Op::Delete { path, recursive } => {
            let expected = model.delete(&path.0, *recursive);
            let got = fs.delete(&case.path(&path.0), *recursive).await;
            (expected, outcome(got, |_| Answer::Done)?)
        }
        Op::Free { path } => {
            let expected = model.free(&path.0);
            let got = fs.free(&case.path(&path.0)).await;
            (expected, outcome(got, |_| Answer::Done)?)
        }
        Op::Read { path, read_type } => {
            let expected = model.data(&path.0).map(|d| Answer::Data(Data(d.to_vec())));
            let opts = OpenOptions {
                read_type: Some(*read_type),
            };
            let got = match fs.open(&case.path(&path.0), opts).await {
                Ok(mut r) => {
                    let mut v = Vec::new();
                    r.read_to_end(&mut v)
                        .await
                        .map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
                    Ok(Answer::Data(Data(v)))
                }
                Err(e) => outcome(Err::<(), _>(e), |_| Answer::Done)?,
            };
            (expected, got)
        }
        Op::ReadRange {
            path,
            offset,
            len,
            seek,
        } => {
            let expected = model.data(&path.0).map(|d| {
                let start = (*offset as usize).min(d.len());
                let end = (start + len).min(d.len());
                Answer::Data(Data(d[start..end].to_vec()))
            });
            let got = match fs.open(&case.path(&path.0), OpenOptions::default()).await {
                Ok(mut r) => {
                    let read = if *seek {
                        let mut v = Vec::new();
                        r.seek(std::io::SeekFrom::Start(*offset))
                            .await
                            .map_err(|e| TestCaseError::fail(format!("seek failed: {e}")))?;
                        r.take(*len as u64)
                            .read_to_end(&mut v)
                            .await
                            .map(|_| v)
                            .map_err(|e| e.to_string())
                    } else {
                        r.read_at(*offset, *len)
                            .await
                            .map(|b| b.to_vec())
                            .map_err(|e| e.to_string())
                    };
                    let v =
                        read.map_err(|e| TestCaseError::fail(format!("range read failed: {e}")))?;
                    Ok(Answer::Data(Data(v)))
                }
                Err(e) => outcome(Err::<(), _>(e), |_| Answer::Done)?,
            };
            (expected, got)
        }
        Op::List { path } => {
            let expected = model.list(&path.0);
            let got = outcome(fs.list(&case.path(&path.0)).await, |v| {
                Answer::Entries(v.iter().map(Entry::of).collect())
            })?;
            (expected, got)
        }
        Op::Status { path } => {
            let expected = model
                .lookup(&path.0)
                .map(|n| Answer::Entry(entry(&path.0, n)));
            let got = outcome(fs.get_status(&case.path(&path.0)).await, |i| {
                let mut e = Entry::of(&i);
                if let (true, Entry::Dir { name }) = (path.0.is_empty(), &mut e) {
                    name.clear(); // the folder is `case-N` in Strata, unnamed in the model
                }
                Answer::Entry(e)
            })?;
            (expected, got)
        }
        Op::DropInUnderStore { path, len, seed } => match model.resolve(&path.0) {
            Ok(missing) if missing > 0 => {
                let data = pattern(*len, *seed);
                let at = case.ufs_path(&path.0);
                let parent = at.parent().expect("a dropped file has a parent");
                std::fs::create_dir_all(parent)
                    .and_then(|()| std::fs::write(&at, &data))
                    .map_err(|e| TestCaseError::fail(format!("{}: {e}", at.display())))?;
                let file = Node::File {
                    data,
                    complete: true,
                    persisted: true,
                    block_size: CLUSTER_BLOCK_SIZE,
                };
                model.add(&path.0, missing, file);
                (Ok(Answer::Done), Ok(Answer::Done))
            }
            _ => (Ok(Answer::Skipped), Ok(Answer::Skipped)),
        },
    })
}

/// The whole tree in Strata, by listing from the sequence's folder down, with every
/// complete file's bytes (an incomplete one must refuse to open).
async fn strata_tree(case: &Case<'_>) -> Result<BTreeMap<String, (Entry, Data)>, TestCaseError> {
    let fs = &case.c.fs;
    let mut out = BTreeMap::new();
    let mut folders = vec![case.root.clone()];
    while let Some(dir) = folders.pop() {
        let entries = fs
            .list(&dir)
            .await
            .map_err(|e| TestCaseError::fail(format!("list {dir}: {e}")))?;
        for info in entries {
            let path = info.path.to_string();
            let rel = path[case.root.len()..].to_string();
            let data = if info.is_dir() {
                folders.push(path);
                Vec::new()
            } else if !info.complete {
                match fs.open(&path, OpenOptions::default()).await {
                    Err(Error::FileIncomplete { .. }) => Vec::new(),
                    Err(e) => return Err(TestCaseError::fail(format!("open {path}: {e}"))),
                    Ok(_) => {
                        return Err(TestCaseError::fail(format!(
                            "{path} opened while incomplete"
                        )))
                    }
                }
            } else {
                let mut r = fs
                    .open(&path, OpenOptions::default())
                    .await
                    .map_err(|e| TestCaseError::fail(format!("open {path}: {e}")))?;
                let mut v = Vec::new();
                r.read_to_end(&mut v)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("read {path}: {e}")))?;
                v
            };
            out.insert(rel, (Entry::of(&info), Data(data)));
        }
    }
    Ok(out)
}

/// Everything in the under-store below `dir`: folders as `None`, files with bytes.
fn ufs_tree(
    dir: &Path,
    rel: &str,
    out: &mut BTreeMap<String, Option<Data>>,
) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = format!("{rel}/{name}");
        if e.file_type()?.is_dir() {
            ufs_tree(&e.path(), &rel, out)?;
            out.insert(rel, None);
        } else {
            out.insert(rel, Some(Data(std::fs::read(e.path())?)));
        }
    }
    Ok(())
}

/// Compares the whole tree: Strata's listings and bytes with the model, and the
/// under-store with the model's persisted files (every folder in the under-store is
/// one of the model's; folders of files never persisted need not be there).
async fn check_tree(case: &Case<'_>, model: &Model) -> Result<(), TestCaseError> {
    let expected: BTreeMap<String, (Entry, Data)> = model
        .nodes
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, n)| {
            let data = match n {
                Node::Dir => Vec::new(),
                Node::File { data, .. } => data.clone(),
            };
            (format!("/{}", k.join("/")), (entry(k, n), Data(data)))
        })
        .collect();
    let got = strata_tree(case).await?;
    if got != expected {
        return Err(TestCaseError::fail(format!(
            "the tree differs from the model\n model: {expected:#?}\nStrata: {got:#?}"
        )));
    }
    let mut in_ufs = BTreeMap::new();
    ufs_tree(&case.ufs_path(&[]), "", &mut in_ufs)
        .map_err(|e| TestCaseError::fail(format!("walking the under-store: {e}")))?;
    let mut wanted: BTreeMap<String, Option<Data>> = expected
        .into_iter()
        .filter_map(|(k, (e, d))| match e {
            Entry::File {
                persisted: true, ..
            } => Some((k, Some(d))),
            _ => None,
        })
        .collect();
    // Folders: whatever the under-store has, as long as the model has it too.
    for (k, v) in &in_ufs {
        if v.is_none() && matches!(model.nodes.get(&components(k)[..]), Some(Node::Dir)) {
            wanted.insert(k.clone(), None);
        }
    }
    if in_ufs != wanted {
        return Err(TestCaseError::fail(format!(
            "the under-store differs from the model's persisted files\n model: {wanted:#?}\nunder-store: {in_ufs:#?}"
        )));
    }
    Ok(())
}

/// The model's key of an under-store path relative to the sequence's folder.
fn components(rel: &str) -> Vec<&'static str> {
    rel.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| NAMES.iter().copied().find(|n| *n == s).unwrap_or("?"))
        .collect()
}

/// Runs one sequence in the fresh folder `/case-{n}`, then removes the folder.
async fn run_case(
    c: &MiniCluster,
    n: usize,
    ops: &[Op],
    tally: &Mutex<BTreeMap<String, usize>>,
) -> Result<(), TestCaseError> {
    let case = Case {
        c,
        root: format!("/case-{n}"),
    };
    c.fs.mkdir(&case.root, false)
        .await
        .map_err(|e| TestCaseError::fail(format!("mkdir {}: {e}", case.root)))?;
    let mut model = Model::new();
    for (i, op) in ops.iter().enumerate() {
        let (expected, got) = step(&case, &mut model, op)
            .await
            .map_err(|e| TestCaseError::fail(format!("op {i} ({op:?}): {e}")))?;
        let name = format!("{op:?}");
        let name = name.split(' ').next().unwrap_or_default();
        let how = match &got {
            Ok(Answer::Skipped) => "skipped".to_string(),
            Ok(_) => "ok".to_string(),
            Err(k) => format!("{k:?}"),
        };
        *tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(format!("{name} {how}"))
            .or_default() += 1;
        if expected != got {
            return Err(TestCaseError::fail(format!(
                "op {i} ({op:?}): the model expected {expected:?}, Strata answered {got:?}"
            )));
        }
    }
    check_tree(&case, &model).await?;
    c.fs.delete(&case.root, true)
        .await
        .map_err(|e| TestCaseError::fail(format!("delete {}: {e}", case.root)))?;
    Ok(())
}

#[test]
fn random_operations_agree_with_the_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = rt.block_on(MiniCluster::start(ClusterOptions {
        workers: 2,
        block_size: CLUSTER_BLOCK_SIZE,
        chunk_size: CHUNK_SIZE,
        // Room to spare for MUST_CACHE files (a failed sequence keeps its folder): an
        // evicted one could not be read back, and the model has no eviction.
        mem_quota: 256 << 20,
        // Abandoned files stay incomplete for the whole run.
        config: vec![("master.write_lease", "\"1h\"".to_string())],
        ..ClusterOptions::default()
    }));
    // PROPTEST_CASES and the other PROPTEST_* variables override these.
    let config = contextualize_config(Config {
        cases: DEFAULT_CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let mut runner = TestRunner::new(config);
    let next_case = AtomicUsize::new(0);
    let tally = Mutex::new(BTreeMap::new());
    let ops = prop::collection::vec(op(), 1..=MAX_OPS);
    let result = runner.run(&ops, |ops| {
        let n = next_case.fetch_add(1, Ordering::Relaxed);
        rt.block_on(run_case(&cluster, n, &ops, &tally))
    });
    rt.block_on(cluster.stop());
    let tally = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    eprintln!(
        "{} sequences; operations and answers: {tally:#?}",
        next_case.into_inner()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
