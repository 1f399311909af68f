//! A Raft group of journals (no namespace on top): members in this process, each
//! with its own metastore and log in a folder and its own loopback gRPC port,
//! talking to each other through the real transport. Members stop and start again
//! on the same folder and port, as a restarted master would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_common::ids::FileId;
use strata_common::proto::raft_peer_server::RaftPeerServer;
use strata_master::entries::{CreateEntry, InodeRecord, JournalEntry, Op};
use strata_master::journal::transport::RaftPeerService;
use strata_master::journal::{JournalStatus, RaftJournal, RaftOptions, Role};
use strata_master::store::MetaStore;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// An entry that creates file `/f<id>` with inode `id` under the root.
pub fn create_entry(id: u64) -> JournalEntry {
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

/// One member of a [`Group`].
pub struct Member {
    /// Its Raft id.
    pub id: u64,
    /// Its state machine.
    pub store: Arc<MetaStore>,
    /// Its journal.
    pub journal: Arc<RaftJournal>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Member {
    /// Names under the root of its state machine.
    pub fn names(&self) -> Vec<String> {
        self.store
            .list_children_page(FileId::ROOT.0, None, 1_000_000)
            .expect("listing")
            .0
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    async fn stop(self) {
        self.journal.stop().await;
        self.stop.cancel();
        let _ = self.server.await;
        drop(self.journal);
        assert_eq!(Arc::strong_count(&self.store), 1, "the store is let go");
    }
}

/// A group of `n` journals on loopback.
pub struct Group {
    /// The running members (a stopped one is not listed).
    pub members: Vec<Member>,
    addrs: BTreeMap<u64, SocketAddr>,
    tick: Duration,
    root: TempDir,
    /// Log compaction of members started from now on: (compact after, keep).
    pub compaction: (u64, u64),
}

impl Group {
    /// Starts `n` members with Raft ticks of `tick`.
    pub async fn start(n: u64, tick: Duration) -> Group {
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            addrs.insert(id, l.local_addr().expect("address"));
        }
        let single = RaftOptions::single();
        let mut group = Group {
            members: Vec::new(),
            addrs,
            tick,
            root: tempfile::tempdir().expect("temp dir"),
            compaction: (single.compact_after, single.keep_entries),
        };
        for id in 1..=n {
            group.start_member(id).await;
        }
        group
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("m{id}"))
    }

    /// The metastore folder of member `id`.
    pub fn meta_dir(&self, id: u64) -> PathBuf {
        self.dir(id).join("meta")
    }

    /// The journal folder of member `id`.
    pub fn journal_dir(&self, id: u64) -> PathBuf {
        self.dir(id).join("journal")
    }

    /// Starts member `id` (again) on its folder and port.
    pub async fn start_member(&mut self, id: u64) {
        let listener = tokio::net::TcpListener::bind(self.addrs[&id])
            .await
            .expect("the member's port");
        let dir = self.dir(id);
        let store = Arc::new(MetaStore::open(&dir.join("meta"), 1000).expect("metastore"));
        let opts = RaftOptions {
            id,
            voters: self.addrs.keys().copied().collect(),
            peers: self
                .addrs
                .iter()
                .filter(|(k, _)| **k != id)
                .map(|(k, a)| (*k, a.to_string()))
                .collect(),
            tick: self.tick,
            compact_after: self.compaction.0,
            keep_entries: self.compaction.1,
            ..RaftOptions::single()
        };
        let journal = Arc::new(
            RaftJournal::start(&self.journal_dir(id), store.clone(), opts).expect("journal"),
        );
        let stop = CancellationToken::new();
        let service = RaftPeerServer::new(RaftPeerService::new(journal.clone()));
        let shutdown = stop.clone();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    strata_common::proto::incoming(listener),
                    shutdown.cancelled_owned(),
                )
                .await;
        });
        self.members.push(Member {
            id,
            store,
            journal,
            stop,
            server,
        });
    }

    /// Erases the data of stopped member `id` (metastore, log, snapshots), as a
    /// format would: it starts again empty and catches up from the others.
    pub fn wipe_member(&self, id: u64) {
        assert!(self.members.iter().all(|m| m.id != id), "member {id} runs");
        std::fs::remove_dir_all(self.dir(id)).expect("wipe");
    }

    /// Stops member `id`; returns whether it was running.
    pub async fn stop_member(&mut self, id: u64) -> bool {
        match self.members.iter().position(|m| m.id == id) {
            Some(i) => {
                self.members.remove(i).stop().await;
                true
            }
            None => false,
        }
    }

    /// The running member that leads and serves, once every running member
    /// agrees on it.
    pub async fn leader(&self) -> &Member {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let statuses = self.statuses();
            if let Some(i) = statuses.iter().position(|s| s.role == Role::Leader) {
                let id = self.members[i].id;
                if statuses.iter().all(|s| s.leader_id == id) {
                    tokio::time::timeout(Duration::from_secs(10), self.members[i].journal.ready())
                        .await
                        .expect("the leader serves")
                        .expect("the leader's journal runs");
                    return &self.members[i];
                }
            }
            assert!(Instant::now() < deadline, "no leader: {statuses:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The running members' journal states.
    pub fn statuses(&self) -> Vec<JournalStatus> {
        self.members.iter().map(|m| m.journal.status()).collect()
    }

    /// Waits until every running member applied what the most advanced one has.
    pub async fn caught_up(&self) {
        let index = self.statuses().iter().map(|s| s.applied).max().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.statuses().iter().any(|s| s.applied < index) {
            assert!(
                Instant::now() < deadline,
                "not caught up to {index}: {:?}",
                self.statuses()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every member.
    pub async fn stop(mut self) {
        for m in self.members.drain(..) {
            m.stop().await;
        }
    }
}
