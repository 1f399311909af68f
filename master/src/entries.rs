//! The journal's vocabulary: every namespace mutation is one [`JournalEntry`],
//! produced by a handler that validated the request, ordered by the
//! [`Journal`](crate::journal::Journal), then applied by
//! [`MetaStore::apply`](crate::store::MetaStore::apply).
//!
//! Entries are prost-encoded and persisted in the Raft log, so their tags never
//! change meaning; `tests::decodes_recorded_encodings` pins them.
//! Everything apply needs travels inside the entry: ids, times, names, lengths. Apply
//! reads no clock and allocates nothing, so every replica ends with the same bytes.

/// A persisted inode. `mount_id != 0` marks the root of a mount.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InodeRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub parent_id: u64,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(bool, tag = "4")]
    pub is_dir: bool,
    #[prost(int64, tag = "5")]
    pub mtime_ms: i64,
    #[prost(uint64, tag = "6")]
    pub length: u64,
    #[prost(uint64, tag = "7")]
    pub block_size: u64,
    #[prost(bool, tag = "8")]
    pub complete: bool,
    #[prost(bool, tag = "9")]
    pub persisted: bool,
    #[prost(uint64, tag = "10")]
    pub mount_id: u64,
    /// Bumped by apply whenever a child is added, removed or renamed in or out; an
    /// entry built from a look at the under-store names the version it saw.
    #[prost(uint64, tag = "11")]
    pub children_version: u64,
    /// For a persisted file: the under-store copy's version as recorded (see
    /// `UfsFingerprint`); empty when unknown, and then only the length is checked.
    #[prost(string, tag = "12")]
    pub ufs_version: String,
}

/// A persisted mount-table entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MountRecord {
    #[prost(uint64, tag = "1")]
    pub mount_id: u64,
    #[prost(uint64, tag = "2")]
    pub inode_id: u64,
    #[prost(string, tag = "3")]
    pub path: String,
    #[prost(string, tag = "4")]
    pub uri: String,
    #[prost(bool, tag = "5")]
    pub read_only: bool,
    /// The backend's options (see `strata_common::types::MountOptions`).
    #[prost(btree_map = "string, string", tag = "6")]
    pub options: std::collections::BTreeMap<String, String>,
}

/// Creates a chain of inodes: `inodes[0]` under `parent_id`, each next one under the
/// one before (`mkdir -p`, create with missing parents).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateEntry {
    #[prost(uint64, tag = "1")]
    pub parent_id: u64,
    /// Full path of the last inode, for error messages.
    #[prost(string, tag = "2")]
    pub path: String,
    #[prost(message, repeated, tag = "3")]
    pub inodes: Vec<InodeRecord>,
    /// Set when the chain was found in an under-store: apply skips the entry if the
    /// parent's children changed since (a delete or rename raced with the look).
    #[prost(uint64, optional, tag = "4")]
    pub expected_parent_version: Option<u64>,
}

/// Adds children found in the under-store; names taken meanwhile are skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LoadChildrenEntry {
    #[prost(uint64, tag = "1")]
    pub parent_id: u64,
    #[prost(string, tag = "2")]
    pub path: String,
    #[prost(message, repeated, tag = "3")]
    pub children: Vec<InodeRecord>,
    /// The directory's `children_version` when the under-store was listed; apply
    /// skips the entry if it changed since.
    #[prost(uint64, tag = "4")]
    pub expected_version: u64,
}

/// Seals a file: its length, whether it is persisted, its block ids.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CompleteFileEntry {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub path: String,
    #[prost(uint64, tag = "3")]
    pub length: u64,
    #[prost(bool, tag = "4")]
    pub persisted: bool,
    #[prost(int64, tag = "5")]
    pub mtime_ms: i64,
    /// The under-store copy's version when persisted.
    #[prost(string, tag = "6")]
    pub ufs_version: String,
}

/// Removes `name` (which must still be inode `id`) from `parent_id`, with its subtree
/// when `recursive`. A folder with children is detached (unreachable at once) and
/// its inodes are removed afterwards by bounded [`ReclaimEntry`]s.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteEntry {
    #[prost(uint64, tag = "1")]
    pub parent_id: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(uint64, tag = "3")]
    pub id: u64,
    #[prost(string, tag = "4")]
    pub path: String,
    #[prost(bool, tag = "5")]
    pub recursive: bool,
    #[prost(int64, tag = "6")]
    pub mtime_ms: i64,
}

/// Replaces a complete, persisted file whose under-store copy changed outside
/// Strata (another length, time or version) with `record`, a new inode that
/// describes the copy found: a new id, so no block cached from the old bytes is
/// ever served as the new file's. The old inode must still be `old_id` at
/// `record.name` in `record.parent_id`, complete and persisted (the under-store
/// holds its bytes: nothing only Strata has is dropped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RefreshFileEntry {
    #[prost(uint64, tag = "1")]
    pub old_id: u64,
    #[prost(string, tag = "2")]
    pub path: String,
    #[prost(message, optional, tag = "3")]
    pub record: Option<InodeRecord>,
}

