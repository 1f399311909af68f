//! The Strata worker: caches blocks in its storage tier (MEM), reads through to the
//! under-store on a miss, takes client writes, and reports its blocks to the master.
//!
//! Shape: `store` (block files, quota, LRU) ← `service` (gRPC data service) and the
//! heartbeat loop in this module, which keeps the master's view of our blocks current.

pub mod metrics;
pub mod service;
pub mod store;

use metrics::WorkerMetrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use store::BlockStore;
use strata_common::config::SiteConfig;
use strata_common::ids::BlockId;
use strata_common::masters::MasterSet;
use strata_common::proto::{
    self, block_master_client::BlockMasterClient,
    file_system_master_client::FileSystemMasterClient, worker_service_server::WorkerServiceServer,
    MAX_MESSAGE_BYTES,
};
use strata_common::types::UfsFingerprint;
use strata_common::{Error, Result};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The worker's connection to the master, and the id the master gave it.
pub struct MasterLink {
    masters: MasterSet,
    worker_id: AtomicU64,
}

/// How long a call to the masters follows their leader (an election included).
const MASTER_CALL_BUDGET: Duration = Duration::from_secs(10);

impl MasterLink {
    fn new(addresses: &[String]) -> Result<Self> {
        let masters = MasterSet::new(addresses, |addr| {
            Ok(Channel::from_shared(format!("http://{addr}"))
                .map_err(|e| Error::invalid_argument("master_addresses", e.to_string()))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .connect_lazy())
        })?;
        Ok(MasterLink {
            masters,
            worker_id: AtomicU64::new(0),
        })
    }

    /// Runs `call` on the leading master; all the worker's calls may be repeated
    /// (registration replaces, heartbeats and commits are idempotent).
    async fn on_master<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(BlockMasterClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        self.masters
            .call(true, MASTER_CALL_BUDGET, |ch| {
                call(BlockMasterClient::new(ch))
            })
            .await
    }

    /// The under-stores mounted in the namespace now: URI and options.
    pub async fn mounted_stores(
        &self,
    ) -> Result<Vec<(String, strata_common::types::MountOptions)>> {
        let table = self
            .masters
            .call(true, MASTER_CALL_BUDGET, |ch| async move {
                FileSystemMasterClient::new(ch)
                    .get_mount_table(proto::GetMountTableRequest {})
                    .await
            })
            .await?
            .into_inner();
        Ok(table
            .mounts
            .into_iter()
            .map(|m| (m.uri, m.options))
            .collect())
    }

    /// Tells the master a block is now here, and how it was made, which the master
    /// checks against the file's record. Before registration this does nothing
    /// (registration reports the block).
    pub async fn commit_block(
        &self,
        block: BlockId,
        length: u64,
        origin: Origin<'_>,
    ) -> Result<()> {
        let worker_id = self.worker_id.load(Ordering::Acquire);
        if worker_id == 0 {
            return Ok(());
        }
        let req = proto::CommitBlockRequest {
            worker_id,
            block_id: block.0,
            length,
            ufs_fingerprint: match origin {
                Origin::ReadThrough(f) => Some(f.clone().into()),
                Origin::Written { .. } => None,
            },
            block_size: match origin {
                Origin::ReadThrough(_) => 0,
                Origin::Written { block_size } => block_size,
            },
        };
        self.on_master(|mut m| {
            let req = req.clone();
            async move { m.commit_block(req).await }
        })
        .await?;
        Ok(())
    }
}

/// How a block came to a worker.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// Read through from this under-store copy of the file.
    ReadThrough(&'a UfsFingerprint),
    /// Cut from a client's write at this block size.
    Written {
        /// The block size the write used.
        block_size: u64,
    },
}

/// What a worker needs to start.
pub struct WorkerDeps {
    /// Its configuration.
    pub config: SiteConfig,
    /// Cancelled to stop it.
    pub shutdown: CancellationToken,
}

/// A running worker.
pub struct WorkerHandle {
    /// The address its gRPC server listens on.
    pub addr: SocketAddr,
    /// Its counters.
    pub metrics: Arc<WorkerMetrics>,
    /// The folder of its MEM tier.
    pub mem_dir: PathBuf,
    server: tokio::task::JoinHandle<Result<()>>,
}

