//! The Raft log and hard state, durable in a RocksDB instance of their own
//! (`master.journal_dir`, by default `<data_dir>/master/journal`).
//!
//! Why a separate instance rather than column families of the metastore: the log is
//! the one thing written with `fsync` (every append before it is acknowledged), while
//! the state machine is written without it and rebuilt from the log after a crash.
//! In one instance both would share a WAL, so every apply would ride on the log's
//! fsyncs and the state could never be replaced wholesale (a snapshot installs a new
//! state machine and must keep the log). Two instances keep one fsync per group of
//! appended entries and let each side be swapped or wiped alone.
//!
//! Keys: `e` + index (8 bytes, big-endian) → an `Entry`; `m/hard` → the
//! `HardState`; `m/conf` → the `ConfState`; `m/base` → index and term of the last
//! entry compacted away (the log holds `base + 1 ..= last`); `m/node` → this
//! master's Raft id and `m/pairing` → an id recorded in the metastore too, both
//! fixed at the log's creation (a metastore this log did not feed is never fed
//! its entries).

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use strata_common::{Error, Result};

const KEY_HARD: &[u8] = b"m/hard";
const KEY_CONF: &[u8] = b"m/conf";
const KEY_BASE: &[u8] = b"m/base";
const KEY_NODE: &[u8] = b"m/node";
const KEY_PAIRING: &[u8] = b"m/pairing";
/// Set while a snapshot from a peer is being installed: index and term.
const KEY_INSTALLING: &[u8] = b"m/installing";
/// When the log was made (wall clock, ms since the epoch).
const KEY_CREATED: &[u8] = b"m/created";
const ENTRY_PREFIX: u8 = b'e';

/// Largest entry the log accepts or reads back; a bigger one on disk is corruption.
pub const MAX_ENTRY_BYTES: usize = 64 << 20;

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn storage(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("journal: {what}: {e}"))
}

/// What the log holds besides its entries; read by every Raft query, so kept in
/// memory and written through.
#[derive(Clone, Debug, Default)]
struct Core {
    hard: HardState,
    conf: ConfState,
    /// Index and term of the last entry compacted away (0, 0 for a log that never
    /// compacted).
    base_index: u64,
    base_term: u64,
    /// Index and term of the last entry held (`base_*` when the log is empty).
    last_index: u64,
    last_term: u64,
}

/// The durable Raft log of one master.
pub struct LogStore {
    db: DB,
    opts: Options,
    dir: PathBuf,
    core: RwLock<Core>,
    /// The latest snapshot of the state machine on disk, offered to peers too far
    /// behind for the log.
    snapshot: RwLock<Option<SnapshotMetadata>>,
    /// Raft asked for a snapshot and there was none recent enough: the node's
    /// thread takes one.
    snapshot_wanted: AtomicBool,
}

