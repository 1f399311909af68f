//! [`RaftJournal`]: the journal as a Raft group (raft-rs `RawNode`), driven by one
//! thread per master that owns the node and does, in order: ticks, proposals, and
//! each `Ready` as raft-rs documents it (send messages, apply committed entries,
//! append new entries and the hard state with one fsync, send the messages that
//! needed them persisted, advance, apply what the advance committed).
//!
//! **Group commit.** The thread takes every proposal waiting in its queue before it
//! asks for a `Ready`, so all of them are appended by one fsynced write; proposals
//! that arrive while that fsync runs wait in the queue and share the next one.
//!
//! A proposal is answered once its entry is committed (fsynced by a majority; for a
//! group of one, by this master) and applied, with what apply returned. A storage
//! failure while appending or applying stops the journal: every proposal from then
//! on is refused, and the master stops serving, to recover from the log on restart.

use super::log::LogStore;
use super::snapshot::{self, Snapshots};
use super::Journal;
use crate::entries::JournalEntry;
use crate::store::{is_storage_failure, Applied, MetaStore};
use prost::Message as _;
use raft::eraftpb::{Entry, EntryType, MessageType, SnapshotMetadata};
use raft::{RawNode, StateRole};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_common::{Error, Result};
use tokio::sync::{oneshot, watch};

/// How a master's Raft node runs.
#[derive(Clone, Debug)]
pub struct RaftOptions {
    /// This master's id in the group.
    pub id: u64,
    /// Ids of the voting masters, this one included.
    pub voters: Vec<u64>,
    /// The other voters' Raft addresses (`host:port`), by id.
    pub peers: BTreeMap<u64, String>,
    /// One Raft clock tick.
    pub tick: Duration,
    /// Ticks without a leader's heartbeat before a follower stands for election.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// A snapshot is taken, and the log compacted behind it, once the log holds
    /// this many applied entries (`master.snapshot_interval_entries`)...
    pub compact_after: u64,
    /// ...down to this many (kept for a peer a little behind;
    /// `master.log_retained_entries`).
    pub keep_entries: u64,
}

impl RaftOptions {
    /// A group of one: this master alone.
    pub fn single() -> RaftOptions {
        RaftOptions {
            id: 1,
            voters: vec![1],
            peers: BTreeMap::new(),
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            compact_after: 200_000,
            keep_entries: 10_000,
        }
    }
}

/// Largest entry proposed (the biggest a handler makes, 4,096 loaded children, is
/// about 1.2 MiB); it must fit one message between masters.
pub const MAX_PROPOSAL_BYTES: usize = 8 << 20;

/// Most proposals taken from the queue into one `Ready` (one fsync).
const MAX_GROUP: usize = 4096;

/// This master's part in the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Takes proposals and replicates them.
    Leader,
    /// Follows a leader.
    Follower,
    /// Standing for election.
    Candidate,
    /// Stopped after a storage failure.
    Failed,
}

impl Role {
    fn from_u8(v: u8) -> Role {
        match v {
            0 => Role::Leader,
            2 => Role::Candidate,
            3 => Role::Failed,
            _ => Role::Follower,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            Role::Leader => 0,
            Role::Follower => 1,
            Role::Candidate => 2,
            Role::Failed => 3,
        }
    }
    fn of(r: StateRole) -> Role {
        match r {
            StateRole::Leader => Role::Leader,
            StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
            StateRole::Follower => Role::Follower,
        }
    }
}

impl From<JournalStatus> for strata_common::types::JournalReport {
    fn from(s: JournalStatus) -> Self {
        use strata_common::types::JournalRole;
        strata_common::types::JournalReport {
            id: s.id,
            role: match s.role {
                Role::Leader => JournalRole::Leader,
                Role::Follower => JournalRole::Follower,
                Role::Candidate => JournalRole::Candidate,
                Role::Failed => JournalRole::Failed,
            },
            term: s.term,
            leader_id: s.leader_id,
            commit_index: s.commit,
            applied_index: s.applied,
            first_index: s.first_index,
            last_index: s.last_index,
            log_syncs: s.log_syncs,
            entries_appended: s.entries_appended,
            log_bytes: s.log_bytes,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Failed => "failed",
        })
    }
}

/// The journal's state, as last published by its thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalStatus {
    /// This master's id.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The leader's id as this master knows it; 0 for none.
    pub leader_id: u64,
    /// Highest index known committed.
    pub commit: u64,
    /// Highest index applied to the metastore.
    pub applied: u64,
    /// First and last index held in the log.
    pub first_index: u64,
    /// Last index held in the log.
    pub last_index: u64,
    /// Fsynced appends of the log so far (one per group of entries).
    pub log_syncs: u64,
    /// Write-ahead-log syncs RocksDB made for the log (its own count).
    pub wal_syncs: u64,
    /// Entries appended to the log so far.
    pub entries_appended: u64,
    /// Bytes of the log on disk.
    pub log_bytes: u64,
}

#[derive(Default)]
struct Shared {
    role: AtomicU8,
    term: AtomicU64,
    leader_id: AtomicU64,
    commit: AtomicU64,
    applied: AtomicU64,
    first_index: AtomicU64,
    last_index: AtomicU64,
    log_syncs: AtomicU64,
    wal_syncs: AtomicU64,
    entries_appended: AtomicU64,
    log_bytes: AtomicU64,
    failure: Mutex<Option<Error>>,
}

type Reply = oneshot::Sender<Result<Applied>>;

enum Msg {
    Propose {
        data: Vec<u8>,
        reply: Reply,
    },
    /// Messages from peers.
    Raft(Vec<raft::eraftpb::Message>),
    /// A read wants the index it must see applied (ReadIndex).
    Read(oneshot::Sender<Result<u64>>),
    /// Take a snapshot now; answered with its index and term.
    Checkpoint(oneshot::Sender<Result<(u64, u64)>>),
    /// How sending a snapshot to a peer went.
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    Stop,
    /// Tests: a storage failure as the thread would meet it.
    #[cfg(test)]
    Fail(Error),
    /// Tests: a panic inside the node, as raft-rs raises on some storage errors.
    #[cfg(test)]
    Panic(String),
}