impl WorkerHandle {
    /// Waits until the worker has stopped.
    /// Call it once: a second call after it returned panics.
    pub async fn wait(&mut self) -> Result<()> {
        (&mut self.server)
            .await
            .map_err(|e| Error::internal(format!("worker task failed: {e}")))?
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Picks the MEM tier's folder: under `worker.mem_dir` (tmpfs) when it exists and
/// has room for the quota, else `<data_dir>/worker/mem`, saying why.
pub fn mem_tier_dir(cfg: &SiteConfig) -> Result<PathBuf> {
    let data_dir = &cfg.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Error::internal(format!(
            "cannot create data dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.clone());
    // One folder per data dir, stable across restarts so cached blocks survive them.
    let tag = canonical
        .to_string_lossy()
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
    let shm = &cfg.worker.mem_dir;
    let quota = cfg.worker.mem_quota.0;
    let reason = match strata_ufs::free_bytes(shm) {
        None => format!("{} does not exist", shm.display()),
        Some(free) => {
            let dir = shm.join(format!("strata-worker-{tag:016x}"));
            let already = std::fs::read_dir(&dir)
                .map(|d| {
                    d.filter_map(|e| e.ok()?.metadata().ok())
                        .map(|m| m.len())
                        .sum::<u64>()
                })
                .unwrap_or(0);
            if free + already >= quota {
                return Ok(dir);
            }
            format!(
                "{} has {} free, less than the {} quota",
                shm.display(),
                strata_common::units::format_bytes(free + already),
                strata_common::units::format_bytes(quota)
            )
        }
    };
    let fallback = canonical.join("worker").join("mem");
    tracing::warn!("MEM tier falls back to {}: {reason}", fallback.display());
    Ok(fallback)
}

/// Opens the block store, starts serving, and registers with the master.
pub async fn start(deps: WorkerDeps) -> Result<WorkerHandle> {
    let cfg = deps.config;
    let metrics = Arc::new(WorkerMetrics::default());
    let mem_dir = mem_tier_dir(&cfg)?;
    let store = BlockStore::open(&mem_dir, cfg.worker.mem_quota.0, metrics.clone())?;
    let master = Arc::new(MasterLink::new(&cfg.master_addresses)?);

    let bind = format!("{}:{}", cfg.worker.bind_host, cfg.worker.rpc_port);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|e| Error::unavailable(format!("worker cannot listen on {bind}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("listener address: {e}")))?;
    let host = if cfg.worker.hostname.is_empty() {
        hostname()
    } else {
        cfg.worker.hostname.clone()
    };
    let advertised = if addr.ip().is_unspecified() {
        format!("{host}:{}", addr.port())
    } else {
        addr.to_string()
    };
    tracing::info!(%addr, tier = %mem_dir.display(), quota = cfg.worker.mem_quota.0, "worker listening");

    let svc = Arc::new(service::DataService {
        store: store.clone(),
        ufs: Arc::new(strata_ufs::StoreCache::default()),
        mounted: tokio::sync::Mutex::new(service::MountedUris::default()),
        metrics: metrics.clone(),
        master: master.clone(),
    });
    let shutdown = deps.shutdown;
    tokio::spawn(heartbeat_loop(
        HeartbeatDeps {
            master,
            store,
            host,
            advertised,
            interval: cfg.worker.heartbeat_interval.0,
        },
        shutdown.clone(),
    ));
    let grpc = WorkerServiceServer::new(service::WorkerGrpc(svc))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .initial_stream_window_size(proto::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(proto::CONNECTION_WINDOW_BYTES)
            .add_service(grpc)
            .serve_with_incoming_shutdown(
                strata_common::proto::incoming(listener),
                shutdown.cancelled_owned(),
            )
            .await
            .map_err(|e| Error::internal(format!("worker server: {e}")))?;
        tracing::info!("worker stopped");
        Ok(())
    });
    Ok(WorkerHandle {
        addr,
        metrics,
        mem_dir,
        server,
    })
}

struct HeartbeatDeps {
    master: Arc<MasterLink>,
    store: Arc<BlockStore>,
    host: String,
    advertised: String,
    interval: Duration,
}

fn block_reports(blocks: Vec<(BlockId, u64)>) -> Vec<proto::BlockReport> {
    blocks
        .into_iter()
        .map(|(b, length)| proto::BlockReport {
            block_id: b.0,
            length,
        })
        .collect()
}

/// Registers with a full block report. If the master belongs to another cluster
/// than the storage (it was formatted since, or the storage is new), the storage is
/// emptied and adopted, and the worker registers again with nothing.
async fn register(d: &HeartbeatDeps) -> Result<u64> {
    // Twice at most: once as the storage is, once more after adopting the cluster.
    for _ in 0..2 {
        let (blocks, used) = d.store.full_report();
        let storage_cluster = d.store.cluster_id().unwrap_or_default();
        let req = proto::RegisterWorkerRequest {
            host: d.host.clone(),
            rpc_address: d.advertised.clone(),
            capacity_bytes: d.store.capacity(),
            used_bytes: used,
            blocks: block_reports(blocks),
            cluster_id: storage_cluster.clone(),
        };
        let resp = d
            .master
            .on_master(|mut m| {
                let req = req.clone();
                async move { m.register_worker(req).await }
            })
            .await?
            .into_inner();
        if resp.cluster_id.is_empty() {
            return Err(Error::internal(
                "master answered registration without a cluster id",
            ));
        }
        if resp.cluster_id != storage_cluster || resp.worker_id == 0 {
            let keep = resp.keep_unclaimed_blocks && storage_cluster.is_empty();
            let store = d.store.clone();
            let cluster = resp.cluster_id.clone();
            // Emptying a large tier takes a while: off the async threads.
            let dropped = tokio::task::spawn_blocking(move || store.adopt_cluster(&cluster, keep))
                .await
                .map_err(|e| Error::internal(format!("adopting the cluster: {e}")))??;
            if storage_cluster.is_empty() {
                tracing::info!(
                    cluster = %resp.cluster_id,
                    kept = keep,
                    dropped,
                    "storage adopted by the cluster"
                );
            } else {
                tracing::warn!(
                    cluster = %resp.cluster_id,
                    previous = %storage_cluster,
                    dropped,
                    "storage belonged to another cluster: emptied and adopted"
                );
            }
            continue;
        }
        d.master.worker_id.store(resp.worker_id, Ordering::Release);
        return Ok(resp.worker_id);
    }
    Err(Error::unavailable(
        "the master's cluster id changed during registration",
    ))
}

async fn heartbeat_once(d: &HeartbeatDeps) -> Result<()> {
    let worker_id = d.master.worker_id.load(Ordering::Acquire);
    if worker_id == 0 {
        let id = register(d).await?;
        tracing::info!(worker = id, "registered with master");
        return Ok(());
    }
    let (added, removed) = d.store.take_deltas();
    let req = proto::WorkerHeartbeatRequest {
        worker_id,
        used_bytes: d.store.used(),
        added: block_reports(added.clone()),
        removed_blocks: removed.iter().map(|b| b.0).collect(),
    };
    let sent = d
        .master
        .on_master(|mut m| {
            let req = req.clone();
            async move { m.worker_heartbeat(req).await }
        })
        .await;
    let resp = match sent {
        Ok(r) => r.into_inner(),
        Err(e) => {
            d.store.restore_deltas(added, removed);
            return Err(e);
        }
    };
    if resp.register_again {
        tracing::info!("master does not know this worker; registering again");
        d.master.worker_id.store(0, Ordering::Release);
        register(d).await?;
        return Ok(());
    }
    for b in resp.remove_blocks {
        d.store.remove(BlockId(b));
    }
    Ok(())
}

async fn heartbeat_loop(d: HeartbeatDeps, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(d.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match heartbeat_once(&d).await {
            Ok(()) => {
                if failing {
                    tracing::info!("master reachable again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot reach the master: {e}");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(data: &std::path::Path, mem_dir: &std::path::Path, quota: u64) -> SiteConfig {
        let mut c = SiteConfig {
            data_dir: data.to_path_buf(),
            ..Default::default()
        };
        c.worker.mem_dir = mem_dir.to_path_buf();
        c.worker.mem_quota = strata_common::units::ByteSize(quota);
        c
    }

    #[test]
    fn mem_tier_uses_tmpfs_when_it_fits_and_falls_back_otherwise() {
        let data = tempfile::tempdir().unwrap();
        let shm = tempfile::tempdir().unwrap();
        let fallback = std::fs::canonicalize(data.path())
            .unwrap()
            .join("worker")
            .join("mem");

        let dir = mem_tier_dir(&cfg(data.path(), shm.path(), 1 << 20)).unwrap();
        assert!(dir.starts_with(shm.path()), "{}", dir.display());
        // Stable for the same data dir, so cached blocks survive a restart.
        assert_eq!(
            dir,
            mem_tier_dir(&cfg(data.path(), shm.path(), 1 << 20)).unwrap()
        );

        let missing = shm.path().join("not-there");
        assert_eq!(
            mem_tier_dir(&cfg(data.path(), &missing, 1 << 20)).unwrap(),
            fallback
        );
        // A quota larger than any disk here: the folder is too small.
        assert_eq!(
            mem_tier_dir(&cfg(data.path(), shm.path(), 1 << 60)).unwrap(),
            fallback
        );
    }
}
