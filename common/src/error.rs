//! The one error type every Strata component speaks, and its exhaustive mappings to
//! and from gRPC status (errno follows with the FUSE layer).
//!
//! Errors cross process boundaries intact: the variant and its fields travel in the
//! status details as an [`ErrorDetail`], so a client sees the same variant the master
//! produced, never a string to pattern-match.

use crate::proto::{ErrorDetail, ErrorKind};
use prost::Message;

/// Result with Strata's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Strata, by cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The path does not exist.
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    /// Something already exists at the path.
    #[error("{path}: already exists")]
    AlreadyExists { path: String },
    /// A component of the path, or the path itself, is a file where a directory is needed.
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    /// The path is a directory where a file is needed.
    #[error("{path}: is a directory")]
    IsADirectory { path: String },
    /// A non-recursive delete of a directory with children.
    #[error("{path}: directory not empty (use recursive delete)")]
    DirectoryNotEmpty { path: String },
    /// The path is malformed: not absolute, an empty component, NUL, `.` or `..`.
    #[error("{path:?}: invalid path: {reason}")]
    InvalidPath { path: String, reason: String },
    /// The operation is not allowed on this path in its current state (rename into
    /// its own subtree, delete of a mount point, ...).
    #[error("{path}: {reason}")]
    NotPermitted { path: String, reason: String },
    /// The path is not a mount point.
    #[error("{path}: not a mount point")]
    NotAMountPoint { path: String },
    /// The file has not been completed by its writer.
    #[error("{path}: file is incomplete (its writer has not closed it)")]
    FileIncomplete { path: String },
    /// A request field is missing or out of range.
    #[error("invalid argument {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// A block a worker was asked for is not in its storage and has no under-store source.
    #[error("block {block_id} is not cached on this worker and has no under-store copy")]
    BlockNotFound { block_id: u64 },
    /// Storage is full: the tier cannot make room.
    #[error("{what}: no space left: {reason}")]
    NoSpace { what: String, reason: String },
    /// The under-store failed; `temporary` says whether a retry may succeed.
    #[error("under-store error at {path}: {reason}")]
    UnderStore {
        path: String,
        reason: String,
        temporary: bool,
    },
    /// A worker's block storage failed for a reason other than space (an I/O error
    /// on the tier's disk). Another worker, or a later try, may succeed.
    #[error("{what}: storage error: {reason}")]
    StorageIo { what: String, reason: String },
    /// The under-store file is no longer the one Strata recorded (it changed or was
    /// replaced outside Strata, or renamed under a reader): its bytes are not served
    /// or cached as the recorded file's.
    #[error("{path}: changed in the under-store: {reason}")]
    UfsChanged { path: String, reason: String },
    /// This master does not lead the Raft group: ask the leader, at `leader`
    /// (`host:port` of its client port; empty while no leader is known).
    #[error("this master is not the leader{}", if leader.is_empty() { " (no leader is known yet)".to_string() } else { format!("; the leader is {leader}") })]
    NotLeader { leader: String },
    /// A peer (master, worker) cannot be reached or is not ready.
    #[error("unavailable: {reason}")]
    Unavailable { reason: String },
    /// A bug or a corrupted store: not the caller's fault.
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

impl Error {
    /// Convenience constructor for [`Error::InvalidArgument`].
    pub fn invalid_argument(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Convenience constructor for [`Error::Internal`].
    pub fn internal(reason: impl std::fmt::Display) -> Self {
        Error::Internal {
            reason: reason.to_string(),
        }
    }

    /// Convenience constructor for [`Error::Unavailable`].
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        Error::Unavailable {
            reason: reason.to_string(),
        }
    }