impl LogStore {
    /// Opens (or creates, empty) the log in `dir`. A log made for another node id
    /// is refused. Call [`LogStore::create`] on a new log, then [`LogStore::load`].
    pub fn open(dir: &Path, node_id: u64) -> Result<LogStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| storage(&format!("cannot create {}", dir.display()), e))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
        opts.enable_statistics();
        // The log is written once and read back rarely (replay, a lagging peer):
        // small memtables keep the master's memory flat.
        opts.set_write_buffer_size(16 << 20);
        let db = DB::open(&opts, dir).map_err(|e| {
            Error::unavailable(format!("cannot open journal {}: {e}", dir.display()))
        })?;
        let store = LogStore {
            db,
            opts,
            dir: dir.to_path_buf(),
            core: RwLock::new(Core::default()),
            snapshot: RwLock::new(None),
            snapshot_wanted: AtomicBool::new(false),
        };
        if let Some(v) = store.get(KEY_NODE)? {
            let id = u64_of(&v).ok_or_else(|| store.damaged("its node id is corrupt"))?;
            if id != node_id {
                return Err(Error::invalid_argument(
                    "master.id",
                    format!(
                        "the journal in {} belongs to master {id}, not {node_id}; \
                         format this master to give it a new journal",
                        dir.display()
                    ),
                ));
            }
        }
        Ok(store)
    }

    /// Whether the log was never created (no node id recorded).
    pub fn is_new(&self) -> Result<bool> {
        Ok(self.get(KEY_NODE)?.is_none())
    }

    /// The id that pairs the log with the metastore it feeds (recorded in both
    /// when the log is made).
    pub fn pairing(&self) -> Result<String> {
        let v = self
            .get(KEY_PAIRING)?
            .ok_or_else(|| self.damaged("its pairing id is missing"))?;
        String::from_utf8(v).map_err(|_| self.damaged("its pairing id is corrupt"))
    }

    fn damaged(&self, what: &str) -> Error {
        Error::internal(format!(
            "journal {}: {what}; restore this master's data or format it",
            self.dir.display()
        ))
    }

    /// Removes the log in `dir`; false if there was none. Fails while a master
    /// has it open.
    pub fn erase(dir: &Path) -> Result<bool> {
        if !dir.exists() {
            return Ok(false);
        }
        if dir.join("CURRENT").exists() {
            // Opening takes RocksDB's lock: this fails while a master runs on it.
            let db = DB::open(&Options::default(), dir).map_err(|e| {
                Error::unavailable(format!(
                    "{}: the journal is in use or damaged: {e}",
                    dir.display()
                ))
            })?;
            drop(db);
        }
        std::fs::remove_dir_all(dir)
            .map_err(|e| storage(&format!("cannot remove {}", dir.display()), e))?;
        Ok(true)
    }

    /// Makes a new log for Raft node `node_id` among `voters`, paired with a
    /// metastore by `pairing`. For a state machine that already applied `applied`
    /// entries (a metastore from before the log), the log starts compacted at that
    /// index, so Raft continues after it.
    pub fn create(&self, node_id: u64, voters: &[u64], applied: u64, pairing: &str) -> Result<()> {
        let conf = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        let mut hard = HardState::default();
        // A state machine with a history and no log: its state stands for entries
        // 1..=applied, taken as compacted at term 1.
        let base_term = u64::from(applied > 0);
        hard.term = base_term;
        hard.commit = applied;
        let mut batch = WriteBatch::default();
        batch.put(KEY_CONF, encode(&conf)?);
        batch.put(KEY_HARD, encode(&hard)?);
        batch.put(KEY_BASE, pair(applied, base_term));
        batch.put(KEY_PAIRING, pairing.as_bytes());
        batch.put(KEY_NODE, node_id.to_be_bytes());
        batch.put(KEY_CREATED, wall_ms().to_be_bytes());
        self.write(batch, true)
    }

    /// When the log was made (ms since the epoch); `None` for a log from before
    /// this was recorded.
    pub fn created_ms(&self) -> Result<Option<u64>> {
        Ok(self.get(KEY_CREATED)?.and_then(|v| u64_of(&v)))
    }

    /// Reads the log back for a state machine that applied `applied` entries (and
    /// made them durable). The members must be `voters`.
    ///
    /// Entries are checked to be readable, contiguous and of non-decreasing terms.
    /// Entries at or before `applied` are in the state machine already: when one of
    /// them is damaged, or the log ends before `applied`, the log restarts after
    /// `applied`, keeping the intact entries beyond it. From the first damaged entry
    /// after `applied` on, the log is dropped: the master continues from the
    /// intact prefix. Both are logged as errors.
    pub fn load(&self, voters: &[u64], applied: u64) -> Result<()> {
        let hard: HardState = decode(
            &self
                .get(KEY_HARD)?
                .ok_or_else(|| self.damaged("its hard state (term and vote) is missing"))?,
            "hard state",
        )?;
        let conf: ConfState = decode(
            &self
                .get(KEY_CONF)?
                .ok_or_else(|| self.damaged("its membership is missing"))?,
            "membership",
        )?;
        let (mut have, mut want) = (conf.voters.clone(), voters.to_vec());
        have.sort_unstable();
        want.sort_unstable();
        if have != want {
            return Err(Error::invalid_argument(
                "master.peers",
                format!(
                    "the journal in {} was made for the masters {have:?}, the configuration \
                     names {want:?}; membership is fixed when a master is formatted",
                    self.dir.display()
                ),
            ));
        }
        let (base_index, base_term) = self
            .get(KEY_BASE)?
            .and_then(|v| unpair(&v))
            .ok_or_else(|| self.damaged("its compaction point is missing or corrupt"))?;
        if applied < base_index {
            return Err(Error::internal(format!(
                "journal {}: the log starts after entry {base_index} but the metastore has \
                 applied only {applied}; the metastore was replaced by an older copy: \
                 format this master",
                self.dir.display()
            )));
        }
        let mut base = (base_index, base_term);
        let (mut last, mut bad) = self.scan(base);
        if last.0 < applied {
            let term = self
                .read_entry(applied)
                .ok()
                .filter(|e| e.index == applied)
                .map_or(hard.term.max(last.1), |e| e.term);
            tracing::error!(
                applied,
                log_last = last.0,
                damage = bad.as_deref().unwrap_or("none"),
                "journal: the log lost entries the metastore has applied; it continues after \
                 the metastore's entry {applied}"
            );
            base = (applied, term);
            (last, bad) = self.scan(base);
        }
        let mut batch = WriteBatch::default();
        if base.0 != base_index {
            batch.put(KEY_BASE, pair(base.0, base.1));
            batch.delete_range(entry_key(0), entry_key(base.0 + 1));
        }
        if let Some(why) = &bad {
            tracing::error!(
                kept_through = last.0,
                "journal: {why}; dropping the log from there and continuing from the intact prefix"
            );
            batch.delete_range(entry_key(last.0 + 1), entry_key(u64::MAX));
        }
        if !batch.is_empty() {
            self.write(batch, true)?;
        }
        let mut hard = hard;
        if hard.commit > last.0 {
            tracing::error!(
                commit = hard.commit,
                last_index = last.0,
                "journal: the log ends before its commit index; continuing from what it holds"
            );
            hard.commit = last.0;
        }
        hard.commit = hard.commit.max(base.0);
        hard.term = hard.term.max(last.1);
        *self.core.write().unwrap_or_else(|p| p.into_inner()) = Core {
            hard,
            conf,
            base_index: base.0,
            base_term: base.1,
            last_index: last.0,
            last_term: last.1,
        };
        Ok(())
    }

    /// Walks the entries after `from` (index, term) while they are readable,
    /// contiguous and of non-decreasing terms: the last good (index, term), and why
    /// the walk stopped early, if it did.
    fn scan(&self, from: (u64, u64)) -> ((u64, u64), Option<String>) {
        let mut last = from;
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            &entry_key(from.0 + 1),
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => return (last, Some(format!("reading after entry {}: {e}", last.0))),
            };
            if k.first() != Some(&ENTRY_PREFIX) {
                break;
            }
            let index = u64_of(&k[1..]).unwrap_or(0);
            match decode::<Entry>(&v, "entry") {
                Ok(e) if index == last.0 + 1 && e.index == index && e.term >= last.1 => {
                    last = (index, e.term);
                }
                Ok(e) => {
                    let why = format!(
                        "entry at key {index} (index {}, term {}) does not follow {} (term {})",
                        e.index, e.term, last.0, last.1
                    );
                    return (last, Some(why));
                }
                Err(e) => return (last, Some(format!("entry at {index} is unreadable: {e}"))),
            }
        }
        (last, None)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(key).map_err(|e| storage("read", e))
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut w = WriteOptions::default();
        w.set_sync(sync);
        self.db
            .write_opt(batch, &w)
            .map_err(|e| storage("write", e))
    }

    fn core(&self) -> std::sync::RwLockReadGuard<'_, Core> {
        self.core.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `entries` (replacing any held from the first one's index on) and
    /// records `hard`, in one write that is fsynced before it returns (unless it
    /// only moves the commit index).
    /// Returns whether it was fsynced.
    pub fn append(&self, entries: &[Entry], hard: Option<&HardState>) -> Result<bool> {
        if entries.is_empty() && hard.is_none() {
            return Ok(false);
        }
        let mut core = self.core().clone();
        let mut batch = WriteBatch::default();
        if let Some(first) = entries.first() {
            if first.index <= core.base_index {
                return Err(storage(
                    "append",
                    format!(
                        "entry {} is at or before the compacted index {}",
                        first.index, core.base_index
                    ),
                ));
            }
            if first.index > core.last_index + 1 {
                return Err(storage(
                    "append",
                    format!(
                        "entry {} leaves a gap after {}",
                        first.index, core.last_index
                    ),
                ));
            }
            if first.index <= core.last_index {
                batch.delete_range(entry_key(first.index), entry_key(u64::MAX));
            }
            for e in entries {
                batch.put(entry_key(e.index), encode(e)?);
            }
            let last = entries.last().expect("not empty");
            core.last_index = last.index;
            core.last_term = last.term;
        }
        // A term or a vote must be durable before anything is sent on it; a commit
        // index alone need not (it is learned again from the leader), so a hard
        // state that only moved its commit index costs no fsync.
        let mut sync = !entries.is_empty();
        if let Some(hs) = hard {
            sync |= hs.term != core.hard.term || hs.vote != core.hard.vote;
            batch.put(KEY_HARD, encode(hs)?);
            core.hard = hs.clone();
        }
        self.write(batch, sync)?;
        *self.core.write().unwrap_or_else(|p| p.into_inner()) = core;
        Ok(sync)
    }

    /// Records a new commit index. Not fsynced: a commit index lost in a crash is
    /// learned again from the log (a leader commits its whole log again).
    pub fn set_commit(&self, commit: u64) -> Result<()> {
        let mut hard = self.core().hard.clone();
        if commit <= hard.commit {
            return Ok(());
        }
        hard.commit = commit;
        let mut batch = WriteBatch::default();
        batch.put(KEY_HARD, encode(&hard)?);
        self.write(batch, false)?;
        self.core.write().unwrap_or_else(|p| p.into_inner()).hard = hard;
        Ok(())
    }

    /// Drops the entries up to and including `index`, which must be applied and
    /// durable in the state machine.
    pub fn compact(&self, index: u64) -> Result<()> {
        let core = self.core().clone();
        if index <= core.base_index {
            return Ok(());
        }
        if index > core.last_index || index > core.hard.commit {
            return Err(storage(
                "compact",
                format!(
                    "index {index} is past the log (last {}, commit {})",
                    core.last_index, core.hard.commit
                ),
            ));
        }
        let term = self.term_of(index)?;
        let mut batch = WriteBatch::default();
        batch.put(KEY_BASE, pair(index, term));
        batch.delete_range(entry_key(core.base_index + 1), entry_key(index + 1));
        self.write(batch, true)?;
        let mut c = self.core.write().unwrap_or_else(|p| p.into_inner());
        c.base_index = index;
        c.base_term = term;
        Ok(())
    }

    /// The latest snapshot on disk, as offered to peers.
    pub fn set_snapshot(&self, meta: Option<SnapshotMetadata>) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = meta;
    }

    /// The latest snapshot offered to peers.
    pub fn latest_snapshot(&self) -> Option<SnapshotMetadata> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether Raft asked for a snapshot none could answer (and forgets it).
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::AcqRel)
    }

    /// The membership as recorded.
    pub fn conf_state(&self) -> ConfState {
        self.core().conf.clone()
    }

    /// The term of entry `index`, which must be held or be the compaction point.
    pub fn term_at(&self, index: u64) -> Result<u64> {
        self.term_of(index)
    }

    /// The snapshot (index, term) whose installation was cut short, if one was.
    pub fn installing(&self) -> Result<Option<(u64, u64)>> {
        match self.get(KEY_INSTALLING)? {
            Some(v) => {
                Ok(Some(unpair(&v).ok_or_else(|| {
                    self.damaged("its installation record is corrupt")
                })?))
            }
            None => Ok(None),
        }
    }

    /// Records that snapshot (`index`, `term`) is about to replace the state
    /// machine: until [`LogStore::finish_install`], the state machine is not
    /// to be trusted.
    pub fn begin_install(&self, index: u64, term: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_INSTALLING, pair(index, term));
        self.write(batch, true)
    }

    /// After the state machine became snapshot (`index`, `term`): the log
    /// restarts after it (every entry it held is dropped; what follows comes
    /// from the leader), the commit index reaches it, and the installation
    /// record goes.
    pub fn finish_install(&self, index: u64, term: u64) -> Result<()> {
        // From disk: at start this runs before the log is loaded, and the vote
        // recorded must survive.
        let mut hard: HardState = decode(
            &self
                .get(KEY_HARD)?
                .ok_or_else(|| self.damaged("its hard state (term and vote) is missing"))?,
            "hard state",
        )?;
        hard.commit = hard.commit.max(index);
        hard.term = hard.term.max(term);
        let mut batch = WriteBatch::default();
        batch.put(KEY_BASE, pair(index, term));
        batch.put(KEY_HARD, encode(&hard)?);
        batch.delete_range(entry_key(0), entry_key(u64::MAX));
        batch.delete(entry_key(u64::MAX));
        batch.delete(KEY_INSTALLING);
        self.write(batch, true)?;
        let mut c = self.core.write().unwrap_or_else(|p| p.into_inner());
        c.hard = hard;
        c.base_index = index;
        c.base_term = term;
        c.last_index = index;
        c.last_term = term;
        Ok(())
    }

    fn read_entry(&self, index: u64) -> Result<Entry> {
        let v = self
            .get(&entry_key(index))?
            .ok_or_else(|| storage("read", format!("entry {index} is missing")))?;
        decode(&v, "entry")
    }

    fn term_of(&self, index: u64) -> Result<u64> {
        let c = self.core().clone();
        if index == c.base_index {
            return Ok(c.base_term);
        }
        if index == c.last_index {
            return Ok(c.last_term);
        }
        Ok(self.read_entry(index)?.term)
    }

    /// Index of the first entry held (one past the compacted ones).
    pub fn first(&self) -> u64 {
        self.core().base_index + 1
    }

    /// Index of the last entry held.
    pub fn last(&self) -> u64 {
        self.core().last_index
    }

    /// The hard state as last recorded.
    pub fn hard_state(&self) -> HardState {
        self.core().hard.clone()
    }

    /// Write-ahead-log syncs this log has made since it opened (RocksDB's count).
    pub fn wal_syncs(&self) -> u64 {
        self.opts
            .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)
    }

    /// Bytes of the log's files on disk.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(self.db.path())
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

