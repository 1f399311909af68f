//! The journal orders namespace mutations: a handler proposes one
//! [`JournalEntry`](crate::entries::JournalEntry) and gets back what
//! [`MetaStore::apply`](crate::store::MetaStore::apply) returned for it, once the
//! entry is durable in the log and applied.
//!
//! The one implementation is [`RaftJournal`] (raft-rs): a lone master is a Raft
//! group of one, on the same code path a group of three or five will take.

pub mod log;
mod logger;
pub mod raft;
pub mod snapshot;
pub mod transport;

use crate::entries::JournalEntry;
use crate::store::Applied;
use strata_common::Result;

pub use self::raft::{JournalStatus, RaftJournal, RaftOptions, Role};

/// Orders entries and applies them. `propose` returns what apply returned for this
/// entry: its effects, or the deterministic conflict it hit.
#[tonic::async_trait]
pub trait Journal: Send + Sync {
    /// Appends `entry` and waits until it is committed and applied.
    async fn propose(&self, entry: JournalEntry) -> Result<Applied>;

    /// Waits until a read of the applied state is linearizable: this master
    /// still leads and has applied everything committed before the call.
    async fn read_barrier(&self) -> Result<()>;
}
