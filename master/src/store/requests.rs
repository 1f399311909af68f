//! Results of client requests, kept by apply so that a retried mutation is
//! answered with its first result instead of running again (a create whose
//! answer was lost in a failover gets its file, not `AlreadyExists`).
//!
//! Keys of the `requests` column family:
//! - `r` client seq → [`RequestOutcome`] of that request (with its kind: a
//!   request id reused for another operation is refused);
//! - `c` client → when the client was last seen (the leader's clock, ms) and the
//!   seq below which its results are all forgotten;
//! - `t` time client → nothing: clients by the time they were last seen;
//! - `x` → when silent clients were last looked for.
//!
//! A request says below which seq its client has every answer
//! (`answered_below`); apply forgets those results, and keeps at most
//! [`MAX_RESULTS_PER_CLIENT`] per client whatever the client says. A client
//! silent for [`REQUEST_RETENTION_MS`] is forgotten whole (looked for every
//! [`EXPIRY_EVERY_MS`]). Each walk starts where the last one ended, and each is
//! bounded per apply, so one entry never turns into an unbounded amount of work.
//! Everything depends only on the entry and the stored state: every master keeps
//! the same records. Times come from the leaders' clocks: masters whose clocks
//! differ by minutes forget results early or late.

use super::{storage, MetaStore};
use crate::entries::{RequestOutcome, RequestTag};
use prost::Message;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use strata_common::types::{RequestId, CLIENT_ID_BYTES};
use strata_common::{Error, Result};

pub(super) const CF_REQUESTS: &str = "requests";

/// Results of a client not heard from for this long are forgotten: its retries
/// run as new requests. Far beyond any client's retry budget.
pub const REQUEST_RETENTION_MS: i64 = 15 * 60 * 1000;
/// Most results kept per client: a client with more mutations in flight (or
/// one that never says what it received) has its oldest forgotten.
pub const MAX_RESULTS_PER_CLIENT: u64 = 10_000;
/// How often silent clients are looked for.
pub const EXPIRY_EVERY_MS: i64 = 10_000;
/// A client's last-seen time moves only when it is this much older.
const SEEN_GRANULARITY_MS: i64 = 1000;
/// Most results one apply forgets, per client.
const FORGET_PER_APPLY: usize = 256;
/// Most silent clients one look forgets.
const EXPIRE_PER_LOOK: usize = 64;
const KEY_EXPIRY: &[u8] = b"x";

fn result_key(client: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + CLIENT_ID_BYTES + 8);
    k.push(b'r');
    k.extend_from_slice(client);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn client_key(client: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + CLIENT_ID_BYTES);
    k.push(b'c');
    k.extend_from_slice(client);
    k
}

fn time_key(time_ms: i64, client: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 + CLIENT_ID_BYTES);
    k.push(b't');
    k.extend_from_slice(&(time_ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(client);
    k
}

/// What is kept per client.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ClientRecord {
    seen_ms: i64,
    forgotten_below: u64,
}

impl ClientRecord {
    fn encode(self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&self.seen_ms.to_be_bytes());
        v[8..].copy_from_slice(&self.forgotten_below.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Result<Self> {
        let bad = || Error::internal("metastore: corrupt request client record");
        let seen: [u8; 8] = v.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
        let below: [u8; 8] = v
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        Ok(ClientRecord {
            seen_ms: i64::from_be_bytes(seen),
            forgotten_below: u64::from_be_bytes(below),
        })
    }
}

/// Checks a tag as apply sees it (made by a handler, but read from a log).
pub(super) fn check_tag(tag: &RequestTag) -> Result<()> {
    if tag.client.len() != CLIENT_ID_BYTES {
        return Err(Error::invalid_argument(
            "request.client",
            format!("{} bytes, expected {CLIENT_ID_BYTES}", tag.client.len()),
        ));
    }
    if tag.seq == 0 || tag.answered_below > tag.seq {
        return Err(Error::invalid_argument(
            "request.seq",
            format!("seq {} answered below {}", tag.seq, tag.answered_below),
        ));
    }
    Ok(())
}

/// A recorded outcome as the answer to a request of `kind`.
pub(super) fn answer_of(outcome: RequestOutcome, kind: u32) -> Result<Vec<u8>> {
    if outcome.kind != kind {
        return Err(Error::invalid_argument(
            "request",
            "this request id was used for another operation; a retry repeats its request",
        ));
    }
    if outcome.error.is_empty() {
        return Ok(outcome.reply);
    }
    Err(Error::decode(&outcome.error)
        .unwrap_or_else(|| Error::internal("metastore: corrupt recorded request error")))
}

impl MetaStore {
    /// The recorded answer of a request (its reply bytes, or the conflict it met)
    /// if it was applied and is still remembered; `kind` is what the asking
    /// request does.
    pub fn request_answer(&self, id: &RequestId, kind: u32) -> Result<Option<Result<Vec<u8>>>> {
        Ok(self
            .recorded(&id.client, id.seq)?
            .map(|o| answer_of(o, kind)))
    }

