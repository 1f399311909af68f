//! Names of the worker's counters. Tests and `fsadmin report metrics` read them
//! through the worker's `GetMetrics` RPC.

/// The worker's per-instance counter registry.
pub type WorkerMetrics = strata_common::metrics::Registry;

/// Bytes sent to clients from worker storage.
pub const BYTES_READ_CACHE: &str = "worker.bytes_read_cache";
/// Bytes read from under-stores (read-through and no-cache reads).
pub const BYTES_READ_UFS: &str = "worker.bytes_read_ufs";
/// Bytes written into worker storage by clients.
pub const BYTES_WRITTEN_CACHE: &str = "worker.bytes_written_cache";
/// Bytes written to under-stores for clients.
pub const BYTES_WRITTEN_UFS: &str = "worker.bytes_written_ufs";
/// Blocks made visible in storage (writes and read-through).
pub const BLOCKS_CACHED: &str = "worker.blocks_cached";
/// Blocks evicted to make room.
pub const BLOCKS_EVICTED: &str = "worker.blocks_evicted";
/// Blocks dropped at the master's request (deleted or freed files).
pub const BLOCKS_REMOVED: &str = "worker.blocks_removed";

/// Every counter, so a report lists zeros too.
pub const ALL: [&str; 7] = [
    BYTES_READ_CACHE,
    BYTES_READ_UFS,
    BYTES_WRITTEN_CACHE,
    BYTES_WRITTEN_UFS,
    BLOCKS_CACHED,
    BLOCKS_EVICTED,
    BLOCKS_REMOVED,
];
