//! Raft messages between masters, over gRPC (`RaftPeer.Send`).
//!
//! Sending: one task per peer drains a bounded queue and ships what it holds in
//! one call. Delivery is best effort, as Raft expects: a full queue or a failed
//! call drops the messages, and Raft sends again (heartbeats, append retries).
//! Receiving: [`RaftPeerService`] decodes each message, checks it is addressed to
//! this master, and hands it to the node's thread.

use super::raft::RaftJournal;
use protobuf::Message as _;
use raft::eraftpb::Message;
use std::collections::BTreeMap;
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

/// The sending side: a queue and a task per peer.
pub struct Transport {
    queues: BTreeMap<u64, mpsc::Sender<Message>>,
}

impl Transport {
    /// Starts a sender task per peer (`id → host:port`) on `runtime`.
    pub fn start(peers: &BTreeMap<u64, String>, runtime: &tokio::runtime::Handle) -> Transport {
        let mut queues = BTreeMap::new();
        for (&id, addr) in peers {
            let (tx, rx) = mpsc::channel(QUEUE);
            runtime.spawn(send_loop(id, addr.clone(), rx));
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

async fn send_loop(to: u64, addr: String, mut rx: mpsc::Receiver<Message>) {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .tcp_nodelay(true),
        Err(e) => {
            tracing::error!(to, %addr, "raft: a peer address that cannot be used: {e}");
            return;
        }
    };
    let mut client = RaftPeerClient::new(endpoint.connect_lazy())
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut failing = false;
    // A message that did not fit the previous call goes first in the next.
    let mut carried: Option<Vec<u8>> = None;
    loop {
        let first = match carried.take() {
            Some(b) => b,
            None => match rx.recv().await {
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
}

impl RaftPeerService {
    /// Delivers what peers send to `journal`.
    pub fn new(journal: Arc<RaftJournal>) -> RaftPeerService {
        RaftPeerService { journal }
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
        self.journal.deliver(msgs)?;
        Ok(Response::new(proto::RaftBatchAck {}))
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
}
