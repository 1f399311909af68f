//! Generated protobuf and gRPC code for `strata.v1`. Handlers never use these types
//! directly: `crate::types` converts them at the edge into validated domain types.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("strata.v1");

/// Largest gRPC message either side accepts: a data chunk plus framing, with room.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Bytes in one data message of a block read or file write stream.
pub const DATA_CHUNK_BYTES: usize = 1 << 20;