/// The master's journal: a Raft group whose log is durable in RocksDB and whose
/// state machine is the metastore.
pub struct RaftJournal {
    id: u64,
    voters: Vec<u64>,
    peers: BTreeMap<u64, String>,
    snapshots: Snapshots,
    applied: watch::Receiver<u64>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    shared: Arc<Shared>,
    serving: watch::Receiver<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl RaftJournal {
    /// Opens the log in `dir` and starts the node's thread over `store`. Call
    /// [`RaftJournal::ready`] before reading the store: entries committed but not
    /// yet applied (after a crash) are applied first.
    pub fn start(dir: &Path, store: Arc<MetaStore>, opts: RaftOptions) -> Result<RaftJournal> {
        if !opts.voters.contains(&opts.id) {
            return Err(Error::invalid_argument(
                "master.id",
                format!("{} is not among the voters {:?}", opts.id, opts.voters),
            ));
        }
        let others: Vec<u64> = opts
            .voters
            .iter()
            .copied()
            .filter(|v| *v != opts.id)
            .collect();
        if opts.peers.keys().copied().collect::<Vec<_>>() != {
            let mut o = others.clone();
            o.sort_unstable();
            o.dedup();
            o
        } || others.len() + 1 != opts.voters.len()
        {
            return Err(Error::invalid_argument(
                "master.peers",
                format!(
                    "every other voter needs an address, once: voters {:?}, addresses for {:?}",
                    opts.voters,
                    opts.peers.keys().collect::<Vec<_>>()
                ),
            ));
        }
        let (tx, rx) = mpsc::channel();
        let transport = if opts.peers.is_empty() {
            None
        } else {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                Error::internal("journal: a group of several masters needs a tokio runtime")
            })?;
            let reports = Mutex::new(tx.clone());
            let report: super::transport::SnapshotReport = Box::new(move |to, ok| {
                let tx = reports.lock().unwrap_or_else(|p| p.into_inner());
                let _ = tx.send(Msg::SnapshotSent { to, ok });
            });
            Some(super::transport::Transport::start(
                &opts.peers,
                &runtime,
                report,
            ))
        };
        let (snapshots, _) = Snapshots::open(store.dir())?;
        let mut applied = store.applied_index()?;
        if applied > 0 {
            // The log may be rebased on what the metastore applied: make that
            // durable first.
            store.sync()?;
        }
        let log = LogStore::open(dir, opts.id)?;
        if log.is_new()? {
            if applied > 0 && opts.voters.len() > 1 {
                // A log made up for a history would claim no vote and an old
                // term: in a group that could elect a master missing acknowledged
                // entries. Only a lone master starts a log over its metastore.
                return Err(Error::invalid_argument(
                    "master.journal_dir",
                    format!(
                        "{} holds no journal but the metastore has applied {applied} entries: \
                         a master of a group needs its journal (restore it, or format this \
                         master so it catches up from the others)",
                        dir.display()
                    ),
                ));
            }
            let pairing = crate::store::new_random_id()?;
            // The metastore first: a crash before the log exists makes a new log
            // and a new pairing next time.
            store.set_journal_pairing(&pairing)?;
            log.create(opts.id, &opts.voters, applied, &pairing)?;
        } else {
            let pairing = log.pairing()?;
            if store.journal_pairing()?.as_deref() != Some(pairing.as_str()) {
                if applied > 0 {
                    return Err(Error::invalid_argument(
                        "master.metastore_dir",
                        format!(
                            "the metastore was not made by the journal in {}: the two \
                             folders come from different masters or clusters",
                            dir.display()
                        ),
                    ));
                }
                // An empty metastore: rebuilt from this log.
                store.set_journal_pairing(&pairing)?;
            }
        }
        if let Some((index, term)) = log.installing()? {
            // Cut short while a snapshot from a peer replaced the metastore: the
            // installation is done again from the files received.
            tracing::warn!(
                index,
                term,
                "journal: finishing the installation of a snapshot"
            );
            let staged = snapshots.incoming(index, term);
            let meta = snapshot::read_meta(&staged)?;
            store.install_checkpoint(&staged, index, &snapshots.work())?;
            log.finish_install(index, term)?;
            snapshots.adopt_incoming(&meta)?;
            applied = index;
        }
        log.load(&opts.voters, applied)?;
        // An election lasts at most twice the election timeout before its
        // candidate moves to a new term: a new member (a first start, or a
        // format) abstains that long from its log's creation, across restarts.
        let window = opts.tick * (2 * opts.election_ticks as u32 + opts.heartbeat_ticks as u32);
        let abstain_until = match log.created_ms()? {
            Some(created) if opts.voters.len() > 1 => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let age = Duration::from_millis(now.saturating_sub(created));
                window.checked_sub(age).map(|left| Instant::now() + left)
            }
            _ => None,
        };
        // Read again: an installation finished above made a newer one.
        log.set_snapshot(Snapshots::open(store.dir())?.1);
        // Entries the metastore applied were committed, whatever the (unsynced)
        // commit index on disk says.
        log.set_commit(applied)?;
        let cfg = raft::Config {
            id: opts.id,
            election_tick: opts.election_ticks,
            heartbeat_tick: opts.heartbeat_ticks,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        cfg.validate()
            .map_err(|e| Error::invalid_argument("master raft settings", e.to_string()))?;
        let logger = super::logger::raft_logger();
        let node = RawNode::new(&cfg, log, &logger)
            .map_err(|e| Error::internal(format!("journal: cannot start the Raft node: {e}")))?;
        let (serving_tx, serving) = watch::channel(false);
        let (applied_tx, applied_rx) = watch::channel(applied);
        let shared = Arc::new(Shared::default());
        let driver = Driver {
            node,
            store,
            opts: opts.clone(),
            shared: shared.clone(),
            pending: BTreeMap::new(),
            serving: serving_tx,
            failed: None,
            store_applied: applied,
            transport,
            reads_waiting: Vec::new(),
            reads_in_flight: BTreeMap::new(),
            next_read_round: 0,
            read_term: 0,
            applied_tx,
            snapshots: snapshots.clone(),
            checkpoints_waiting: Vec::new(),
            abstain_until,
            snapshot_retry_at: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("strata-raft-{}", opts.id))
            .spawn(move || driver.run(rx))
            .map_err(|e| Error::internal(format!("journal: cannot start its thread: {e}")))?;
        Ok(RaftJournal {
            id: opts.id,
            voters: opts.voters.clone(),
            peers: opts.peers.clone(),
            snapshots,
            applied: applied_rx,
            tx: Mutex::new(Some(tx)),
            shared,
            serving,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Waits until this master leads and has applied every entry committed before
    /// its term: from then on what it reads from the metastore is current. Fails if
    /// the journal stops first.
    pub async fn ready(&self) -> Result<()> {
        let mut serving = self.serving.clone();
        loop {
            if *serving.borrow_and_update() {
                return Ok(());
            }
            if let Some(e) = self.failure() {
                return Err(e);
            }
            if serving.changed().await.is_err() {
                return Err(self
                    .failure()
                    .unwrap_or_else(|| Error::unavailable("the journal stopped")));
            }
        }
    }

    /// This master's id in the group.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The Raft address of group member `id` (not this master).
    pub fn peer_address(&self, id: u64) -> Option<&str> {
        self.peers.get(&id).map(String::as_str)
    }

    /// This master's snapshots on disk.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// The applied index now.
    pub fn applied_index(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    /// Takes a snapshot of the state machine now (or answers the latest, when
    /// nothing was applied since) and compacts the log behind it; its index and
    /// term.
    pub async fn checkpoint(&self) -> Result<(u64, u64)> {
        let (reply, answer) = oneshot::channel();
        self.send_msg(Msg::Checkpoint(reply))?;
        answer
            .await
            .map_err(|_| Error::unavailable("the journal stopped during a checkpoint"))?
    }

    fn send_msg(&self, msg: Msg) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) if tx.send(msg).is_ok() => Ok(()),
            _ => Err(self
                .failure()
                .unwrap_or_else(|| Error::unavailable("the journal has stopped"))),
        }
    }

    /// The group's members.
    pub fn voters(&self) -> &[u64] {
        &self.voters
    }

    /// Hands messages from peers to the node.
    pub fn deliver(&self, msgs: Vec<raft::eraftpb::Message>) -> Result<()> {
        self.send_msg(Msg::Raft(msgs))
    }

    /// The storage failure that stopped the journal, if one did.
    pub fn failure(&self) -> Option<Error> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until this master may answer a read linearizably (ReadIndex): it
    /// confirms with a majority that it still leads, then waits until it applied
    /// everything committed when the read arrived. Reads arriving together share
    /// one round. A group of one needs no round: no other master can commit.
    pub async fn read_index(&self) -> Result<()> {
        if self.voters.len() == 1 {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let sent = {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            tx.as_ref()
                .is_some_and(|tx| tx.send(Msg::Read(reply)).is_ok())
        };
        if !sent {
            return Err(self
                .failure()
                .unwrap_or_else(|| Error::unavailable("the journal has stopped")));
        }
        let index = answer
            .await
            .map_err(|_| Error::unavailable("the journal stopped during a read"))??;
        let mut applied = self.applied.clone();
        applied
            .wait_for(|a| *a >= index)
            .await
            .map_err(|_| Error::unavailable("the journal stopped during a read"))?;
        Ok(())
    }

    /// Whether this master leads and serves now.
    pub fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }

    /// Waits until this master no longer leads and serves (or the journal stops).
    pub async fn not_serving(&self) {
        let mut serving = self.serving.clone();
        loop {
            if !*serving.borrow_and_update() {
                return;
            }
            if serving.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until the journal stops (a storage failure, or [`RaftJournal::stop`]).
    pub async fn stopped(&self) {
        let mut serving = self.serving.clone();
        // The thread drops the sender when it ends, whatever ended it.
        while serving.changed().await.is_ok() {}
    }

    /// The journal's state as last published.
    pub fn status(&self) -> JournalStatus {
        let s = &self.shared;
        let failed = self.failure().is_some();
        let applied = s.applied.load(Ordering::Acquire);
        JournalStatus {
            id: self.id,
            role: if failed {
                Role::Failed
            } else {
                Role::from_u8(s.role.load(Ordering::Acquire))
            },
            term: s.term.load(Ordering::Acquire),
            leader_id: s.leader_id.load(Ordering::Acquire),
            // Published at different moments; what was applied was committed.
            commit: s.commit.load(Ordering::Acquire).max(applied),
            applied,
            first_index: s.first_index.load(Ordering::Acquire),
            last_index: s.last_index.load(Ordering::Acquire),
            log_syncs: s.log_syncs.load(Ordering::Acquire),
            wal_syncs: s.wal_syncs.load(Ordering::Acquire),
            entries_appended: s.entries_appended.load(Ordering::Acquire),
            log_bytes: s.log_bytes.load(Ordering::Acquire),
        }
    }

    /// Stops the node's thread (answering waiting proposals with `Unavailable`)
    /// and waits for it; the log and the metastore are closed when it returns.
    pub async fn stop(&self) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(Msg::Stop);
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

#[cfg(test)]
impl RaftJournal {
    /// Makes the thread meet `e` as a storage failure.
    pub(crate) fn inject_failure(&self, e: Error) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(Msg::Fail(e));
        }
    }

    /// Makes the thread panic with `why`.
    pub(crate) fn inject_panic(&self, why: &str) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(Msg::Panic(why.to_string()));
        }
    }
}

