//! The Strata master: owns the namespace (inode tree), the mount table, block
//! metadata and the worker registry.
//!
//! Shape: gRPC handlers (`service`) → namespace logic (`namespace`), which validates
//! and proposes journal entries (`entries`) to the Raft journal (`journal`) → one
//! apply function (`store`) that writes RocksDB. Block locations are soft state in
//! `registry`.

pub mod entries;
pub mod journal;
pub mod lease;
pub mod namespace;
pub mod oplock;
pub mod registry;
pub mod service;
pub mod store;

use namespace::{Namespace, NamespaceDeps};
use registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use store::MetaStore;
use strata_common::config::SiteConfig;
use strata_common::proto::raft_peer_server::RaftPeerServer;
use strata_common::proto::{
    block_master_server::BlockMasterServer, file_system_master_server::FileSystemMasterServer,
    master_admin_server::MasterAdminServer, MAX_MESSAGE_BYTES,
};
use strata_common::{Error, Result};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

/// What a master needs to start.
pub struct MasterDeps {
    /// Its configuration.
    pub config: SiteConfig,
    /// Cancelled to stop it.
    pub shutdown: CancellationToken,
    /// Where mutations stop, between their under-store side effect and their
    /// journal entry, when armed (tests only; `None` in production).
    pub pause_after_under_store: Option<Arc<oplock::PausePoint>>,
}

/// A running master.
pub struct MasterHandle {
    /// The address its gRPC server listens on.
    pub addr: SocketAddr,
    journal: Arc<journal::RaftJournal>,
    server: tokio::task::JoinHandle<Result<()>>,
}

impl MasterHandle {
    /// The journal's state: role, term, indexes, fsyncs.
    pub fn journal_status(&self) -> journal::JournalStatus {
        self.journal.status()
    }

    /// Waits until the master has stopped (after its shutdown token is cancelled).
    /// Call it once: a second call after it returned panics.
    pub async fn wait(&mut self) -> Result<()> {
        (&mut self.server)
            .await
            .map_err(|e| Error::internal(format!("master task failed: {e}")))?
    }
}