    /// Whether the same request may succeed if retried later. Retrying happens in one
    /// layer only (the client's RPC wrapper), which asks this.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::StorageIo { .. } | Error::NotLeader { .. } => true,
            Error::UnderStore { temporary, .. } => *temporary,
            Error::NotFound { .. }
            | Error::AlreadyExists { .. }
            | Error::NotADirectory { .. }
            | Error::IsADirectory { .. }
            | Error::DirectoryNotEmpty { .. }
            | Error::InvalidPath { .. }
            | Error::NotPermitted { .. }
            | Error::NotAMountPoint { .. }
            | Error::FileIncomplete { .. }
            | Error::InvalidArgument { .. }
            | Error::BlockNotFound { .. }
            | Error::NoSpace { .. }
            | Error::UfsChanged { .. }
            | Error::Internal { .. } => false,
        }
    }

    /// The error as bytes that [`Error::decode`] turns back into the same variant
    /// (for results kept on disk).
    pub fn encode(&self) -> Vec<u8> {
        self.to_detail().1.encode_to_vec()
    }

    /// An error from [`Error::encode`]'s bytes; `None` if they hold none.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        ErrorDetail::decode(bytes).ok().and_then(Error::from_detail)
    }

    fn to_detail(&self) -> (tonic::Code, ErrorDetail) {
        use tonic::Code;
        use ErrorKind as K;
        let d = |kind: K, path: &str, reason: &str| ErrorDetail {
            kind: kind as i32,
            path: path.to_string(),
            reason: reason.to_string(),
            block_id: 0,
            temporary: false,
        };
        match self {
            Error::NotFound { path } => (Code::NotFound, d(K::NotFound, path, "")),
            Error::AlreadyExists { path } => (Code::AlreadyExists, d(K::AlreadyExists, path, "")),
            Error::NotADirectory { path } => {
                (Code::FailedPrecondition, d(K::NotADirectory, path, ""))
            }
            Error::IsADirectory { path } => {
                (Code::FailedPrecondition, d(K::IsADirectory, path, ""))
            }
            Error::DirectoryNotEmpty { path } => {
                (Code::FailedPrecondition, d(K::DirectoryNotEmpty, path, ""))
            }
            Error::InvalidPath { path, reason } => {
                (Code::InvalidArgument, d(K::InvalidPath, path, reason))
            }
            Error::NotPermitted { path, reason } => {
                (Code::FailedPrecondition, d(K::NotPermitted, path, reason))
            }
            Error::NotAMountPoint { path } => {
                (Code::FailedPrecondition, d(K::NotAMountPoint, path, ""))
            }
            Error::FileIncomplete { path } => {
                (Code::FailedPrecondition, d(K::FileIncomplete, path, ""))
            }
            Error::InvalidArgument { field, reason } => {
                (Code::InvalidArgument, d(K::InvalidArgument, field, reason))
            }
            Error::BlockNotFound { block_id } => (
                Code::NotFound,
                ErrorDetail {
                    block_id: *block_id,
                    ..d(K::BlockNotFound, "", "")
                },
            ),
            Error::NoSpace { what, reason } => {
                (Code::ResourceExhausted, d(K::NoSpace, what, reason))
            }
            Error::StorageIo { what, reason } => (Code::Unavailable, d(K::StorageIo, what, reason)),
            Error::UfsChanged { path, reason } => {
                (Code::FailedPrecondition, d(K::UfsChanged, path, reason))
            }
            Error::UnderStore {
                path,
                reason,
                temporary,
            } => (
                Code::Unavailable,
                ErrorDetail {
                    temporary: *temporary,
                    ..d(K::UnderStore, path, reason)
                },
            ),
            Error::NotLeader { leader } => (Code::Unavailable, d(K::NotLeader, leader, "")),
            Error::Unavailable { reason } => (Code::Unavailable, d(K::Unavailable, "", reason)),
            Error::Internal { reason } => (Code::Internal, d(K::Internal, "", reason)),
        }
    }

    fn from_detail(detail: ErrorDetail) -> Option<Self> {
        use ErrorKind as K;
        let kind = K::try_from(detail.kind).ok()?;
        let ErrorDetail {
            path,
            reason,
            block_id,
            temporary,
            ..
        } = detail;
        Some(match kind {
            K::NotFound => Error::NotFound { path },
            K::AlreadyExists => Error::AlreadyExists { path },
            K::NotADirectory => Error::NotADirectory { path },
            K::IsADirectory => Error::IsADirectory { path },
            K::DirectoryNotEmpty => Error::DirectoryNotEmpty { path },
            K::InvalidPath => Error::InvalidPath { path, reason },
            K::NotPermitted => Error::NotPermitted { path, reason },
            K::NotAMountPoint => Error::NotAMountPoint { path },
            K::FileIncomplete => Error::FileIncomplete { path },
            K::InvalidArgument => Error::InvalidArgument {
                field: path,
                reason,
            },
            K::BlockNotFound => Error::BlockNotFound { block_id },
            K::NoSpace => Error::NoSpace { what: path, reason },
            K::StorageIo => Error::StorageIo { what: path, reason },
            K::UfsChanged => Error::UfsChanged { path, reason },
            K::UnderStore => Error::UnderStore {
                path,
                reason,
                temporary,
            },
            K::NotLeader => Error::NotLeader { leader: path },
            K::Unavailable => Error::Unavailable { reason },
            K::Internal => Error::Internal { reason },
            // A peer that set no kind sent no Strata error: map by status code.
            K::Unspecified => return None,
        })
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let (code, detail) = err.to_detail();
        tonic::Status::with_details(code, err.to_string(), detail.encode_to_vec().into())
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        if let Ok(detail) = ErrorDetail::decode(status.details()) {
            if let Some(err) = Error::from_detail(detail) {
                return err;
            }
        }
        // A status without Strata details comes from the transport (a connection
        // reset or closed mid-call surfaces as `Unknown`) or a foreign peer.
        use tonic::Code;
        match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Unknown => Error::Unavailable {
                reason: status.message().to_string(),
            },
            Code::InvalidArgument => Error::InvalidArgument {
                field: "request".to_string(),
                reason: status.message().to_string(),
            },
            Code::Ok
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::ResourceExhausted
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss
            | Code::Unauthenticated => Error::Internal {
                reason: format!("{:?}: {}", status.code(), status.message()),
            },
        }
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(err: tonic::transport::Error) -> Self {
        Error::Unavailable {
            reason: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_variants() -> Vec<Error> {
        let p = || "/a/b".to_string();
        let r = || "because".to_string();
        vec![
            Error::NotFound { path: p() },
            Error::AlreadyExists { path: p() },
            Error::NotADirectory { path: p() },
            Error::IsADirectory { path: p() },
            Error::DirectoryNotEmpty { path: p() },
            Error::InvalidPath {
                path: p(),
                reason: r(),
            },
            Error::NotPermitted {
                path: p(),
                reason: r(),
            },
            Error::NotAMountPoint { path: p() },
            Error::FileIncomplete { path: p() },
            Error::InvalidArgument {
                field: "f".into(),
                reason: r(),
            },
            Error::BlockNotFound { block_id: 42 },
            Error::NoSpace {
                what: "MEM".into(),
                reason: r(),
            },
            Error::UnderStore {
                path: p(),
                reason: r(),
                temporary: true,
            },
            Error::UnderStore {
                path: p(),
                reason: r(),
                temporary: false,
            },
            Error::StorageIo {
                what: "block 7".into(),
                reason: r(),
            },
            Error::UfsChanged {
                path: p(),
                reason: r(),
            },
            Error::Unavailable { reason: r() },
            Error::Internal { reason: r() },
        ]
    }

    #[test]
    fn every_variant_survives_a_trip_through_grpc_status() {
        for err in all_variants() {
            let status: tonic::Status = err.clone().into();
            assert_eq!(status.message(), err.to_string());
            let back: Error = status.into();
            assert_eq!(back, err);
        }
    }

    #[test]
    fn every_variant_survives_encoding_to_bytes() {
        for err in all_variants() {
            assert_eq!(Error::decode(&err.encode()), Some(err));
        }
        assert_eq!(Error::decode(b"\xff\xff"), None);
        assert_eq!(Error::decode(&[]), None);
    }

    #[test]
    fn foreign_status_maps_by_code() {
        let e: Error = tonic::Status::unavailable("conn refused").into();
        assert!(e.is_temporary());
        let e: Error = tonic::Status::unimplemented("nope").into();
        assert!(matches!(e, Error::Internal { .. }));
        // A connection lost mid-call: retry elsewhere.
        let e: Error = tonic::Status::unknown("error reading a body from connection").into();
        assert!(e.is_temporary(), "{e:?}");
    }

    #[test]
    fn a_detail_without_a_known_kind_maps_by_code() {
        for kind in [0, 9999] {
            let detail = ErrorDetail {
                kind,
                path: "/x".into(),
                ..Default::default()
            };
            let status = tonic::Status::with_details(
                tonic::Code::NotFound,
                "gone",
                detail.encode_to_vec().into(),
            );
            assert!(matches!(Error::from(status), Error::Internal { .. }));
        }
    }
}
