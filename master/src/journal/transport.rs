//! Raft messages between masters, over gRPC (`RaftPeer.Send`).
//!
//! Sending: one task per peer drains a bounded queue and ships what it holds in
//! one call. Delivery is best effort, as Raft expects: a full queue or a failed
//! call drops the messages, and Raft sends again (heartbeats, append retries).
//! Receiving: [`RaftPeerService`] decodes each message, checks it is addressed to
//! this master, and hands it to the node's thread.
//!
//! Snapshots: a snapshot message carries only the snapshot's metadata. It is sent
//! in a call of its own; the receiver first fetches the snapshot's files from the
//! sender (`FetchSnapshot`, a stream of chunks, checked as they arrive) into its
//! incoming folder, then hands the message to its node, which installs them; the
//! call's outcome is reported to the sender's node (`report_snapshot`), so a
//! failed transfer is tried again.

use super::raft::RaftJournal;
use super::snapshot::{self, MAX_FILES};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use strata_common::proto::{
    self, raft_peer_client::RaftPeerClient, raft_peer_server::RaftPeer, MAX_MESSAGE_BYTES,
};
use strata_common::{Error, Result};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

/// Messages waiting for one peer; more are dropped (Raft sends again).
const QUEUE: usize = 4096;
/// Most messages in one call.
const BATCH: usize = 256;
/// Most messages accepted in one call.
pub const MAX_BATCH_MESSAGES: usize = 4096;
/// Most bytes of messages in one call (under the gRPC limit).
const MAX_CALL_BYTES: usize = MAX_MESSAGE_BYTES - 64 * 1024;
/// Bytes of snapshot file in one chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Longest a snapshot transfer (fetch and hand-over) may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Largest snapshot file accepted (a checkpoint's table files are far smaller).
const MAX_SNAPSHOT_FILE_BYTES: u64 = 1 << 40;
/// Free space kept on the snapshot folder's filesystem beyond what a snapshot
/// needs (the journal's next appends must still fit).
const SNAPSHOT_SPACE_RESERVE: u64 = 256 << 20;
/// Space a snapshot needs, in multiples of its size: the received files, the
/// tables exported from them, and their copies ingested into the metastore.
const SNAPSHOT_SPACE_FACTOR: u64 = 3;

/// Tells the node how sending a snapshot to peer `to` went.
pub type SnapshotReport = Box<dyn Fn(u64, bool) + Send + Sync>;

/// The sending side: a queue and a task per peer.
pub struct Transport {
    queues: BTreeMap<u64, mpsc::Sender<Message>>,
}

impl Transport {
    /// Starts a sender task per peer (`id → host:port`) on `runtime`; how each
    /// snapshot sent went is told to `report`.
    pub fn start(
        peers: &BTreeMap<u64, String>,
        runtime: &tokio::runtime::Handle,
        report: SnapshotReport,
    ) -> Transport {
        let report = Arc::new(report);
        let mut queues = BTreeMap::new();
        for (&id, addr) in peers {
            let (tx, rx) = mpsc::channel(QUEUE);
            runtime.spawn(send_loop(id, addr.clone(), rx, report.clone()));
            queues.insert(id, tx);
        }
        Transport { queues }
    }

    /// Queues `msgs` for their peers without waiting.
    pub fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            match self.queues.get(&m.to) {
                Some(q) => {
                    if q.try_send(m).is_err() {
                        tracing::debug!("raft: the queue to a peer is full; Raft will resend");
                    }
                }
                None => tracing::warn!(to = m.to, "raft: a message for an unknown peer"),
            }
        }
    }
}

fn peer_client(endpoint: &tonic::transport::Endpoint) -> RaftPeerClient<tonic::transport::Channel> {
    RaftPeerClient::new(endpoint.connect_lazy())
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
}

fn endpoint(addr: &str) -> Result<tonic::transport::Endpoint> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| e.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true))
        .map_err(|e| Error::invalid_argument("peer address", format!("{addr}: {e}")))
}

/// Sends a snapshot message in a call of its own (the receiver fetches the files
/// before it answers) and reports how it went.
async fn send_snapshot(
    to: u64,
    client: &mut RaftPeerClient<tonic::transport::Channel>,
    m: Message,
    report: &SnapshotReport,
) {
    let index = m.get_snapshot().get_metadata().index;
    let ok = match m.write_to_bytes() {
        Ok(b) => {
            let mut req = Request::new(proto::RaftBatch {
                messages: vec![b.into()],
            });
            req.set_timeout(SNAPSHOT_TIMEOUT);
            match client.send(req).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(
                        to,
                        index,
                        "raft: sending a snapshot failed: {}",
                        e.message()
                    );
                    false
                }
            }
        }
        Err(e) => {
            tracing::error!(to, "raft: a snapshot message cannot be encoded: {e}");
            false
        }
    };
    report(to, ok);
}