    pub(super) fn recorded(&self, client: &[u8], seq: u64) -> Result<Option<RequestOutcome>> {
        let cf = self.cf(CF_REQUESTS)?;
        match self
            .db
            .get_pinned_cf(cf, result_key(client, seq))
            .map_err(storage)?
        {
            Some(v) => RequestOutcome::decode(&*v)
                .map(Some)
                .map_err(|e| Error::internal(format!("metastore: corrupt request record: {e}"))),
            None => Ok(None),
        }
    }

    fn client_record(&self, client: &[u8]) -> Result<Option<ClientRecord>> {
        let cf = self.cf(CF_REQUESTS)?;
        match self
            .db
            .get_pinned_cf(cf, client_key(client))
            .map_err(storage)?
        {
            Some(v) => ClientRecord::decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Adds to `batch` the answer of `tag`'s request, and forgets the results its
    /// client has received (or that exceed what is kept per client) and, now and
    /// then, the clients silent for too long.
    pub(super) fn record_request(
        &self,
        batch: &mut WriteBatch,
        tag: &RequestTag,
        answer: std::result::Result<&[u8], &Error>,
    ) -> Result<()> {
        let cf = self.cf(CF_REQUESTS)?;
        let outcome = match answer {
            Ok(reply) => RequestOutcome {
                reply: reply.to_vec(),
                error: Vec::new(),
                kind: tag.kind,
            },
            Err(e) => RequestOutcome {
                reply: Vec::new(),
                error: e.encode(),
                kind: tag.kind,
            },
        };
        batch.put_cf(
            cf,
            result_key(&tag.client, tag.seq),
            outcome.encode_to_vec(),
        );
        let old = self.client_record(&tag.client)?;
        let mut rec = old.unwrap_or(ClientRecord {
            seen_ms: i64::MIN,
            forgotten_below: 0,
        });
        // Never past this request's own seq: its result was just put.
        let below = tag
            .answered_below
            .max(tag.seq.saturating_sub(MAX_RESULTS_PER_CLIENT));
        rec.forgotten_below =
            self.forget_results(batch, &tag.client, rec.forgotten_below, below)?;
        if old.is_none() || tag.time_ms.saturating_sub(rec.seen_ms) >= SEEN_GRANULARITY_MS {
            if old.is_some() {
                batch.delete_cf(cf, time_key(rec.seen_ms, &tag.client));
            }
            batch.put_cf(cf, time_key(tag.time_ms, &tag.client), []);
            rec.seen_ms = tag.time_ms;
        }
        if Some(rec) != old {
            batch.put_cf(cf, client_key(&tag.client), rec.encode());
        }
        let last_look = match self.db.get_pinned_cf(cf, KEY_EXPIRY).map_err(storage)? {
            Some(v) => i64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| Error::internal("metastore: corrupt request expiry record"))?,
            ),
            None => i64::MIN,
        };
        if tag.time_ms.saturating_sub(last_look) >= EXPIRY_EVERY_MS {
            batch.put_cf(cf, KEY_EXPIRY, tag.time_ms.to_be_bytes());
            self.expire_clients(
                batch,
                &tag.client,
                tag.time_ms.saturating_sub(REQUEST_RETENTION_MS),
            )?;
        }
        Ok(())
    }

