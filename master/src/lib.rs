//! The Strata master: owns the namespace (inode tree), the mount table, block
//! metadata and the worker registry.
//!
//! Shape: gRPC handlers (`service`) → namespace logic (`namespace`), which validates
//! and proposes journal entries (`journal`) → one apply function (`store`) that writes
//! RocksDB. Block locations are soft state in `registry`.

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
use std::sync::Arc;
use store::MetaStore;
use strata_common::config::SiteConfig;
use strata_common::proto::{
    block_master_server::BlockMasterServer, file_system_master_server::FileSystemMasterServer,
    MAX_MESSAGE_BYTES,
};
use strata_common::{Error, Result};
use tokio_util::sync::CancellationToken;

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
    server: tokio::task::JoinHandle<Result<()>>,
}

impl MasterHandle {
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
async fn reclaim_detached(ns: Arc<Namespace>, shutdown: CancellationToken) {
    loop {
        let pause = match ns.reclaim_step().await {
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

/// Deletes the files whose writers stopped renewing their leases, until shutdown.
async fn expire_leases(ns: Arc<Namespace>, shutdown: CancellationToken) {
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
            let batch = ns.expired_leases(1024);
            if batch.is_empty() {
                break;
            }
            for id in batch {
                if shutdown.is_cancelled() {
                    return;
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

/// Opens the metastore, mounts the root under-store on first start, and serves.
pub async fn start(deps: MasterDeps) -> Result<MasterHandle> {
    let cfg = deps.config;
    let dir = cfg.metastore_dir();
    let store = Arc::new(MetaStore::open(&dir, cfg.master.inode_cache_entries)?);
    let journal = Arc::new(journal::LocalJournal::new(store.clone())?);
    let registry = Arc::new(Registry::default());
    let ns = Arc::new(Namespace::new(NamespaceDeps {
        store: store.clone(),
        journal,
        registry: registry.clone(),
        default_block_size: cfg.client.block_size.0,
        block_size_range: cfg.master.min_block_size.0..=cfg.master.max_block_size.0,
        pause_after_under_store: deps.pause_after_under_store,
        write_lease: cfg.master.write_lease.0,
    })?);
    ns.ensure_root_mount(&cfg.master.root_ufs).await?;

    let bind = format!("{}:{}", cfg.master.bind_host, cfg.master.rpc_port);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|e| Error::unavailable(format!("master cannot listen on {bind}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("listener address: {e}")))?;
    tracing::info!(%addr, metastore = %dir.display(), "master listening");

    let fs = FileSystemMasterServer::new(service::FileSystemService {
        ns: ns.clone(),
        registry: registry.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let bm = BlockMasterServer::new(service::BlockService {
        ns: ns.clone(),
        registry: registry.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES);

    let shutdown = deps.shutdown;
    let timeout = cfg.master.worker_timeout.0;
    let expiry_stop = shutdown.clone();
    tokio::spawn(async move {
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

    tokio::spawn(expire_leases(ns.clone(), shutdown.clone()));
    tokio::spawn(reclaim_detached(ns, shutdown.clone()));

    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(fs)
            .add_service(bm)
            .serve_with_incoming_shutdown(
                strata_common::proto::incoming(listener),
                shutdown.cancelled_owned(),
            )
            .await
            .map_err(|e| Error::internal(format!("master server: {e}")))?;
        // The store (RocksDB) closes when the last handler drops it.
        drop(store);
        tracing::info!("master stopped");
        Ok(())
    });
    Ok(MasterHandle { addr, server })
}