async fn send_loop(
    to: u64,
    addr: String,
    mut rx: mpsc::Receiver<Message>,
    report: Arc<SnapshotReport>,
) {
    let endpoint = match endpoint(&addr) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(to, %addr, "raft: a peer address that cannot be used: {e}");
            return;
        }
    };
    let mut client = peer_client(&endpoint.clone().timeout(Duration::from_secs(5)));
    let mut snapshot_client = peer_client(&endpoint);
    let mut failing = false;
    // A message that did not fit the previous call goes first in the next.
    let mut carried: Option<Vec<u8>> = None;
    // A snapshot met while a batch was filling goes after it.
    let mut carried_snapshot: Option<Message> = None;
    loop {
        if let Some(m) = carried_snapshot.take() {
            send_snapshot(to, &mut snapshot_client, m, &report).await;
            continue;
        }
        let first = match carried.take() {
            Some(b) => b,
            None => match rx.recv().await {
                Some(m) if m.get_msg_type() == MessageType::MsgSnapshot => {
                    send_snapshot(to, &mut snapshot_client, m, &report).await;
                    continue;
                }
                Some(m) => match m.write_to_bytes() {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(to, "raft: a message cannot be encoded: {e}");
                        continue;
                    }
                },
                None => return,
            },
        };
        if first.len() > MAX_CALL_BYTES {
            tracing::error!(to, bytes = first.len(), "raft: a message too large to send");
            continue;
        }
        let mut bytes = first.len();
        let mut messages = vec![first.into()];
        while messages.len() < BATCH {
            let Ok(m) = rx.try_recv() else { break };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                carried_snapshot = Some(m);
                break;
            }
            match m.write_to_bytes() {
                Ok(b) if bytes + b.len() <= MAX_CALL_BYTES => {
                    bytes += b.len();
                    messages.push(b.into());
                }
                Ok(b) => {
                    carried = Some(b);
                    break;
                }
                Err(e) => tracing::error!(to, "raft: a message cannot be encoded: {e}"),
            }
        }
        match client.send(proto::RaftBatch { messages }).await {
            Ok(_) => {
                if failing {
                    tracing::info!(to, %addr, "raft: peer reachable again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(to, %addr, "raft: peer unreachable: {}", e.message());
                    failing = true;
                }
                // Not a busy loop against a dead peer: what queues meanwhile is
                // sent (or dropped) after the pause.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The receiving side, served on the master's port.
pub struct RaftPeerService {
    journal: Arc<RaftJournal>,
    /// One snapshot received at a time (two senders of the same snapshot must
    /// not write into the same folder).
    receiving: tokio::sync::Mutex<()>,
}

impl RaftPeerService {
    /// Delivers what peers send to `journal`.
    pub fn new(journal: Arc<RaftJournal>) -> RaftPeerService {
        RaftPeerService {
            journal,
            receiving: tokio::sync::Mutex::new(()),
        }
    }
}

/// Decodes a batch addressed to master `me` from one of the other `voters`.
pub fn decode_batch(me: u64, voters: &[u64], batch: &proto::RaftBatch) -> Result<Vec<Message>> {
    if batch.messages.len() > MAX_BATCH_MESSAGES {
        return Err(Error::invalid_argument(
            "messages",
            format!(
                "{} in one batch; at most {MAX_BATCH_MESSAGES}",
                batch.messages.len()
            ),
        ));
    }
    batch
        .messages
        .iter()
        .map(|b| {
            let m = Message::parse_from_bytes(b).map_err(|e| {
                Error::invalid_argument("messages", format!("not a Raft message: {e}"))
            })?;
            if m.to != me {
                return Err(Error::invalid_argument(
                    "messages",
                    format!("a message for master {} reached master {me}", m.to),
                ));
            }
            if m.from == me || !voters.contains(&m.from) {
                return Err(Error::invalid_argument(
                    "messages",
                    format!(
                        "a message from master {}, not one of this master's peers {voters:?}",
                        m.from
                    ),
                ));
            }
            Ok(m)
        })
        .collect()
}

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn send(
        &self,
        req: Request<proto::RaftBatch>,
    ) -> std::result::Result<Response<proto::RaftBatchAck>, Status> {
        let msgs = decode_batch(self.journal.id(), self.journal.voters(), &req.into_inner())?;
        for m in &msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.receive_snapshot(m).await?;
            }
        }
        self.journal.deliver(msgs)?;
        Ok(Response::new(proto::RaftBatchAck {}))
    }

    type FetchSnapshotStream =
        tokio_stream::wrappers::ReceiverStream<std::result::Result<proto::SnapshotChunk, Status>>;

    async fn fetch_snapshot(
        &self,
        req: Request<proto::FetchSnapshotRequest>,
    ) -> std::result::Result<Response<Self::FetchSnapshotStream>, Status> {
        let req = req.into_inner();
        let files = self.journal.snapshots().open_files(req.index, req.term)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || stream_files(files, tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

/// Sends `files` as chunks into `tx` (on a blocking thread: plain file reads).
fn stream_files(
    files: Vec<(String, std::fs::File, u64)>,
    tx: mpsc::Sender<std::result::Result<proto::SnapshotChunk, Status>>,
) {
    use std::io::Read as _;
    let count = files.len() as u32;
    for (name, mut file, len) in files {
        let mut offset = 0u64;
        loop {
            let want = (len - offset).min(SNAPSHOT_CHUNK as u64) as usize;
            let mut data = vec![0u8; want];
            if let Err(e) = file.read_exact(&mut data) {
                let _ =
                    tx.blocking_send(Err(Status::internal(format!("snapshot file {name}: {e}"))));
                return;
            }
            let chunk = proto::SnapshotChunk {
                file: name.clone(),
                file_length: len,
                offset,
                data: data.into(),
                done: false,
                files: 0,
            };
            if tx.blocking_send(Ok(chunk)).is_err() {
                return; // the receiver went away
            }
            offset += want as u64;
            if offset >= len {
                break;
            }
        }
    }
    let _ = tx.blocking_send(Ok(proto::SnapshotChunk {
        done: true,
        files: count,
        ..Default::default()
    }));
}

impl RaftPeerService {
    /// Fetches the files of the snapshot `m` announces from its sender into the
    /// incoming folder, unless they are there already or this master is past it.
    async fn receive_snapshot(&self, m: &Message) -> Result<()> {
        let meta = m.get_snapshot().get_metadata();
        let (index, term) = (meta.index, meta.term);
        let _one_at_a_time = self.receiving.lock().await;
        let snapshots = self.journal.snapshots();
        let dest = snapshots.incoming(index, term);
        if dest.exists() || index <= self.journal.applied_index() {
            return Ok(());
        }
        let tmp = dest.with_extension("tmp");
        let received = self.fetch_snapshot_into(m, &tmp).await;
        let received = received.and_then(|(files, bytes)| {
            // Whole and readable, at the index announced, before the node sees it.
            snapshot::sync_dir(&tmp)?;
            crate::store::verify_checkpoint(&tmp, index)?;
            Ok((files, bytes))
        });
        let (files, bytes) = match received {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, &dest)
            .map_err(|e| Error::internal(format!("cannot rename {}: {e}", tmp.display())))?;
        snapshot::sync_dir(dest.parent().unwrap_or(&dest))?;
        tracing::info!(index, term, bytes, files, "raft: received a snapshot");
        Ok(())
    }

    /// Streams the files of the snapshot `m` announces from its sender into
    /// `tmp`; the files and bytes received.
    async fn fetch_snapshot_into(
        &self,
        m: &Message,
        tmp: &std::path::Path,
    ) -> Result<(usize, u64)> {
        let meta = m.get_snapshot().get_metadata();
        let (index, term) = (meta.index, meta.term);
        let addr = self.journal.peer_address(m.from).ok_or_else(|| {
            Error::invalid_argument("messages", format!("no address for master {}", m.from))
        })?;
        let mut client = peer_client(&endpoint(addr)?);
        let mut req = Request::new(proto::FetchSnapshotRequest { index, term });
        req.set_timeout(SNAPSHOT_TIMEOUT);
        let mut stream = client.fetch_snapshot(req).await?.into_inner();
        if tmp.exists() {
            std::fs::remove_dir_all(tmp)
                .map_err(|e| Error::internal(format!("cannot clear {}: {e}", tmp.display())))?;
        }
        std::fs::create_dir_all(tmp)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", tmp.display())))?;
        // Received only if installing it fits the disk: a full disk would stop
        // the journal's appends.
        let free = strata_ufs::free_bytes(tmp).unwrap_or(u64::MAX);
        let budget = free.saturating_sub(SNAPSHOT_SPACE_RESERVE) / SNAPSHOT_SPACE_FACTOR;
        let mut rx = SnapshotReceiver::new(tmp.to_path_buf(), budget);
        loop {
            let chunk = stream
                .message()
                .await?
                .ok_or_else(|| Error::unavailable("the snapshot stream ended before its end"))?;
            if rx.take(chunk)? {
                return Ok((rx.files, rx.bytes));
            }
        }
    }
}

/// Writes the chunks of one snapshot into a folder, checking each against what
/// came before: plain names, each file once and whole, in order, within bounds.
pub struct SnapshotReceiver {
    dir: std::path::PathBuf,
    /// Most bytes of files accepted in all.
    budget: u64,
    announced: u64,
    current: Option<(String, std::fs::File, u64, u64)>,
    seen: std::collections::HashSet<String>,
    /// Files and bytes received.
    pub files: usize,
    pub bytes: u64,
}

impl SnapshotReceiver {
    /// Receives into `dir` (which exists and is empty) at most `budget` bytes.
    pub fn new(dir: std::path::PathBuf, budget: u64) -> SnapshotReceiver {
        SnapshotReceiver {
            dir,
            budget,
            announced: 0,
            current: None,
            seen: Default::default(),
            files: 0,
            bytes: 0,
        }
    }

    fn bad(reason: impl std::fmt::Display) -> Error {
        Error::invalid_argument("snapshot", reason.to_string())
    }

    /// Takes one chunk; true once the snapshot is complete (every file synced).
    pub fn take(&mut self, c: proto::SnapshotChunk) -> Result<bool> {
        if c.done {
            self.finish_file()?;
            if c.files as usize != self.files {
                return Err(Self::bad(format!(
                    "{} files announced, {} received",
                    c.files, self.files
                )));
            }
            return Ok(true);
        }
        let starts_file = self
            .current
            .as_ref()
            .is_none_or(|(name, ..)| *name != c.file);
        if starts_file {
            self.finish_file()?;
            if !snapshot::is_plain_file_name(&c.file) {
                return Err(Self::bad(format!("file name {:?}", c.file)));
            }
            if !self.seen.insert(c.file.clone()) {
                return Err(Self::bad(format!("file {} sent twice", c.file)));
            }
            if self.files >= MAX_FILES {
                return Err(Self::bad(format!("more than {MAX_FILES} files")));
            }
            if c.file_length > MAX_SNAPSHOT_FILE_BYTES {
                return Err(Self::bad(format!(
                    "file {} of {} bytes",
                    c.file, c.file_length
                )));
            }
            self.announced = self.announced.saturating_add(c.file_length);
            if self.announced > self.budget {
                return Err(Error::NoSpace {
                    what: "snapshot".into(),
                    reason: format!(
                        "{} bytes of files so far, more than the {} bytes the disk can take \
                         for an installation",
                        self.announced, self.budget
                    ),
                });
            }
            let path = self.dir.join(&c.file);
            let f = std::fs::File::create_new(&path)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", path.display())))?;
            self.files += 1;
            self.current = Some((c.file.clone(), f, c.file_length, 0));
        }
        let Some((name, file, len, written)) = self.current.as_mut() else {
            return Err(Self::bad("a chunk outside any file"));
        };
        if c.file_length != *len || c.offset != *written {
            return Err(Self::bad(format!(
                "file {name}: chunk at {} of a {}-byte file, expected at {written} of {len}",
                c.offset, c.file_length
            )));
        }
        let end = written
            .checked_add(c.data.len() as u64)
            .filter(|e| e <= len)
            .ok_or_else(|| Self::bad(format!("file {name}: data past its length")))?;
        file.write_all(&c.data)
            .map_err(|e| Error::internal(format!("cannot write snapshot file {name}: {e}")))?;
        *written = end;
        self.bytes += c.data.len() as u64;
        Ok(false)
    }

    fn finish_file(&mut self) -> Result<()> {
        if let Some((name, file, len, written)) = self.current.take() {
            if written != len {
                return Err(Self::bad(format!(
                    "file {name}: {written} of {len} bytes received"
                )));
            }
            file.sync_all()
                .map_err(|e| Error::internal(format!("cannot sync snapshot file {name}: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(msgs: &[Message]) -> proto::RaftBatch {
        proto::RaftBatch {
            messages: msgs
                .iter()
                .map(|m| m.write_to_bytes().unwrap().into())
                .collect(),
        }
    }

    #[test]
    fn batches_are_checked_before_they_reach_the_node() {
        let to = |id| Message {
            to: id,
            from: 2,
            term: 3,
            ..Default::default()
        };
        let voters = [1, 2, 3];
        assert_eq!(
            decode_batch(1, &voters, &batch(&[to(1), to(1)]))
                .unwrap()
                .len(),
            2
        );
        let err = decode_batch(1, &voters, &batch(&[to(1), to(7)])).unwrap_err();
        assert!(
            err.to_string().contains("for master 7 reached master 1"),
            "{err}"
        );
        let garbage = proto::RaftBatch {
            messages: vec![bytes::Bytes::from_static(b"\xff\xff\xff\xff")],
        };
        let err = decode_batch(1, &voters, &garbage).unwrap_err();
        assert!(err.to_string().contains("not a Raft message"), "{err}");
        let flood = batch(&vec![to(1); MAX_BATCH_MESSAGES + 1]);
        let err = decode_batch(1, &voters, &flood).unwrap_err();
        assert!(err.to_string().contains("in one batch"), "{err}");
        let stranger = Message { from: 9, ..to(1) };
        let err = decode_batch(1, &voters, &batch(&[stranger])).unwrap_err();
        assert!(err.to_string().contains("not one of"), "{err}");
        let itself = Message { from: 1, ..to(1) };
        assert!(decode_batch(1, &voters, &batch(&[itself])).is_err());
    }

    fn chunk(file: &str, len: u64, offset: u64, data: &[u8]) -> proto::SnapshotChunk {
        proto::SnapshotChunk {
            file: file.into(),
            file_length: len,
            offset,
            data: data.to_vec().into(),
            done: false,
            files: 0,
        }
    }

    fn done(files: u32) -> proto::SnapshotChunk {
        proto::SnapshotChunk {
            done: true,
            files,
            ..Default::default()
        }
    }

    /// Feeds `chunks` to a fresh receiver: the first error, or the files made.
    fn receive(chunks: Vec<proto::SnapshotChunk>) -> Result<Vec<(String, Vec<u8>)>> {
        let dir = tempfile::tempdir().unwrap();
        let mut rx = SnapshotReceiver::new(dir.path().to_path_buf(), 1 << 30);
        let mut complete = false;
        for c in chunks {
            assert!(!complete, "chunks after the end");
            complete = rx.take(c)?;
        }
        if !complete {
            return Err(Error::unavailable("incomplete"));
        }
        let mut out: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        out.sort();
        Ok(out)
    }

    #[test]
    fn snapshot_chunks_are_checked_as_they_arrive() {
        let ok = receive(vec![
            chunk("CURRENT", 3, 0, b"ab"),
            chunk("CURRENT", 3, 2, b"c"),
            chunk("empty", 0, 0, b""),
            done(2),
        ])
        .unwrap();
        assert_eq!(
            ok,
            [
                ("CURRENT".to_string(), b"abc".to_vec()),
                ("empty".to_string(), vec![])
            ]
        );
        let refused = [
            // Names that leave the folder or hide.
            vec![chunk("../x", 1, 0, b"a"), done(1)],
            vec![chunk("a/b", 1, 0, b"a"), done(1)],
            vec![chunk(".hidden", 1, 0, b"a"), done(1)],
            vec![chunk("", 1, 0, b"a"), done(1)],
            vec![chunk(&"n".repeat(300), 1, 0, b"a"), done(1)],
            // A gap, an overlap, bytes past the length, a length that changes.
            vec![chunk("f", 4, 0, b"ab"), chunk("f", 4, 3, b"c"), done(1)],
            vec![chunk("f", 4, 0, b"ab"), chunk("f", 4, 1, b"bc"), done(1)],
            vec![chunk("f", 2, 0, b"abc"), done(1)],
            vec![chunk("f", 4, 0, b"ab"), chunk("f", 5, 2, b"cd"), done(1)],
            // A file cut short, sent twice, an absurd length, a wrong count.
            vec![chunk("f", 4, 0, b"ab"), done(1)],
            vec![
                chunk("f", 1, 0, b"a"),
                chunk("g", 1, 0, b"b"),
                chunk("f", 1, 0, b"a"),
                done(3),
            ],
            vec![chunk("f", u64::MAX, 0, b"a"), done(1)],
            vec![chunk("f", 1, 0, b"a"), done(2)],
            vec![chunk("f", 1, u64::MAX, b"a"), done(1)],
        ];
        for (i, chunks) in refused.into_iter().enumerate() {
            assert!(receive(chunks).is_err(), "case {i} accepted");
        }
        // No end: not complete.
        assert!(receive(vec![chunk("f", 1, 0, b"a")]).is_err());
        // More than the disk can take for an installation.
        let d = tempfile::tempdir().unwrap();
        let mut rx = SnapshotReceiver::new(d.path().to_path_buf(), 5);
        rx.take(chunk("a", 3, 0, b"abc")).unwrap();
        let full = rx.take(chunk("b", 3, 0, b"def"));
        assert!(matches!(full, Err(Error::NoSpace { .. })), "{full:?}");
    }
}
