//! Request ids for mutations: a client instance has a random id, and numbers its
//! mutations. A retry keeps the number, so the master answers it with the first
//! attempt's result (a create whose answer was lost in a failover returns its
//! file, a delete returns success) instead of running it again. Each request
//! also tells the master below which number every answer has arrived, so it can
//! forget those results.

use std::collections::BTreeSet;
use std::sync::Mutex;
use strata_common::proto;
use strata_common::types::{RequestId, CLIENT_ID_BYTES};
use strata_common::Result;

/// This client's mutations in flight.
pub(crate) struct Requests {
    client: [u8; CLIENT_ID_BYTES],
    state: Mutex<State>,
}

struct State {
    next: u64,
    open: BTreeSet<u64>,
}

/// One mutation in flight; its number is released when it is dropped (answered,
/// failed or given up).
pub(crate) struct Ticket<'a> {
    requests: &'a Requests,
    id: RequestId,
}

impl Requests {
    pub(crate) fn new() -> Result<Self> {
        Ok(Requests {
            client: strata_common::ids::random_bytes()?,
            state: Mutex::new(State {
                next: 1,
                open: BTreeSet::new(),
            }),
        })
    }

    /// Numbers a new mutation.
    pub(crate) fn start(&self) -> Ticket<'_> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let seq = s.next;
        s.next += 1;
        s.open.insert(seq);
        let answered_below = s.open.first().copied().unwrap_or(seq);
        Ticket {
            requests: self,
            id: RequestId {
                client: self.client,
                seq,
                answered_below,
            },
        }
    }
}

impl Ticket<'_> {
    /// The id every attempt of this mutation sends.
    pub(crate) fn proto(&self) -> proto::RequestId {
        self.id.into()
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut s = self
            .requests
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s.open.remove(&self.id.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_below_stops_at_the_oldest_mutation_in_flight() {
        let r = Requests::new().unwrap();
        let a = r.start();
        let b = r.start();
        assert_eq!((a.id.seq, a.id.answered_below), (1, 1));
        assert_eq!((b.id.seq, b.id.answered_below), (2, 1));
        drop(a);
        let c = r.start();
        assert_eq!((c.id.seq, c.id.answered_below), (3, 2));
        drop(b);
        drop(c);
        let d = r.start();
        assert_eq!((d.id.seq, d.id.answered_below), (4, 4));
        assert_eq!(d.proto().client.len(), CLIENT_ID_BYTES);
        assert_ne!(Requests::new().unwrap().client, r.client);
    }
}
