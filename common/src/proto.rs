//! Generated protobuf and gRPC code for `strata.v1`. Handlers never use these types
//! directly: `crate::types` converts them at the edge into validated domain types.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("strata.v1");

/// Largest gRPC message either side accepts: a data chunk plus framing, with room.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Bytes in one data message of a block read or file write stream.
pub const DATA_CHUNK_BYTES: usize = 1 << 20;

/// HTTP/2 flow-control window of one data stream. The protocol's default (64 KiB)
/// would stall a stream of 1 MiB chunks after every message.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// HTTP/2 flow-control window of one connection (all its streams).
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// How long an idle accepted connection waits before TCP keepalive probes start.
pub const SERVER_TCP_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);

/// The accepted connections of a server's listener, with `TCP_NODELAY` set (without
/// it, each small reply waits on the peer's delayed ACK: about 40 ms per small read)
/// and TCP keepalive on, so a peer that vanished is noticed.
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(SERVER_TCP_KEEPALIVE))
}
