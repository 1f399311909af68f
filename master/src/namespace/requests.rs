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
        run: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(id) = req else {
            return run.await;
        };
        if let Some(recorded) = self.store.request_answer(id)? {
            return answer(recorded);
        }
        match run.await {
            Ok(v) => Ok(v),
            // The first attempt may have run meanwhile, and be why this one failed.
            Err(e) => match self.store.request_answer(id)? {
                Some(recorded) => answer(recorded),
                None => Err(e),
            },
        }
    }

    /// Proposes `op`, the entry that decides request `req` (if any), whose answer
    /// is `reply` when it applies. Returns what apply did and the request's answer
    /// (the recorded one when an earlier attempt applied first).
    pub(super) async fn propose_deciding<T: Reply>(
        &self,
        req: Option<&RequestId>,
        op: Op,
        reply: T,
    ) -> Result<(Applied, T)> {
        let request = req.map(|id| RequestTag {
            client: id.client.to_vec(),
            seq: id.seq,
            answered_below: id.answered_below,
            time_ms: now_ms(),
            reply: reply.encode_reply(),
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
