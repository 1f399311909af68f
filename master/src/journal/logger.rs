//! Raft's log lines (the `raft` crate logs through `slog`) go to `tracing`, with
//! their key-value pairs, under the target `strata_master::raft`.

use slog::{Drain, Key, Level, OwnedKVList, Record, Serializer, KV};
use std::fmt::Write as _;

/// A `slog` drain that writes every record as one `tracing` event.
pub struct TracingDrain;

/// Collects `key=value` pairs after the message.
struct Pairs(String);

impl Serializer for Pairs {
    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut pairs = Pairs(String::new());
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let msg = record.msg();
        let kv = pairs.0;
        match record.level() {
            Level::Critical | Level::Error => {
                tracing::error!(target: "strata_master::raft", "{msg}{kv}")
            }
            Level::Warning => tracing::warn!(target: "strata_master::raft", "{msg}{kv}"),
            Level::Info => tracing::info!(target: "strata_master::raft", "{msg}{kv}"),
            Level::Debug => tracing::debug!(target: "strata_master::raft", "{msg}{kv}"),
            Level::Trace => tracing::trace!(target: "strata_master::raft", "{msg}{kv}"),
        }
        Ok(())
    }
}

/// The logger a Raft node writes to (the node adds its own `raft_id`).
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}