/// Moves inode `id` from `(src_parent, src_name)` to `(dst_parent, dst_name)`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RenameEntry {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub src_parent: u64,
    #[prost(string, tag = "3")]
    pub src_name: String,
    #[prost(uint64, tag = "4")]
    pub dst_parent: u64,
    #[prost(string, tag = "5")]
    pub dst_name: String,
    #[prost(string, tag = "6")]
    pub src_path: String,
    #[prost(string, tag = "7")]
    pub dst_path: String,
    #[prost(int64, tag = "8")]
    pub mtime_ms: i64,
    /// For a persisted file whose under-store copy changed version in the move
    /// (an S3 copy may get a new ETag): the version of the copy at `dst_path`.
    #[prost(string, optional, tag = "9")]
    pub ufs_version: Option<String>,
}

/// Mounts `mount.uri` at a new directory `inode` under `parent_id`, or at the root
/// when `inode.id` is the root's id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MountEntry {
    #[prost(uint64, tag = "1")]
    pub parent_id: u64,
    #[prost(message, optional, tag = "2")]
    pub inode: Option<InodeRecord>,
    #[prost(message, optional, tag = "3")]
    pub mount: Option<MountRecord>,
}

/// Removes a mount and the namespace below it (the under-store is untouched); the
/// namespace below is detached and reclaimed like a deleted folder's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnmountEntry {
    #[prost(uint64, tag = "1")]
    pub mount_id: u64,
    #[prost(string, tag = "2")]
    pub path: String,
}

/// Removes up to `limit` inodes of the detached subtree rooted at `root` (deepest
/// first; the root itself last). Replaying it on a subtree already gone is a no-op.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReclaimEntry {
    #[prost(uint64, tag = "1")]
    pub root: u64,
    #[prost(uint32, tag = "2")]
    pub limit: u32,
}

/// Where the reclaim of a detached subtree stopped: the folders from its root down
/// to the one being emptied, each with the last child name passed. Kept as the
/// value of the subtree's key in the `detached` column family.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReclaimCursor {
    #[prost(message, repeated, tag = "1")]
    pub levels: Vec<ReclaimLevel>,
}

/// One folder of a [`ReclaimCursor`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReclaimLevel {
    #[prost(uint64, tag = "1")]
    pub dir: u64,
    /// Empty before the first child.
    #[prost(string, tag = "2")]
    pub after: String,
}

/// One namespace mutation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JournalEntry {
    #[prost(oneof = "Op", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10")]
    pub op: Option<Op>,
    /// Set when a client's request made the entry: apply records the result under
    /// the request's id, and an entry of a request already recorded changes
    /// nothing and answers the recorded result.
    #[prost(message, optional, tag = "20")]
    pub request: Option<RequestTag>,
}

/// The client request an entry carries out (see `strata_common::types::RequestId`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestTag {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub client: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// The client's results below this seq are forgotten.
    #[prost(uint64, tag = "3")]
    pub answered_below: u64,
    /// The leader's clock when the entry was made; results of clients silent for
    /// longer than `store::REQUEST_RETENTION_MS` are forgotten.
    #[prost(int64, tag = "4")]
    pub time_ms: i64,
    /// The answer the request gets if the entry applies.
    #[prost(bytes = "vec", tag = "5")]
    pub reply: Vec<u8>,
    /// What the request does (`namespace::requests::RequestKind`): a request id
    /// reused for another operation is refused, not answered with another's result.
    #[prost(uint32, tag = "6")]
    pub kind: u32,
}

/// A request's recorded result: the reply, or the conflict it met
/// (`strata_common::Error::encode`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOutcome {
    #[prost(bytes = "vec", tag = "1")]
    pub reply: Vec<u8>,
    /// Empty when the request succeeded.
    #[prost(bytes = "vec", tag = "2")]
    pub error: Vec<u8>,
    /// The request's kind, as its tag said.
    #[prost(uint32, tag = "3")]
    pub kind: u32,
}

/// The mutation kinds.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    #[prost(message, tag = "1")]
    Create(CreateEntry),
    #[prost(message, tag = "2")]
    LoadChildren(LoadChildrenEntry),
    #[prost(message, tag = "3")]
    CompleteFile(CompleteFileEntry),
    #[prost(message, tag = "4")]
    Delete(DeleteEntry),
    #[prost(message, tag = "5")]
    Rename(RenameEntry),
    #[prost(message, tag = "6")]
    Mount(MountEntry),
    #[prost(message, tag = "7")]
    Unmount(UnmountEntry),
    #[prost(message, tag = "8")]
    Reclaim(ReclaimEntry),
    #[prost(message, tag = "9")]
    ClusterId(ClusterIdEntry),
    #[prost(message, tag = "10")]
    RefreshFile(RefreshFileEntry),
}

/// The cluster's id, journaled by the first master to lead so that every master
/// of the group (and so every worker) shares it. The first one applied stays;
/// later ones change nothing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterIdEntry {
    #[prost(string, tag = "1")]
    pub id: String,
}