impl Drop for RaftJournal {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(Msg::Stop);
        }
    }
}

#[tonic::async_trait]
impl Journal for RaftJournal {
    async fn read_barrier(&self) -> Result<()> {
        self.read_index().await
    }

    async fn propose(&self, entry: JournalEntry) -> Result<Applied> {
        let data = entry.encode_to_vec();
        if data.len() > MAX_PROPOSAL_BYTES {
            // It could not reach the other masters in one message.
            return Err(Error::invalid_argument(
                "journal entry",
                format!("{} bytes; at most {MAX_PROPOSAL_BYTES}", data.len()),
            ));
        }
        let (reply, answer) = oneshot::channel();
        let sent = {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            tx.as_ref()
                .is_some_and(|tx| tx.send(Msg::Propose { data, reply }).is_ok())
        };
        if !sent {
            return Err(self
                .failure()
                .unwrap_or_else(|| Error::unavailable("the journal has stopped")));
        }
        answer.await.unwrap_or_else(|_| {
            Err(self.failure().unwrap_or_else(|| {
                Error::unavailable("the journal stopped before the entry was applied")
            }))
        })
    }
}

/// The thread that owns the Raft node.
struct Driver {
    node: RawNode<LogStore>,
    store: Arc<MetaStore>,
    opts: RaftOptions,
    shared: Arc<Shared>,
    /// Proposals waiting for their entry, by index, with the term they were made in.
    pending: BTreeMap<u64, (u64, Reply)>,
    serving: watch::Sender<bool>,
    failed: Option<Error>,
    /// The metastore's applied index.
    store_applied: u64,
    /// Sends to the other masters (none for a group of one).
    transport: Option<super::transport::Transport>,
    /// Reads waiting for the next ReadIndex round.
    reads_waiting: Vec<oneshot::Sender<Result<u64>>>,
    /// Reads of the ReadIndex rounds in flight, by round.
    reads_in_flight: BTreeMap<u64, Vec<oneshot::Sender<Result<u64>>>>,
    next_read_round: u64,
    /// The term the rounds in flight started in.
    read_term: u64,
    /// The applied index, for reads waiting to see it.
    applied_tx: watch::Sender<u64>,
    snapshots: Snapshots,
    /// Asked for a snapshot now.
    checkpoints_waiting: Vec<oneshot::Sender<Result<(u64, u64)>>>,
    /// Until when votes are refused (a new log in a group: see `Msg::Raft`).
    abstain_until: Option<Instant>,
    /// After a failed snapshot, when the next is tried.
    snapshot_retry_at: Option<Instant>,
}