/// Removes the inodes of deleted and unmounted folders, batch by batch, until
/// shutdown; wakes when a removal leaves work, and looks every 10 s regardless
/// (work left by an earlier run, or a batch that failed).
async fn reclaim_detached(
    ns: Arc<Namespace>,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    loop {
        let pause = if !leading.load(Ordering::Acquire) {
            // Only the leader reclaims (its entries reach every master).
            Some(std::time::Duration::from_secs(1))
        } else {
            match ns.reclaim_step().await {
                Ok(true) => {
                    // Other mutations share the journal: let them in between batches.
                    tokio::task::yield_now().await;
                    None
                }
                Ok(false) => Some(std::time::Duration::from_secs(10)),
                Err(e) => {
                    tracing::warn!("cannot reclaim a deleted folder's inodes: {e}");
                    Some(std::time::Duration::from_secs(1))
                }
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        if let Some(pause) = pause {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ns.reclaim_needed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Deletes the files whose writers stopped renewing their leases, until shutdown,
/// while this master leads: writers renew with the leader only, so another
/// master's leases say nothing (and its under-store side effects would remove
/// copies still being written).
async fn expire_leases(ns: Arc<Namespace>, leading: Arc<AtomicBool>, shutdown: CancellationToken) {
    let every = (ns.lease_duration() / 4).clamp(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(10),
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Expired leases are handled a bounded batch at a time, up to 64 batches a
        // pass (a failed removal is granted a new lease; a file moved meanwhile
        // waits for the next pass).
        for _ in 0..64 {
            if !leading.load(Ordering::Acquire) {
                break;
            }
            let batch = ns.expired_leases(1024);
            if batch.is_empty() {
                break;
            }
            for id in batch {
                if shutdown.is_cancelled() {
                    return;
                }
                if !leading.load(Ordering::Acquire) {
                    break;
                }
                if let Err(e) = ns.expire_lease(id).await {
                    tracing::warn!(
                        file_id = id.0,
                        "cannot remove a file whose lease expired: {e}"
                    );
                }
            }
            tokio::task::yield_now().await;
        }
    }
}

/// What the master builds over its journal before it serves: the namespace, the
/// root mount on a first start, and the listener.
async fn prepare(
    cfg: &SiteConfig,
    store: &Arc<MetaStore>,
    journal: &Arc<journal::RaftJournal>,
    pause_after_under_store: Option<Arc<oplock::PausePoint>>,
) -> Result<(
    Arc<Namespace>,
    Arc<Registry>,
    tokio::net::TcpListener,
    SocketAddr,
)> {
    let registry = Arc::new(Registry::default());
    let ns = Arc::new(Namespace::new(NamespaceDeps {
        store: store.clone(),
        journal: journal.clone(),
        registry: registry.clone(),
        default_block_size: cfg.client.block_size.0,
        block_size_range: cfg.master.min_block_size.0..=cfg.master.max_block_size.0,
        pause_after_under_store,
        write_lease: cfg.master.write_lease.0,
        sync_interval: cfg.master.ufs_sync_interval,
    })?);

    let bind = format!("{}:{}", cfg.master.bind_host, cfg.master.rpc_port);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|e| Error::unavailable(format!("master cannot listen on {bind}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("listener address: {e}")))?;
    Ok((ns, registry, listener, addr))
}

/// Answers client and worker calls only while this master leads.
#[derive(Clone)]
struct LeaderGate {
    leading: Arc<AtomicBool>,
    journal: Arc<journal::RaftJournal>,
    me: u64,
    /// Client addresses of the group's masters.
    addresses: std::collections::BTreeMap<u64, String>,
}

impl tonic::service::Interceptor for LeaderGate {
    fn call(
        &mut self,
        req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if self.leading.load(Ordering::Acquire) {
            return Ok(req);
        }
        let leader = self.journal.status().leader_id;
        let leader = if leader == self.me {
            // Elected, not yet serving (applying earlier terms' entries).
            String::new()
        } else {
            self.addresses.get(&leader).cloned().unwrap_or_default()
        };
        Err(Error::NotLeader { leader }.into())
    }
}

/// Serves the Raft port (`master.raft_port`) for the other masters.
async fn serve_raft(
    cfg: &SiteConfig,
    journal: Arc<journal::RaftJournal>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let bind = format!("{}:{}", cfg.master.bind_host, cfg.master.raft_port);
    let listener = tokio::net::TcpListener::bind(&bind).await.map_err(|e| {
        Error::unavailable(format!(
            "master cannot listen on {bind} (master.raft_port): {e}"
        ))
    })?;
    tracing::info!(addr = %bind, "master's journal reachable by its peers");
    let service = RaftPeerServer::new(journal::transport::RaftPeerService::new(journal))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    Ok(tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                strata_common::proto::incoming(listener),
                stop.cancelled_owned(),
            )
            .await
        {
            tracing::error!("raft port: {e}");
        }
    }))
}

/// Opens the gate to clients and workers each time this master leads (once it
/// applied every entry of earlier terms and rebuilt what it derives from them),
/// and closes it when it stops leading.
async fn follow_leadership(
    ns: Arc<Namespace>,
    journal: Arc<journal::RaftJournal>,
    leading: Arc<AtomicBool>,
    root_ufs: String,
    stop: CancellationToken,
) {
    loop {
        if !leading.load(Ordering::Acquire) {
            tokio::select! {
                _ = stop.cancelled() => return,
                ready = journal.ready() => if ready.is_err() { return },
            }
            let term = journal.status().term;
            let taken = match ns.take_leadership() {
                Ok(()) => ns.journal_cluster_id().await,
                Err(e) => Err(e),
            };
            if let Err(e) = taken {
                tracing::error!("cannot take the lead: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            if let Err(e) = ns.ensure_root_mount(&root_ufs).await {
                tracing::warn!("root mount {root_ufs}: {e}");
            }
            if !journal.is_serving() || journal.status().term != term {
                // Lost (and maybe regained) meanwhile: what was rebuilt may be
                // older than another leader's entries; rebuild again.
                continue;
            }
            leading.store(true, Ordering::Release);
            tracing::info!(term, "leading the journal: serving clients and workers");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = journal.not_serving() => {}
        }
        leading.store(false, Ordering::Release);
        tracing::info!("no longer leading the journal: sending clients to the leader");
    }
}

/// Opens the metastore, mounts the root under-store on first start, and serves.
pub async fn start(deps: MasterDeps) -> Result<MasterHandle> {
    let cfg = deps.config;
    let dir = cfg.metastore_dir();
    let store = Arc::new(MetaStore::open(&dir, cfg.master.inode_cache_entries)?);
    let members = cfg
        .raft_members()
        .map_err(|e| Error::invalid_argument("master.peers", e.to_string()))?;
    let me = cfg.master.id;
    let journal = Arc::new(journal::RaftJournal::start(
        &cfg.journal_dir(),
        store.clone(),
        journal::RaftOptions {
            id: me,
            voters: members.keys().copied().collect(),
            peers: members
                .iter()
                .filter(|(id, _)| **id != me)
                .map(|(id, a)| (*id, a.clone()))
                .collect(),
            compact_after: cfg.master.snapshot_interval_entries,
            keep_entries: cfg.master.log_retained_entries,
            ..journal::RaftOptions::single()
        },
    )?);
    let alone = members.len() == 1;
    let raft_stop = CancellationToken::new();
    let prepared = async {
        // Masters reach this one's journal from the start: it may have to vote
        // before it can lead.
        let raft_server = if alone {
            None
        } else {
            Some(serve_raft(&cfg, journal.clone(), raft_stop.clone()).await?)
        };
        if alone {
            // Entries committed before a crash are applied before anything reads
            // the store; a lone master leads as soon as they are.
            journal.ready().await?;
        }
        let prepared = prepare(&cfg, &store, &journal, deps.pause_after_under_store).await?;
        if alone {
            prepared.0.journal_cluster_id().await?;
            prepared.0.ensure_root_mount(&cfg.master.root_ufs).await?;
        }
        Ok::<_, Error>((prepared, raft_server))
    }
    .await;
    let ((ns, registry, listener, addr), raft_server) = match prepared {
        Ok(p) => p,
        Err(e) => {
            // The thread lets go of the log and the metastore before the error
            // returns, so that a new start can open them.
            raft_stop.cancel();
            journal.stop().await;
            return Err(e);
        }
    };
    tracing::info!(
        %addr,
        metastore = %dir.display(),
        journal = %cfg.journal_dir().display(),
        "master listening"
    );

    // Clients and workers are served while this master leads (a lone master from
    // now on); otherwise they are told where the leader is.
    let leading = Arc::new(AtomicBool::new(alone));
    let gate = LeaderGate {
        leading: leading.clone(),
        journal: journal.clone(),
        me,
        addresses: members
            .keys()
            .filter_map(|id| Some((*id, cfg.master_rpc_address(*id)?)))
            .collect(),
    };
    let mutations = tokio_util::task::TaskTracker::new();
    let fs = InterceptedService::new(
        FileSystemMasterServer::new(service::FileSystemService {
            ns: ns.clone(),
            registry: registry.clone(),
            mutations: mutations.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
        gate.clone(),
    );
    let bm = InterceptedService::new(
        BlockMasterServer::new(service::BlockService {
            ns: ns.clone(),
            registry: registry.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES),
        gate,
    );

    let admin = MasterAdminServer::new(service::AdminService {
        journal: journal.clone(),
    });

    let shutdown = deps.shutdown;
    // Stops the background tasks, on shutdown or when the journal stops by itself.
    let background_stop = shutdown.child_token();
    let timeout = cfg.master.worker_timeout.0;
    let expiry_stop = background_stop.clone();
    let worker_expiry = tokio::spawn(async move {
        let mut tick = tokio::time::interval(timeout / 4);
        loop {
            tokio::select! {
                _ = expiry_stop.cancelled() => break,
                _ = tick.tick() => {
                    for w in registry.expire(timeout) {
                        tracing::warn!(worker = %w.id, address = %w.rpc_address, "worker lost: no heartbeat");
                    }
                }
            }
        }
    });

    let background = [
        worker_expiry,
        tokio::spawn(expire_leases(
            ns.clone(),
            leading.clone(),
            background_stop.clone(),
        )),
        tokio::spawn(reclaim_detached(
            ns.clone(),
            leading.clone(),
            background_stop.clone(),
        )),
        tokio::spawn(follow_leadership(
            ns,
            journal.clone(),
            leading,
            cfg.master.root_ufs.clone(),
            background_stop.clone(),
        )),
    ];

    let handle_journal = journal.clone();
    let server = tokio::spawn(async move {
        // A journal that stops on its own (a storage failure) stops the master too:
        // it recovers from its log when restarted.
        let journal_stopped = {
            let journal = journal.clone();
            async move { journal.stopped().await }
        };
        let stop = async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = journal_stopped => {}
            }
        };
        let served = tonic::transport::Server::builder()
            .add_service(fs)
            .add_service(bm)
            .add_service(admin)
            .serve_with_incoming_shutdown(strata_common::proto::incoming(listener), stop)
            .await
            .map_err(|e| Error::internal(format!("master server: {e}")));
        // Mutations whose callers went away still finish, entry included, before
        // the journal stops (a failed journal answers them at once).
        mutations.close();
        mutations.wait().await;
        let failure = journal.failure();
        background_stop.cancel();
        journal.stop().await;
        raft_stop.cancel();
        if let Some(raft) = raft_server {
            let _ = raft.await;
        }
        for task in background {
            let _ = task.await;
        }
        // The store (RocksDB) closes here: the handlers, the background tasks and
        // the journal's thread have let go of it.
        drop(store);
        served?;
        if let Some(e) = failure {
            return Err(e);
        }
        tracing::info!("master stopped");
        Ok(())
    });
    Ok(MasterHandle {
        addr,
        journal: handle_journal,
        server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_common::config::LoadOptions;

    fn config(dir: &std::path::Path, port: u16) -> SiteConfig {
        SiteConfig::load(&LoadOptions {
            file: None,
            use_env: false,
            overrides: vec![
                (
                    "data_dir".into(),
                    format!("{:?}", dir.display().to_string()),
                ),
                ("master.rpc_port".into(), port.to_string()),
                ("master.root_ufs".into(), "\"\"".into()),
            ],
        })
        .unwrap()
    }

    fn deps(config: SiteConfig) -> MasterDeps {
        MasterDeps {
            config,
            shutdown: CancellationToken::new(),
            pause_after_under_store: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_master_that_cannot_start_lets_go_of_its_stores() {
        let dir = tempfile::tempdir().unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        for _ in 0..5 {
            let err = start(deps(config(dir.path(), port))).await.err().unwrap();
            assert!(err.to_string().contains("cannot listen"), "{err}");
            // At once: the metastore and the log are closed, not held by a thread
            // still winding down.
            let mut master = start(deps(config(dir.path(), 0))).await.unwrap();
            master.journal.inject_failure(Error::internal("stop"));
            let _ = master.wait().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_master_whose_journal_fails_stops_serving_with_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let mut master = start(deps(config(dir.path(), 0))).await.unwrap();
        master
            .journal
            .inject_failure(Error::internal("metastore: disk on fire"));
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), master.wait())
            .await
            .expect("the master stops on its own");
        let cause = ended.expect_err("a failed journal is an error exit");
        assert!(cause.to_string().contains("disk on fire"), "{cause}");
        assert_eq!(master.journal_status().role, journal::Role::Failed);
        let refused = tokio::net::TcpStream::connect(master.addr).await;
        assert!(refused.is_err(), "the port is closed");
    }
}