impl From<Op> for JournalEntry {
    fn from(op: Op) -> Self {
        JournalEntry {
            op: Some(op),
            request: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Encodings written by this version; later versions must still decode them.
    #[test]
    fn decodes_recorded_encodings() {
        let entry: JournalEntry = Op::Create(CreateEntry {
            parent_id: 1,
            path: "/a".into(),
            inodes: vec![InodeRecord {
                id: 2,
                parent_id: 1,
                name: "a".into(),
                is_dir: true,
                mtime_ms: 5,
                ..Default::default()
            }],
            expected_parent_version: None,
        })
        .into();
        let bytes = entry.encode_to_vec();
        let recorded: &[u8] = &[
            10, 19, 8, 1, 18, 2, 47, 97, 26, 11, 8, 2, 16, 1, 26, 1, 97, 32, 1, 40, 5,
        ];
        assert_eq!(bytes, recorded);
        assert_eq!(JournalEntry::decode(recorded).unwrap(), entry);

        let mount = MountRecord {
            mount_id: 3,
            inode_id: 4,
            path: "/m".into(),
            uri: "file:///x".into(),
            read_only: true,
            options: Default::default(),
        };
        let recorded: &[u8] = &[
            8, 3, 16, 4, 26, 2, 47, 109, 34, 9, 102, 105, 108, 101, 58, 47, 47, 47, 120, 40, 1,
        ];
        assert_eq!(mount.encode_to_vec(), recorded);
        assert_eq!(MountRecord::decode(recorded).unwrap(), mount);
        // With options (tag 6, a map): key then value, in key order.
        let with_options = MountRecord {
            options: [("s3.region".to_string(), "x".to_string())].into(),
            ..mount.clone()
        };
        let recorded_with_options: Vec<u8> = [
            recorded,
            &[
                50, 14, 10, 9, 115, 51, 46, 114, 101, 103, 105, 111, 110, 18, 1, 120,
            ],
        ]
        .concat();
        assert_eq!(with_options.encode_to_vec(), recorded_with_options);
        assert_eq!(
            MountRecord::decode(recorded_with_options.as_slice()).unwrap(),
            with_options
        );

        // An inode recorded with its under-store version (tag 12).
        let file = InodeRecord {
            id: 7,
            parent_id: 1,
            name: "f".into(),
            length: 3,
            block_size: 4096,
            complete: true,
            persisted: true,
            ufs_version: "a-b".into(),
            ..Default::default()
        };
        let recorded: &[u8] = &[
            8, 7, 16, 1, 26, 1, 102, 48, 3, 56, 128, 32, 64, 1, 72, 1, 98, 3, 97, 45, 98,
        ];
        assert_eq!(file.encode_to_vec(), recorded);
        assert_eq!(InodeRecord::decode(recorded).unwrap(), file);

        // An entry made for a client's request (tag 20).
        let tagged = JournalEntry {
            op: Some(Op::Unmount(UnmountEntry {
                mount_id: 2,
                path: "/m".into(),
            })),
            request: Some(RequestTag {
                client: vec![7; 16],
                seq: 3,
                answered_below: 2,
                time_ms: 9,
                reply: vec![1],
                kind: 0,
            }),
        };
        let recorded: &[u8] = &[
            58, 6, 8, 2, 18, 2, 47, 109, 162, 1, 27, 10, 16, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
            7, 7, 7, 16, 3, 24, 2, 32, 9, 42, 1, 1,
        ];
        assert_eq!(tagged.encode_to_vec(), recorded);
        assert_eq!(JournalEntry::decode(recorded).unwrap(), tagged);
        let outcome = RequestOutcome {
            reply: vec![],
            error: vec![8, 2],
            kind: 0,
        };
        let recorded: &[u8] = &[18, 2, 8, 2];
        assert_eq!(outcome.encode_to_vec(), recorded);
        assert_eq!(RequestOutcome::decode(recorded).unwrap(), outcome);

        let cluster: JournalEntry = Op::ClusterId(ClusterIdEntry { id: "c1".into() }).into();
        let recorded: &[u8] = &[74, 4, 10, 2, 99, 49];
        assert_eq!(cluster.encode_to_vec(), recorded);
        assert_eq!(JournalEntry::decode(recorded).unwrap(), cluster);

        let refresh: JournalEntry = Op::RefreshFile(RefreshFileEntry {
            old_id: 7,
            path: "/f".into(),
            record: Some(InodeRecord {
                id: 8,
                parent_id: 1,
                name: "f".into(),
                length: 2,
                complete: true,
                persisted: true,
                ..Default::default()
            }),
        })
        .into();
        let recorded: &[u8] = &[
            82, 21, 8, 7, 18, 2, 47, 102, 26, 13, 8, 8, 16, 1, 26, 1, 102, 48, 2, 64, 1, 72, 1,
        ];
        assert_eq!(refresh.encode_to_vec(), recorded);
        assert_eq!(JournalEntry::decode(recorded).unwrap(), refresh);
    }
}