impl Driver {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        // raft-rs panics on some storage errors (a log entry it cannot read back):
        // that is a storage failure like any other, reported with its cause.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.drive(&rx)));
        if let Err(panic) = outcome {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "no message".into());
            self.fail(Error::internal(format!(
                "journal: the Raft node failed: {why}"
            )));
        }
        let why = self
            .failed
            .clone()
            .unwrap_or_else(|| Error::unavailable("the master is stopping"));
        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(why.clone()));
        }
        self.serving.send_replace(false);
        // Dropping the watch sender (with `self`) wakes `stopped`.
    }

    /// The node's loop, until a stop or a failure.
    fn drive(&mut self, rx: &mpsc::Receiver<Msg>) {
        if self.opts.voters == [self.opts.id] {
            // Alone in the group: no one to wait for.
            if let Err(e) = self.node.campaign() {
                self.fail(Error::internal(format!("journal: campaign: {e}")));
                return;
            }
        }
        let mut next_tick = Instant::now() + self.opts.tick;
        self.publish();
        'run: loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    if !self.handle(msg) {
                        break 'run;
                    }
                    // Everything already waiting joins this round (one fsync).
                    for _ in 1..MAX_GROUP {
                        match rx.try_recv() {
                            Ok(msg) => {
                                if !self.handle(msg) {
                                    break 'run;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick = Instant::now() + self.opts.tick;
                self.shared
                    .log_bytes
                    .store(self.node.store().disk_bytes(), Ordering::Release);
            }
            self.start_read_round();
            if let Err(e) = self.on_ready().and_then(|()| self.compact()) {
                // Nothing more can be made durable or applied: the thread ends,
                // every waiting and later proposal is refused with this error.
                self.fail(e);
                break 'run;
            }
            self.abandon_if_deposed();
            self.publish();
        }
    }

    /// Takes one message; false to stop.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Stop => false,
            Msg::Checkpoint(reply) => {
                self.checkpoints_waiting.push(reply);
                true
            }
            Msg::SnapshotSent { to, ok } => {
                let status = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.node.report_snapshot(to, status);
                true
            }
            Msg::Read(reply) => {
                if self.node.raft.state == StateRole::Leader {
                    self.reads_waiting.push(reply);
                } else {
                    let _ = reply.send(Err(Error::unavailable(
                        "this master is not the leader of the journal",
                    )));
                }
                true
            }
            Msg::Raft(msgs) => {
                for mut m in msgs {
                    match m.get_msg_type() {
                        MessageType::MsgHeartbeat => {
                            // A leader that knew this master before its data was
                            // wiped (a format) believes it holds entries it lost,
                            // and names a commit index past its log, which Raft
                            // takes for a corrupt log. Such a heartbeat commits
                            // nothing: entries come again by append or snapshot.
                            let log = &self.node.raft.raft_log;
                            if m.commit > log.last_index() {
                                // It would also never send them again: it sends
                                // only past what it believes this master holds.
                                // Ask for a snapshot the way raft-rs's own
                                // request does (a rejection naming the index),
                                // so the leader starts over with one.
                                let ask = raft::eraftpb::Message {
                                    msg_type: MessageType::MsgAppendResponse,
                                    to: m.from,
                                    from: self.opts.id,
                                    term: m.term,
                                    index: m.commit,
                                    reject: true,
                                    reject_hint: log.last_index(),
                                    request_snapshot: m.commit,
                                    ..Default::default()
                                };
                                m.commit = log.committed;
                                self.send(vec![ask]);
                            }
                        }
                        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                            if self.abstain_until.is_some_and(|t| Instant::now() < t) =>
                        {
                            // A master formatted into a running group does not know
                            // whom it voted for before: it stays out of elections
                            // until any it might have voted in are over.
                            continue;
                        }
                        _ => {}
                    }
                    if let Err(e) = self.node.step(m) {
                        // A message from a term long gone, or for a peer that is not
                        // a member: dropped, as Raft expects.
                        tracing::debug!("raft: message dropped: {e}");
                    }
                }
                true
            }
            #[cfg(test)]
            Msg::Fail(e) => {
                self.fail(e);
                false
            }
            #[cfg(test)]
            Msg::Panic(why) => panic!("{why}"),
            Msg::Propose { data, reply } => {
                if self.node.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(Error::unavailable(
                        "this master is not the leader of the journal",
                    )));
                    return true;
                }
                match self.node.propose(Vec::new(), data) {
                    Ok(()) => {
                        let index = self.node.raft.raft_log.last_index();
                        self.pending.insert(index, (self.node.raft.term, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::unavailable(format!(
                            "the journal refused the entry: {e}"
                        ))));
                    }
                }
                true
            }
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        // A leader's messages go out before its own append (Raft allows it).
        self.send(ready.take_messages());
        for rs in ready.take_read_states() {
            let round = rs
                .request_ctx
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            for reply in self.reads_in_flight.remove(&round).unwrap_or_default() {
                let _ = reply.send(Ok(rs.index));
            }
        }
        if !ready.snapshot().is_empty() {
            let meta = ready.snapshot().get_metadata().clone();
            self.install_snapshot(&meta)?;
        }
        self.apply(ready.take_committed_entries())?;
        let appended = ready.entries().len() as u64;
        if appended > 0 || ready.hs().is_some() {
            if self.node.store().append(ready.entries(), ready.hs())? {
                self.shared.log_syncs.fetch_add(1, Ordering::AcqRel);
            }
            self.shared
                .wal_syncs
                .store(self.node.store().wal_syncs(), Ordering::Release);
            self.shared
                .entries_appended
                .fetch_add(appended, Ordering::AcqRel);
        }
        self.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.store().set_commit(commit)?;
        }
        // Before any answer: a proposer answered sees its entry in the status.
        self.publish();
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        Ok(())
    }

    /// Applies committed entries in order and answers their proposers.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        for e in entries {
            let index = e.index;
            let outcome = if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
                Some(self.apply_one(index, &e.data)?)
            } else {
                // A new leader's empty entry, or a membership change (membership is
                // fixed by configuration): nothing for the metastore.
                None
            };
            // Published before the answer: whoever is answered sees it.
            self.shared.applied.store(index, Ordering::Release);
            if let Some((term, reply)) = self.pending.remove(&index) {
                let answer = match outcome {
                    Some(r) if term == e.term => r,
                    _ => Err(Error::unavailable(
                        "the entry was replaced after a change of leader and not applied; retry",
                    )),
                };
                let _ = reply.send(answer);
            }
            if e.term == self.node.raft.term && self.node.raft.state == StateRole::Leader {
                // The first entry of this term is applied, so is everything before
                // it: the metastore is current.
                self.serving
                    .send_if_modified(|s| !std::mem::replace(s, true));
            }
        }
        Ok(())
    }

    /// Applies one journal entry; `Err` only for a failure that must stop the node.
    fn apply_one(&mut self, index: u64, data: &[u8]) -> Result<Result<Applied>> {
        if index <= self.store_applied {
            // Applied before a restart whose commit index on disk lagged behind.
            return Ok(Err(Error::unavailable(
                "the entry was applied before the master restarted",
            )));
        }
        let entry = JournalEntry::decode(data).map_err(|e| {
            Error::internal(format!(
                "journal: committed entry {index} cannot be decoded ({e}); \
                 it may come from a newer Strata"
            ))
        })?;
        let result = self.store.apply(index, &entry);
        match result {
            Err(e) if is_storage_failure(&e) => Err(e),
            other => {
                self.store_applied = index;
                Ok(other)
            }
        }
    }

    /// Once the log holds many applied entries (or a snapshot was asked for):
    /// takes a snapshot of the state machine and drops the entries behind it,
    /// keeping the last `keep_entries` for peers a little behind.
    fn compact(&mut self) -> Result<()> {
        let applied = self.node.raft.raft_log.applied;
        let first = self.node.store().first();
        let due = applied + 1 >= first + self.opts.compact_after;
        let wanted = self.node.store().take_snapshot_wanted();
        if !due && !wanted && self.checkpoints_waiting.is_empty() {
            return Ok(());
        }
        if self.checkpoints_waiting.is_empty()
            && self.snapshot_retry_at.is_some_and(|t| Instant::now() < t)
        {
            return Ok(());
        }
        let snap = match self.snapshot_now() {
            Ok(s) => s,
            Err(e) => {
                // Not fatal: the log keeps its entries until a snapshot succeeds.
                tracing::error!("journal: cannot take a snapshot (trying again in 10s): {e}");
                self.snapshot_retry_at = Some(Instant::now() + Duration::from_secs(10));
                for reply in self.checkpoints_waiting.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
                return Ok(());
            }
        };
        for reply in self.checkpoints_waiting.drain(..) {
            let _ = reply.send(Ok((snap.index, snap.term)));
        }
        let to = applied
            .saturating_sub(self.opts.keep_entries)
            .min(snap.index);
        if to < first {
            return Ok(());
        }
        self.store.sync()?;
        self.node.store().compact(to)?;
        Ok(())
    }

    /// A snapshot of everything the metastore applied: the latest one if it is
    /// that recent, else a new one (the thread applies nothing meanwhile, so the
    /// checkpoint holds exactly the entries up to the metastore's applied index;
    /// entries Raft applied after it are empty ones, which change no state and
    /// stay in the log).
    fn snapshot_now(&mut self) -> Result<SnapshotMetadata> {
        let applied = self.store_applied;
        let log = self.node.store();
        if let Some(latest) = log.latest_snapshot() {
            if latest.index >= applied {
                return Ok(latest);
            }
        }
        if applied == 0 {
            return Err(Error::unavailable(
                "nothing is applied yet, so there is nothing to take a snapshot of",
            ));
        }
        let meta = SnapshotMetadata {
            index: applied,
            term: log.term_at(applied)?,
            conf_state: Some(log.conf_state()).into(),
            ..Default::default()
        };
        let started = Instant::now();
        self.snapshots.take(&self.store, &meta)?;
        log.set_snapshot(Some(meta.clone()));
        tracing::info!(
            index = meta.index,
            term = meta.term,
            took_ms = started.elapsed().as_millis() as u64,
            "journal: snapshot taken"
        );
        Ok(meta)
    }

    /// Replaces the state machine with the snapshot received from the leader
    /// (its files are in the incoming folder: the transport fetched them before
    /// it handed the message over). Marked in the log first, so a crash in the
    /// middle is finished at the next start.
    fn install_snapshot(&mut self, meta: &SnapshotMetadata) -> Result<()> {
        let staged = self.snapshots.incoming(meta.index, meta.term);
        if !staged.exists() {
            return Err(Error::internal(format!(
                "journal: snapshot {} of term {} was accepted but its files were not received",
                meta.index, meta.term
            )));
        }
        let started = Instant::now();
        // Checked and exported before anything is marked or touched.
        let prepared =
            match crate::store::prepare_install(&staged, meta.index, &self.snapshots.work()) {
                Ok(p) => p,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&staged);
                    return Err(e);
                }
            };
        let log = self.node.store();
        log.begin_install(meta.index, meta.term)?;
        self.store.install_prepared(prepared, meta.index)?;
        log.finish_install(meta.index, meta.term)?;
        self.snapshots.adopt_incoming(meta)?;
        log.set_snapshot(Some(meta.clone()));
        self.store_applied = meta.index;
        self.shared.applied.store(meta.index, Ordering::Release);
        tracing::info!(
            index = meta.index,
            term = meta.term,
            took_ms = started.elapsed().as_millis() as u64,
            "journal: installed a snapshot from the leader"
        );
        Ok(())
    }

    /// A master that no longer leads answers its waiting proposals: their entries
    /// may still be committed by the new leader, or be replaced, and nothing here
    /// would tell them which until more entries arrive (maybe never).
    fn abandon_if_deposed(&mut self) {
        if self.node.raft.state == StateRole::Leader {
            // A round of an earlier term died with it (raft-rs forgets pending
            // reads when its role changes).
            if !self.reads_in_flight.is_empty() && self.read_term != self.node.raft.term {
                for reply in std::mem::take(&mut self.reads_in_flight)
                    .into_values()
                    .flatten()
                {
                    let _ = reply.send(Err(Error::unavailable(
                        "the journal changed terms during a read; try again",
                    )));
                }
            }
            return;
        }
        let reads = std::mem::take(&mut self.reads_in_flight)
            .into_values()
            .flatten()
            .chain(std::mem::take(&mut self.reads_waiting));
        for reply in reads {
            let _ = reply.send(Err(Error::unavailable(
                "this master lost the lead during a read; ask the leader",
            )));
        }
        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(Error::unavailable(
                "this master lost the lead before the change was committed; \
                 it may or may not be applied",
            )));
        }
    }

    /// Starts one ReadIndex round for every read waiting (they share it, as
    /// proposals share an fsync), unless rounds are already in flight. A leader
    /// that has not yet committed an entry of its term holds its reads back:
    /// raft-rs drops such a request without a word, and the round would never
    /// end.
    fn start_read_round(&mut self) {
        if self.reads_waiting.is_empty()
            || !self.reads_in_flight.is_empty()
            || !self.node.raft.commit_to_current_term()
        {
            return;
        }
        let round = self.next_read_round;
        self.next_read_round += 1;
        self.read_term = self.node.raft.term;
        self.node.read_index(round.to_be_bytes().to_vec());
        self.reads_in_flight
            .insert(round, std::mem::take(&mut self.reads_waiting));
    }

    fn send(&self, msgs: Vec<raft::eraftpb::Message>) {
        if msgs.is_empty() {
            return;
        }
        match &self.transport {
            Some(t) => t.send(msgs),
            None => tracing::warn!("raft: messages with no peers to send them to"),
        }
    }

    fn fail(&mut self, e: Error) {
        tracing::error!("journal stopped: {e}; restart the master to recover from its log");
        *self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(e.clone()));
        }
        self.failed = Some(e);
        self.serving.send_replace(false);
    }

    fn publish(&self) {
        let s = &self.shared;
        let raft = &self.node.raft;
        let applied = s.applied.load(Ordering::Acquire);
        self.applied_tx
            .send_if_modified(|a| std::mem::replace(a, applied) != applied);
        if raft.state != StateRole::Leader {
            // Serving is a leader's, from its term's first applied entry on.
            self.serving
                .send_if_modified(|s| std::mem::replace(s, false));
        }
        s.role
            .store(Role::of(raft.state).to_u8(), Ordering::Release);
        s.term.store(raft.term, Ordering::Release);
        s.leader_id.store(raft.leader_id, Ordering::Release);
        s.commit.store(raft.raft_log.committed, Ordering::Release);
        s.first_index
            .store(self.node.store().first(), Ordering::Release);
        s.last_index
            .store(self.node.store().last(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::{CreateEntry, InodeRecord, Op};
    use strata_common::ids::FileId;

    fn create(id: u64) -> JournalEntry {
        Op::Create(CreateEntry {
            parent_id: FileId::ROOT.0,
            path: format!("/f{id}"),
            inodes: vec![InodeRecord {
                id,
                parent_id: FileId::ROOT.0,
                name: format!("f{id}"),
                block_size: 4096,
                mtime_ms: 1,
                ..Default::default()
            }],
            expected_parent_version: None,
        })
        .into()
    }

    struct Node {
        store: Arc<MetaStore>,
        journal: RaftJournal,
    }

    /// Master 1 of a group of three whose peers cannot be reached.
    fn three_unreachable() -> RaftOptions {
        RaftOptions {
            voters: vec![1, 2, 3],
            peers: [
                (2, "127.0.0.1:9".to_string()),
                (3, "127.0.0.1:9".to_string()),
            ]
            .into(),
            ..RaftOptions::single()
        }
    }

    async fn open(dir: &Path, opts: RaftOptions) -> Result<Node> {
        let store = Arc::new(MetaStore::open(&dir.join("meta"), 1000)?);
        let journal = RaftJournal::start(&dir.join("journal"), store.clone(), opts)?;
        journal.ready().await?;
        Ok(Node { store, journal })
    }

    impl Node {
        async fn close(self) {
            self.journal.stop().await;
            drop(self.journal);
            assert_eq!(Arc::strong_count(&self.store), 1, "the thread let go");
        }
    }

    fn names(store: &MetaStore) -> Vec<String> {
        store
            .list_children_page(FileId::ROOT.0, None, 100_000)
            .unwrap()
            .0
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_answer_comes_after_its_entry_is_fsynced() {
        let dir = tempfile::tempdir().unwrap();
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        for id in 2..12 {
            let before = n.journal.status();
            n.journal.propose(create(id)).await.unwrap();
            let after = n.journal.status();
            assert!(after.log_syncs > before.log_syncs, "{before:?} {after:?}");
            // RocksDB's own count of write-ahead-log syncs: the write was synced.
            assert!(after.wal_syncs > before.wal_syncs, "{before:?} {after:?}");
            assert!(after.applied > before.applied);
        }
        assert_eq!(names(&n.store).len(), 10);
        n.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_proposals_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let n = Arc::new(open(dir.path(), RaftOptions::single()).await.unwrap());
        let before = n.journal.status();
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let n = n.clone();
                tokio::spawn(async move { n.journal.propose(create(100 + i)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let after = n.journal.status();
        let entries = after.entries_appended - before.entries_appended;
        let syncs = after.log_syncs - before.log_syncs;
        assert!(entries >= 64, "{entries} entries");
        assert!(syncs < 64, "64 concurrent proposals took {syncs} fsyncs");
        assert_eq!(names(&n.store).len(), 64);
        let n = Arc::into_inner(n).unwrap();
        n.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_applies_nothing_twice_and_a_lost_metastore_is_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        for id in 2..52 {
            n.journal.propose(create(id)).await.unwrap();
        }
        // A name taken twice: a deterministic conflict, recorded like any entry.
        let conflict = n.journal.propose(create(2)).await;
        assert!(
            matches!(conflict, Err(Error::AlreadyExists { .. })),
            "{conflict:?}"
        );
        let dump = n.store.dump().unwrap();
        let applied = n.store.applied_index().unwrap();
        n.close().await;

        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        assert_eq!(n.store.dump().unwrap(), dump, "a restart changes nothing");
        assert_eq!(n.store.applied_index().unwrap(), applied);
        n.close().await;

        std::fs::remove_dir_all(dir.path().join("meta")).unwrap();
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        assert_eq!(n.store.dump().unwrap(), dump, "replayed from the log");
        n.journal.propose(create(60)).await.unwrap();
        assert_eq!(names(&n.store).len(), 51);
        n.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_log_tail_is_dropped_and_the_intact_prefix_kept() {
        for keep_metastore in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let n = open(dir.path(), RaftOptions::single()).await.unwrap();
            for id in 2..22 {
                n.journal.propose(create(id)).await.unwrap();
            }
            let last = n.journal.status().last_index;
            n.close().await;
            // Garble the entry five before the end, as a torn or rotten write would.
            {
                let db = rocksdb::DB::open_default(dir.path().join("journal")).unwrap();
                let mut key = vec![b'e'];
                key.extend_from_slice(&(last - 4).to_be_bytes());
                db.put(&key, b"\xff\xfe not an entry").unwrap();
            }
            if !keep_metastore {
                std::fs::remove_dir_all(dir.path().join("meta")).unwrap();
            }
            let n = open(dir.path(), RaftOptions::single()).await.unwrap();
            // A kept metastore has all 20 files and the log goes on after it;
            // rebuilt from the log, the five from the damage on are gone.
            let expect = if keep_metastore { 20 } else { 15 };
            assert_eq!(names(&n.store).len(), expect, "kept {keep_metastore}");
            n.journal.propose(create(99)).await.unwrap();
            assert_eq!(names(&n.store).len(), expect + 1);
            n.close().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_is_compacted_behind_the_durable_metastore() {
        let dir = tempfile::tempdir().unwrap();
        let opts = RaftOptions {
            compact_after: 40,
            keep_entries: 10,
            ..RaftOptions::single()
        };
        let n = open(dir.path(), opts.clone()).await.unwrap();
        for id in 2..102 {
            n.journal.propose(create(id)).await.unwrap();
        }
        let s = n.journal.status();
        assert!(s.first_index > 40, "{s:?}");
        assert!(s.last_index - s.first_index < 60, "{s:?}");
        let dump = n.store.dump().unwrap();
        n.close().await;

        let n = open(dir.path(), opts.clone()).await.unwrap();
        assert_eq!(n.store.dump().unwrap(), dump);
        n.close().await;

        // Without its metastore, a compacted log cannot rebuild the state: a clear
        // error, not a namespace missing its first entries.
        std::fs::remove_dir_all(dir.path().join("meta")).unwrap();
        let err = open(dir.path(), opts).await.err().expect("refused");
        assert!(err.to_string().contains("format this master"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_metastore_from_before_the_log_continues_after_its_index() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = MetaStore::open(&dir.path().join("meta"), 1000).unwrap();
            for (i, id) in (2..7).enumerate() {
                store.apply(i as u64 + 1, &create(id)).unwrap();
            }
        }
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        assert!(n.journal.status().first_index > 5);
        n.journal.propose(create(7)).await.unwrap();
        assert_eq!(names(&n.store).len(), 6);
        n.close().await;
    }

    fn mkdir(id: u64) -> JournalEntry {
        let JournalEntry { op, .. } = create(id);
        let Some(Op::Create(mut e)) = op else {
            unreachable!()
        };
        e.inodes[0].is_dir = true;
        e.inodes[0].complete = true;
        Op::Create(e).into()
    }

    fn create_in(parent: u64, id: u64) -> JournalEntry {
        Op::Create(CreateEntry {
            parent_id: parent,
            path: format!("/f{parent}/f{id}"),
            inodes: vec![InodeRecord {
                id,
                parent_id: parent,
                name: format!("f{id}"),
                block_size: 4096,
                mtime_ms: 1,
                ..Default::default()
            }],
            expected_parent_version: None,
        })
        .into()
    }

    /// Replaces inode `id`'s record in a closed metastore; returns the old bytes.
    fn overwrite_inode(meta: &Path, id: u64, bytes: &[u8]) -> Vec<u8> {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), meta).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), meta, cfs).unwrap();
        let cf = db.cf_handle("inodes").unwrap();
        let old = db.get_cf(cf, id.to_be_bytes()).unwrap().unwrap();
        db.put_cf(cf, id.to_be_bytes(), bytes).unwrap();
        old
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_storage_failure_stops_the_journal_and_a_restart_recovers_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("meta");
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        n.journal.propose(mkdir(2)).await.unwrap();
        n.close().await;
        // A damaged record: applying anything under that folder fails, and
        // nothing after the failing entry may be applied out of order.
        let good = overwrite_inode(&meta, 2, b"\xff\xff\xff damaged");

        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        let err = n.journal.propose(create_in(2, 3)).await.unwrap_err();
        assert!(matches!(err, Error::Internal { .. }), "{err}");
        tokio::time::timeout(Duration::from_secs(10), n.journal.stopped())
            .await
            .expect("the journal stops");
        assert_eq!(n.journal.status().role, Role::Failed);
        assert!(n.journal.failure().is_some());
        let later = n.journal.propose(create(4)).await.unwrap_err();
        assert_eq!(later.to_string(), err.to_string(), "refused with the cause");
        assert!(n.journal.ready().await.is_err());
        assert_eq!(
            names(&n.store),
            vec!["f2"],
            "nothing applied past the failure"
        );
        n.close().await;

        // Repaired, the master applies the committed entry from its log.
        overwrite_inode(&meta, 2, &good);
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        let inside = n.store.list_children_page(2, None, 10).unwrap().0;
        assert_eq!(
            inside.len(),
            1,
            "the committed create was applied on restart"
        );
        n.close().await;
    }

    /// Removes `key` from a closed log.
    fn remove_log_key(dir: &Path, key: &[u8]) {
        let db = rocksdb::DB::open_default(dir.join("journal")).unwrap();
        assert!(db.get(key).unwrap().is_some(), "{key:?} is there");
        db.delete(key).unwrap();
    }

    fn copy_dir(from: &Path, to: &Path) {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_metastore_of_another_cluster_is_refused_and_the_log_kept() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let n = open(a.path(), RaftOptions::single()).await.unwrap();
        for id in 2..12 {
            n.journal.propose(create(id)).await.unwrap();
        }
        n.close().await;
        // Cluster B's metastore is further along than A's log.
        let n = open(b.path(), RaftOptions::single()).await.unwrap();
        for id in 2..32 {
            n.journal.propose(create(id)).await.unwrap();
        }
        n.close().await;
        let a_meta = a.path().join("meta");
        let kept = a.path().join("meta-a");
        copy_dir(&a_meta, &kept);
        copy_dir(&b.path().join("meta"), &a_meta);
        let err = open(a.path(), RaftOptions::single())
            .await
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("different masters or clusters"),
            "{err}"
        );
        // A's own metastore back: nothing of A's log was lost to the attempt.
        copy_dir(&kept, &a_meta);
        std::fs::remove_dir_all(&kept).unwrap();
        let n = open(a.path(), RaftOptions::single()).await.unwrap();
        assert_eq!(names(&n.store).len(), 10);
        n.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_metastore_rebuilt_from_the_log_keeps_the_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        let id = n.store.cluster_id();
        // As the first leader journals it (`Namespace::journal_cluster_id`).
        let entry = Op::ClusterId(crate::entries::ClusterIdEntry { id: id.clone() });
        n.journal.propose(entry.into()).await.unwrap();
        n.journal.propose(create(2)).await.unwrap();
        n.close().await;
        std::fs::remove_dir_all(dir.path().join("meta")).unwrap();
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        assert_eq!(n.store.cluster_id(), id, "workers keep their blocks");
        assert_eq!(names(&n.store), vec!["f2"]);
        n.close().await;
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        assert_eq!(n.store.cluster_id(), id, "and it stays");
        n.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_entry_the_metastore_covers_keeps_the_intact_ones_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("meta");
        let copy = dir.path().join("meta-copy");
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        for id in 2..17 {
            n.journal.propose(create(id)).await.unwrap();
        }
        n.close().await;
        copy_dir(&meta, &copy);
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        for id in 17..22 {
            n.journal.propose(create(id)).await.unwrap();
        }
        n.close().await;
        // The metastore loses its last writes (a power loss), and an entry it
        // had applied is damaged in the log.
        copy_dir(&copy, &meta);
        {
            let db = rocksdb::DB::open_default(dir.path().join("journal")).unwrap();
            let mut key = vec![b'e'];
            key.extend_from_slice(&8u64.to_be_bytes());
            db.put(&key, b"\xff\xfe not an entry").unwrap();
        }
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        assert_eq!(
            names(&n.store).len(),
            20,
            "every acknowledged create is back"
        );
        n.journal.propose(create(50)).await.unwrap();
        n.close().await;
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        assert_eq!(names(&n.store).len(), 21);
        n.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_missing_its_state_or_members_is_an_error_not_a_hang() {
        for key in [&b"m/hard"[..], b"m/conf", b"m/pairing"] {
            let dir = tempfile::tempdir().unwrap();
            let n = open(dir.path(), RaftOptions::single()).await.unwrap();
            n.journal.propose(create(2)).await.unwrap();
            n.close().await;
            remove_log_key(dir.path(), key);
            let opened = tokio::time::timeout(
                Duration::from_secs(10),
                open(dir.path(), RaftOptions::single()),
            )
            .await
            .expect("an answer, not a hang");
            let err = opened.err().expect("refused");
            assert!(err.to_string().contains("is missing"), "{key:?}: {err}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_made_for_other_members_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), RaftOptions::single())
            .await
            .unwrap()
            .close()
            .await;
        let three = three_unreachable();
        let err = open(dir.path(), three).await.err().expect("refused");
        assert!(err.to_string().contains("membership is fixed"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_the_node_is_a_failure_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        n.journal.inject_panic("entries 5..9 unavailable");
        tokio::time::timeout(Duration::from_secs(10), n.journal.stopped())
            .await
            .expect("the journal stops");
        assert_eq!(n.journal.status().role, Role::Failed);
        let err = n.journal.propose(create(2)).await.unwrap_err();
        assert!(
            err.to_string().contains("entries 5..9 unavailable"),
            "{err}"
        );
        n.close().await;
    }

    /// A member formatted into a group does not know whom it voted for before:
    /// for two election timeouts from its log's creation, even across a restart,
    /// vote requests do not reach its node (its term does not move); after that
    /// they do.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_member_stays_out_of_elections_for_a_while_even_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let three = || RaftOptions {
            tick: Duration::from_millis(100),
            // A long window, so the restart below lands inside it.
            election_ticks: 20,
            ..three_unreachable()
        };
        let vote = |term| raft::eraftpb::Message {
            msg_type: MessageType::MsgRequestVote,
            to: 1,
            from: 2,
            term,
            ..Default::default()
        };
        // Started without waiting for a leader: its peers do not exist.
        let start = || {
            let store = Arc::new(MetaStore::open(&dir.path().join("meta"), 1000).unwrap());
            let journal =
                RaftJournal::start(&dir.path().join("journal"), store.clone(), three()).unwrap();
            Node { store, journal }
        };
        start().close().await;
        let n = start();
        n.journal.deliver(vec![vote(5)]).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(n.journal.status().term < 5, "{:?}", n.journal.status());
        // Past the window (2 × 20 + 2 ticks of 100 ms from creation) it votes.
        tokio::time::sleep(Duration::from_millis(4300)).await;
        n.journal.deliver(vec![vote(9)]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while n.journal.status().term < 9 {
            assert!(Instant::now() < deadline, "{:?}", n.journal.status());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_member_without_its_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        n.journal.propose(create(2)).await.unwrap();
        n.close().await;
        std::fs::remove_dir_all(dir.path().join("journal")).unwrap();
        let three = three_unreachable();
        let err = open(dir.path(), three).await.err().expect("refused");
        assert!(err.to_string().contains("needs its journal"), "{err}");
        // Alone, the same metastore goes on (its history taken as compacted).
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        assert_eq!(names(&n.store), vec!["f2"]);
        n.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_too_large_for_one_message_is_refused_before_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let n = open(dir.path(), RaftOptions::single()).await.unwrap();
        let before = n.journal.status().last_index;
        let JournalEntry { op, .. } = create(2);
        let Some(Op::Create(mut e)) = op else {
            unreachable!()
        };
        e.path = "/".repeat(MAX_PROPOSAL_BYTES);
        let err = n.journal.propose(Op::Create(e).into()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert_eq!(n.journal.status().last_index, before, "nothing appended");
        n.journal.propose(create(3)).await.unwrap();
        n.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_of_another_master_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), RaftOptions::single())
            .await
            .unwrap()
            .close()
            .await;
        let other = RaftOptions {
            id: 2,
            voters: vec![2],
            ..RaftOptions::single()
        };
        let err = open(dir.path(), other).await.err().expect("refused");
        assert!(err.to_string().contains("belongs to master 1"), "{err}");
    }
}
