//! Mutations that carry a client's request id run at most once: the entry that
//! decides the request carries its id and its answer, apply records the answer
//! (`store::requests`), and a retry of a recorded request gets that answer back
//! without running again. A retry that arrives while its first attempt is still
//! running meets the first attempt's effects (the name taken, the file gone);
//! it then looks for the first attempt's answer before reporting the conflict,
//! and two attempts whose entries both reach the log are told apart by apply:
//! the second changes nothing and answers the first one's result.

use super::Namespace;
use crate::entries::{JournalEntry, Op, RequestTag};
use crate::store::Applied;
use prost::Message;
use strata_common::proto;
use strata_common::types::{FileInfo, RequestId, UfsLocation};
use strata_common::{Error, Result};

/// What a request does, recorded with its answer: a request id reused for
/// another operation is refused instead of answered with another's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Mkdir = 1,
    CreateFile = 2,
    Delete = 3,
    Rename = 4,
    Mount = 5,
    Unmount = 6,
}

/// A mutation's answer as apply records it.
pub trait Reply: Sized {
    /// The bytes recorded.
    fn encode_reply(&self) -> Vec<u8>;
    /// The answer from recorded bytes.
    fn decode_reply(bytes: &[u8]) -> Result<Self>;
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("metastore: corrupt recorded answer: {e}"))
}

impl Reply for () {
    fn encode_reply(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode_reply(_: &[u8]) -> Result<Self> {
        Ok(())
    }
}

impl Reply for FileInfo {
    fn encode_reply(&self) -> Vec<u8> {
        proto::FileInfo::from(self.clone()).encode_to_vec()
    }
    fn decode_reply(bytes: &[u8]) -> Result<Self> {
        proto::FileInfo::decode(bytes).map_err(corrupt)?.try_into()
    }
}

impl Reply for (FileInfo, Option<UfsLocation>) {
    fn encode_reply(&self) -> Vec<u8> {
        proto::CreateFileResponse {
            info: Some(self.0.clone().into()),
            ufs: self.1.clone().map(Into::into),
            ..Default::default()
        }
        .encode_to_vec()
    }
    fn decode_reply(bytes: &[u8]) -> Result<Self> {
        let r = proto::CreateFileResponse::decode(bytes).map_err(corrupt)?;
        let info = r.info.ok_or_else(|| corrupt("no file info"))?.try_into()?;
        Ok((info, r.ufs.map(UfsLocation::try_from).transpose()?))
    }
}

/// Whether `e` is a refusal decided by the namespace's state.
fn answers_from_state(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound { .. }
            | Error::AlreadyExists { .. }
            | Error::NotADirectory { .. }
            | Error::IsADirectory { .. }
            | Error::DirectoryNotEmpty { .. }
            | Error::NotPermitted { .. }
            | Error::NotAMountPoint { .. }
            | Error::FileIncomplete { .. }
    )
}

fn answer<T: Reply>(recorded: Result<Vec<u8>>) -> Result<T> {
    recorded.and_then(|bytes| T::decode_reply(&bytes))
}

fn now_ms() -> i64 {
    super::now_ms()
}

impl Namespace {
    /// Runs the mutation `run` of request `req` once: a request already applied
    /// gets its recorded answer, without running again.
    pub(super) async fn once<T: Reply>(
        &self,
        req: Option<&RequestId>,
        kind: RequestKind,
        run: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if let Some(done) = self.answered(req, kind)? {
            return done;
        }
        match run.await {
            Ok(v) => Ok(v),
            Err(e) => {
                // The first attempt may have run meanwhile, and be why this one
                // failed.
                if let Some(done) = self.answered(req, kind)? {
                    return done;
                }
                // A refusal read from this master's state (the name taken, the
                // file gone) is an answer about the namespace: it stands only if
                // this master still led when it read (a deposed leader that does
                // not know it yet would answer from a stale state).
                if answers_from_state(&e) {
                    self.read_barrier().await?;
                }
                Err(e)
            }
        }
    }

    /// The recorded answer of request `req`, if it was applied. A handler asks
    /// again once it holds its paths' locks, before any under-store step: an
    /// earlier attempt may have finished while it waited, and what the path
    /// names now may be another client's.
    pub(super) fn answered<T: Reply>(
        &self,
        req: Option<&RequestId>,
        kind: RequestKind,
    ) -> Result<Option<Result<T>>> {
        let Some(id) = req else {
            return Ok(None);
        };
        Ok(self.store.request_answer(id, kind as u32)?.map(answer::<T>))
    }

    /// Proposes `op`, the entry that decides request `req` (if any), whose answer
    /// is `reply` when it applies. Returns what apply did and the request's answer
    /// (the recorded one when an earlier attempt applied first).
    pub(super) async fn propose_deciding<T: Reply>(
        &self,
        req: Option<&RequestId>,
        kind: RequestKind,
        op: Op,
        reply: T,
    ) -> Result<(Applied, T)> {
        let request = req.map(|id| RequestTag {
            client: id.client.to_vec(),
            seq: id.seq,
            answered_below: id.answered_below,
            time_ms: now_ms(),
            reply: reply.encode_reply(),
            kind: kind as u32,
        });
        let entry = JournalEntry {
            op: Some(op),
            request,
        };
        let mut applied = self.journal.propose(entry).await?;
        match applied.replayed.take() {
            Some(recorded) => Ok((applied, answer(recorded)?)),
            None => Ok((applied, reply)),
        }
    }
}