    /// Deletes up to [`FORGET_PER_APPLY`] of `client`'s results from `from`
    /// (below it they are gone already) to `below`; returns where its results now
    /// start.
    fn forget_results(
        &self,
        batch: &mut WriteBatch,
        client: &[u8],
        from: u64,
        below: u64,
    ) -> Result<u64> {
        if below <= from {
            return Ok(from);
        }
        let cf = self.cf(CF_REQUESTS)?;
        let mut end = result_key(client, below);
        if below == u64::MAX {
            end.push(0); // past the last seq too
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(end);
        let start = result_key(client, from);
        let iter =
            self.db
                .iterator_cf_opt(cf, opts, IteratorMode::From(&start, Direction::Forward));
        for (n, item) in iter.enumerate() {
            let (k, _) = item.map_err(storage)?;
            if n == FORGET_PER_APPLY {
                // Resume at the first one left.
                let seq: [u8; 8] = k[1 + CLIENT_ID_BYTES..]
                    .try_into()
                    .map_err(|_| Error::internal("metastore: corrupt request key"))?;
                return Ok(u64::from_be_bytes(seq));
            }
            batch.delete_cf(cf, k);
        }
        Ok(below)
    }

    /// Forgets up to [`EXPIRE_PER_LOOK`] clients last seen before `cutoff` (not
    /// `current`, seen just now).
    fn expire_clients(&self, batch: &mut WriteBatch, current: &[u8], cutoff: i64) -> Result<()> {
        let cf = self.cf(CF_REQUESTS)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(time_key(cutoff, &[]));
        let mut expired = 0;
        for item in self
            .db
            .iterator_cf_opt(cf, opts, IteratorMode::From(b"t", Direction::Forward))
        {
            let (k, _) = item.map_err(storage)?;
            if expired == EXPIRE_PER_LOOK {
                break;
            }
            let client = k
                .get(9..)
                .filter(|c| c.len() == CLIENT_ID_BYTES)
                .ok_or_else(|| Error::internal("metastore: corrupt request time record"))?;
            if client == current {
                continue;
            }
            expired += 1;
            let Some(mut rec) = self.client_record(client)? else {
                batch.delete_cf(cf, &k);
                continue;
            };
            let from = rec.forgotten_below;
            rec.forgotten_below = self.forget_results(batch, client, from, u64::MAX)?;
            if rec.forgotten_below == u64::MAX {
                batch.delete_cf(cf, client_key(client));
                batch.delete_cf(cf, &k);
            } else {
                // More than one look forgets: the next look goes on from here.
                batch.put_cf(cf, client_key(client), rec.encode());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::{CreateEntry, InodeRecord, JournalEntry, Op};

    const ROOT: u64 = 1;

    fn create(id: u64, name: &str) -> Op {
        Op::Create(CreateEntry {
            parent_id: ROOT,
            path: format!("/{name}"),
            inodes: vec![InodeRecord {
                id,
                parent_id: ROOT,
                name: name.into(),
                is_dir: true,
                ..Default::default()
            }],
            expected_parent_version: None,
        })
    }

    fn tagged(op: Op, client: u8, seq: u64, answered_below: u64, time_ms: i64) -> JournalEntry {
        JournalEntry {
            op: Some(op),
            request: Some(RequestTag {
                client: vec![client; CLIENT_ID_BYTES],
                seq,
                answered_below,
                time_ms,
                reply: format!("reply {seq}").into_bytes(),
                kind: 0,
            }),
        }
    }

    fn id(client: u8, seq: u64) -> RequestId {
        RequestId {
            client: [client; CLIENT_ID_BYTES],
            seq,
            answered_below: 0,
        }
    }

    fn results(s: &MetaStore) -> usize {
        s.dump()
            .unwrap()
            .iter()
            .filter(|(cf, k, _)| cf == CF_REQUESTS && k[0] == b'r')
            .count()
    }

    #[test]
    fn a_request_applies_once_and_answers_the_same_after() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 100).unwrap();
        let first = s.apply(1, &tagged(create(10, "a"), 1, 1, 0, 1000)).unwrap();
        assert_eq!(first.replayed, None);
        let before = s.dump().unwrap();
        // The same request again, even with another inode id (a second attempt
        // whose handler ran before the first applied): nothing changes.
        let again = s.apply(2, &tagged(create(11, "a"), 1, 1, 0, 1001)).unwrap();
        assert_eq!(again.replayed, Some(Ok(b"reply 1".to_vec())));
        assert!(s.get_inode(11).unwrap().is_none());
        let after: Vec<_> = s
            .dump()
            .unwrap()
            .into_iter()
            .filter(|(cf, k, _)| !(cf == "meta" && k == b"applied_index"))
            .collect();
        let before: Vec<_> = before
            .into_iter()
            .filter(|(cf, k, _)| !(cf == "meta" && k == b"applied_index"))
            .collect();
        assert_eq!(before, after);
        assert_eq!(
            s.request_answer(&id(1, 1), 0).unwrap(),
            Some(Ok(b"reply 1".to_vec()))
        );
        // A conflict is recorded as the answer too, and answered again.
        let taken = s.apply(3, &tagged(create(12, "a"), 2, 1, 0, 1000));
        assert!(
            matches!(taken, Err(Error::AlreadyExists { .. })),
            "{taken:?}"
        );
        let again = s.apply(4, &tagged(create(13, "b"), 2, 1, 0, 1000)).unwrap();
        assert!(matches!(
            again.replayed,
            Some(Err(Error::AlreadyExists { .. }))
        ));
        assert!(s.get_inode(13).unwrap().is_none());
        assert_eq!(s.applied_index().unwrap(), 4);
    }

    #[test]
    fn answered_results_and_silent_clients_are_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 100).unwrap();
        let mut index = 0;
        let mut apply = |e: JournalEntry| {
            index += 1;
            s.apply(index, &e)
        };
        for seq in 1..=5 {
            apply(tagged(
                create(10 + seq, &format!("a{seq}")),
                1,
                seq,
                1,
                1000,
            ))
            .unwrap();
        }
        assert_eq!(results(&s), 5);
        // Client 1 has every answer below 5: four results go.
        apply(tagged(create(20, "b"), 1, 6, 5, 1000)).unwrap();
        assert_eq!(results(&s), 2);
        assert!(s.request_answer(&id(1, 4), 0).unwrap().is_none());
        assert!(s.request_answer(&id(1, 5), 0).unwrap().is_some());
        // Client 2 speaks long after: client 1, silent since, is forgotten whole.
        let late = 1000 + REQUEST_RETENTION_MS + 1;
        apply(tagged(create(21, "c"), 2, 1, 1, late)).unwrap();
        assert_eq!(results(&s), 1);
        assert!(s.request_answer(&id(1, 6), 0).unwrap().is_none());
        assert!(s.request_answer(&id(2, 1), 0).unwrap().is_some());
        let keys: Vec<_> = s
            .dump()
            .unwrap()
            .into_iter()
            .filter(|(cf, _, _)| cf == CF_REQUESTS)
            .map(|(_, k, _)| k[0])
            .collect();
        assert_eq!(
            keys,
            [b'c', b'r', b't', b'x'],
            "only client 2's records remain (and when clients were last looked for)"
        );
    }

