//! Shared foundation of Strata: the wire protocol, ids, the error type and its
//! mapping to gRPC, validated paths, configuration, metrics and tracing set-up.
//!
//! This crate must stay light: it pulls in no RocksDB, no raft and no cloud SDK, so
//! the client library that depends on it stays small. A test checks that rule.

pub mod config;
pub mod error;
pub mod ids;
pub mod masters;
pub mod metrics;
pub mod path;
pub mod proto;
pub mod shutdown;
pub mod telemetry;
pub mod types;
pub mod units;

pub use error::{Error, Result};
pub use ids::{BlockId, FileId, WorkerId};
pub use path::StrataPath;