fn raft_err(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.core();
        Ok(RaftState {
            hard_state: c.hard.clone(),
            conf_state: c.conf.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        let (base, last) = {
            let c = self.core();
            (c.base_index, c.last_index)
        };
        if low <= base {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > last + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            &entry_key(low),
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (k, v) = item.map_err(|e| raft_err(storage("read", e)))?;
            let index = match (k.first(), u64_of(&k[1..])) {
                (Some(&ENTRY_PREFIX), Some(i)) if i < high => i,
                _ => break,
            };
            if index != low + out.len() as u64 {
                return Err(raft_err(storage(
                    "read",
                    format!("entry {index} out of place"),
                )));
            }
            size += v.len() as u64;
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(decode::<Entry>(&v, "entry").map_err(raft_err)?);
        }
        if out.len() as u64 != high - low && max_size.is_none_or(|m| size <= m) {
            return Err(raft_err(storage(
                "read",
                format!("entries {low}..{high} are not all held"),
            )));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (base, last) = {
            let c = self.core();
            (c.base_index, c.last_index)
        };
        if idx < base {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.term_of(idx).map_err(raft_err)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// The latest snapshot on disk, by its metadata only: the peer fetches the
    /// files itself (`RaftPeer.FetchSnapshot`) before its node sees the message.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match self.latest_snapshot() {
            Some(meta) if meta.index >= request_index && meta.index >= self.core().base_index => {
                let mut s = Snapshot::default();
                s.set_metadata(meta);
                Ok(s)
            }
            _ => {
                self.snapshot_wanted.store(true, Ordering::Release);
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode(m: &impl protobuf::Message) -> Result<Vec<u8>> {
    m.write_to_bytes().map_err(|e| storage("encode", e))
}

fn decode<M: protobuf::Message>(bytes: &[u8], what: &str) -> Result<M> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(storage(what, format!("{} bytes is too large", bytes.len())));
    }
    M::parse_from_bytes(bytes).map_err(|e| storage(what, e))
}

fn u64_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&a.to_be_bytes());
    v[8..].copy_from_slice(&b.to_be_bytes());
    v
}

fn unpair(v: &[u8]) -> Option<(u64, u64)> {
    if v.len() != 16 {
        return None;
    }
    Some((u64_of(&v[..8])?, u64_of(&v[8..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An installation cut short is finished at the next start, before the log is
    /// loaded: the term and vote on disk survive it (a vote forgotten could be
    /// given twice in one term).
    #[test]
    fn an_installation_finished_at_start_keeps_the_vote() {
        let d = tempfile::tempdir().unwrap();
        let voters = [1, 2, 3];
        {
            let log = LogStore::open(d.path(), 1).unwrap();
            log.create(1, &voters, 0, "p").unwrap();
            log.load(&voters, 0).unwrap();
            let hard = HardState {
                term: 7,
                vote: 2,
                commit: 0,
                ..Default::default()
            };
            log.append(&[], Some(&hard)).unwrap();
            log.begin_install(10, 5).unwrap();
        }
        let log = LogStore::open(d.path(), 1).unwrap();
        assert_eq!(log.installing().unwrap(), Some((10, 5)));
        log.finish_install(10, 5).unwrap();
        assert_eq!(log.installing().unwrap(), None);
        log.load(&voters, 10).unwrap();
        let hard = log.hard_state();
        assert_eq!((hard.term, hard.vote, hard.commit), (7, 2, 10));
        assert_eq!((log.first(), log.last()), (11, 10));
        assert!(log.created_ms().unwrap().is_some());
    }
}