    #[test]
    fn a_client_with_many_results_is_forgotten_over_several_applies() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 100).unwrap();
        let n = FORGET_PER_APPLY as u64 + 10;
        for seq in 1..=n {
            // Nothing answered: every result stays.
            s.apply(
                seq,
                &tagged(create(100 + seq, &format!("f{seq}")), 1, seq, 1, 0),
            )
            .unwrap();
        }
        assert_eq!(results(&s), n as usize);
        let late = REQUEST_RETENTION_MS + 1;
        s.apply(n + 1, &tagged(create(1, "x"), 2, 1, 1, late)).ok();
        assert_eq!(results(&s), 10 + 1);
        // Silent clients are looked for every EXPIRY_EVERY_MS, not at every entry.
        s.apply(n + 2, &tagged(create(2, "y"), 2, 2, 1, late + 1))
            .ok();
        assert_eq!(results(&s), 10 + 2);
        s.apply(
            n + 3,
            &tagged(create(3, "z"), 2, 3, 1, late + EXPIRY_EVERY_MS),
        )
        .ok();
        assert_eq!(results(&s), 3, "client 2's three results");
    }

    #[test]
    fn a_client_that_never_says_what_it_received_keeps_a_bounded_number() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 100).unwrap();
        let n = MAX_RESULTS_PER_CLIENT + 300;
        for seq in 1..=n {
            // answered_below stays 1, and the client keeps talking.
            s.apply(
                seq,
                &tagged(
                    Op::Reclaim(crate::entries::ReclaimEntry { root: 99, limit: 1 }),
                    1,
                    seq,
                    1,
                    seq as i64,
                ),
            )
            .unwrap();
        }
        assert_eq!(results(&s) as u64, MAX_RESULTS_PER_CLIENT + 1);
        assert!(s
            .request_answer(&id(1, n - MAX_RESULTS_PER_CLIENT - 1), 0)
            .unwrap()
            .is_none());
        assert!(s
            .request_answer(&id(1, n - MAX_RESULTS_PER_CLIENT), 0)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_request_id_reused_for_another_operation_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 100).unwrap();
        let mut e = tagged(create(10, "a"), 1, 1, 0, 0);
        e.request.as_mut().unwrap().kind = 2;
        s.apply(1, &e).unwrap();
        let mut other = tagged(create(11, "b"), 1, 1, 0, 0);
        other.request.as_mut().unwrap().kind = 3;
        let replay = s.apply(2, &other).unwrap().replayed.unwrap();
        assert!(
            matches!(replay, Err(Error::InvalidArgument { .. })),
            "{replay:?}"
        );
        assert!(s.get_inode(11).unwrap().is_none());
        assert!(matches!(
            s.request_answer(&id(1, 1), 3).unwrap(),
            Some(Err(Error::InvalidArgument { .. }))
        ));
        assert!(matches!(
            s.request_answer(&id(1, 1), 2).unwrap(),
            Some(Ok(_))
        ));
    }

    #[test]
    fn a_damaged_tag_is_refused_without_effect() {
        let d = tempfile::tempdir().unwrap();
        let s = MetaStore::open(d.path(), 100).unwrap();
        let mut e = tagged(create(10, "a"), 1, 3, 4, 0);
        assert!(matches!(s.apply(1, &e), Err(Error::InvalidArgument { .. })));
        e.request.as_mut().unwrap().answered_below = 1;
        e.request.as_mut().unwrap().client.pop();
        assert!(matches!(s.apply(2, &e), Err(Error::InvalidArgument { .. })));
        assert!(s.get_inode(10).unwrap().is_none());
        assert_eq!(s.applied_index().unwrap(), 2);
    }
}
