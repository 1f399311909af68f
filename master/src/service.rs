//! gRPC edge of the master: converts requests into validated domain types, calls the
//! namespace or the registry, and converts the answers back. No logic lives here.

use crate::namespace::Namespace;
use crate::registry::{CommitOutcome, Registration, Registry};
use std::sync::Arc;
use strata_common::ids::{BlockId, FileId, WorkerId};
use strata_common::proto::{
    self, block_master_server::BlockMaster, file_system_master_server::FileSystemMaster,
    master_admin_server::MasterAdmin,
};
use strata_common::types::{
    parse_path, request_id, CreateFile, SyncInterval, UfsFingerprint, UfsLocation,
};
use strata_common::Error;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

type Answer<T> = Result<Response<T>, Status>;

/// The client-facing namespace service.
pub struct FileSystemService {
    pub(crate) ns: Arc<Namespace>,
    pub(crate) registry: Arc<Registry>,
    /// Mutations running on their own (see [`detached`]).
    pub(crate) mutations: TaskTracker,
}

/// The worker-facing block service.
pub struct BlockService {
    pub(crate) ns: Arc<Namespace>,
    pub(crate) registry: Arc<Registry>,
}

/// The administration service (`strata fsadmin`).
pub struct AdminService {
    pub(crate) journal: Arc<crate::journal::RaftJournal>,
}

#[tonic::async_trait]
impl MasterAdmin for AdminService {
    async fn get_journal_report(
        &self,
        _req: Request<proto::GetJournalReportRequest>,
    ) -> Answer<proto::GetJournalReportResponse> {
        let report = strata_common::types::JournalReport::from(self.journal.status());
        ok(report.into())
    }

    async fn checkpoint(
        &self,
        _req: Request<proto::CheckpointRequest>,
    ) -> Answer<proto::CheckpointResponse> {
        let (index, term) = self.journal.checkpoint().await?;
        ok(proto::CheckpointResponse { index, term })
    }
}

fn ok<T>(v: T) -> Answer<T> {
    Ok(Response::new(v))
}

/// Runs a mutation in a task of its own: a caller that goes away (a deadline, a
/// dropped connection) cancels the handler, not the mutation, so it is never cut
/// between its under-store side effect and its journal entry.
/// The master waits for these tasks before it stops its journal.
async fn detached<T: Send + 'static>(
    tasks: &TaskTracker,
    mutation: impl std::future::Future<Output = strata_common::Result<T>> + Send + 'static,
) -> strata_common::Result<T> {
    tasks
        .spawn(mutation)
        .await
        .map_err(|e| Error::internal(format!("mutation task failed: {e}")))?
}

/// A request's sync interval, checked.
fn sync_interval(ms: Option<i64>) -> strata_common::Result<Option<SyncInterval>> {
    ms.map(|ms| {
        SyncInterval::from_millis(ms)
            .map_err(|reason| Error::invalid_argument("sync_interval_ms", reason))
    })
    .transpose()
}

#[tonic::async_trait]
impl FileSystemMaster for FileSystemService {
    async fn get_status(
        &self,
        req: Request<proto::GetStatusRequest>,
    ) -> Answer<proto::GetStatusResponse> {
        let req = req.into_inner();
        let path = parse_path(&req.path)?;
        let sync = sync_interval(req.sync_interval_ms)?;
        self.ns.read_barrier().await?;
        let info = self.ns.get_status(&path, sync).await?;
        ok(proto::GetStatusResponse {
            info: Some(info.into()),
        })
    }

    async fn list_status(
        &self,
        req: Request<proto::ListStatusRequest>,
    ) -> Answer<proto::ListStatusResponse> {
        let req = req.into_inner();
        self.ns.read_barrier().await?;
        let path = parse_path(&req.path)?;
        let start_after = match req.start_after.as_str() {
            "" => None,
            name => {
                strata_common::path::validate_name(name)
                    .map_err(|reason| Error::invalid_argument("start_after", reason))?;
                Some(name)
            }
        };
        let limit = match req.limit {
            0 => crate::namespace::LIST_PAGE_DEFAULT,
            n => n as usize,
        };
        let sync = sync_interval(req.sync_interval_ms)?;
        let page = self.ns.list_page(&path, start_after, limit, sync).await?;
        ok(proto::ListStatusResponse {
            entries: page.entries.into_iter().map(Into::into).collect(),
            more: page.more,
            cursor: page.cursor,
        })
    }

    async fn create_directory(
        &self,
        req: Request<proto::CreateDirectoryRequest>,
    ) -> Answer<proto::CreateDirectoryResponse> {
        let req = req.into_inner();
        let path = parse_path(&req.path)?;
        let id = request_id(req.request)?;
        let ns = self.ns.clone();
        let info = detached(&self.mutations, async move {
            ns.mkdir(&path, req.recursive, id.as_ref()).await
        })
        .await?;
        ok(proto::CreateDirectoryResponse {
            info: Some(info.into()),
        })
    }

    async fn create_file(
        &self,
        req: Request<proto::CreateFileRequest>,
    ) -> Answer<proto::CreateFileResponse> {
        let req = CreateFile::try_from(req.into_inner())?;
        let ns = self.ns.clone();
        let (info, ufs) =
            detached(&self.mutations, async move { ns.create_file(&req).await }).await?;
        ok(proto::CreateFileResponse {
            info: Some(info.into()),
            ufs: ufs.map(Into::into),
            cluster_id: self.ns.cluster_id().to_string(),
            lease_ms: u64::try_from(self.ns.lease_duration().as_millis()).unwrap_or(u64::MAX),
        })
    }

    async fn renew_lease(
        &self,
        req: Request<proto::RenewLeaseRequest>,
    ) -> Answer<proto::RenewLeaseResponse> {
        let lost = self.ns.renew_leases(&req.into_inner().file_ids)?;
        ok(proto::RenewLeaseResponse { lost })
    }

    async fn complete_file(
        &self,
        req: Request<proto::CompleteFileRequest>,
    ) -> Answer<proto::CompleteFileResponse> {
        let req = req.into_inner();
        let ufs = match (req.persisted, req.ufs_fingerprint) {
            (false, _) => None,
            (true, Some(f)) => Some(UfsFingerprint::try_from(f)?),
            // A writer that did not say what it wrote: only the length is known.
            (true, None) => Some(UfsFingerprint {
                length: req.length,
                version: String::new(),
            }),
        };
        let staged_at = req.ufs.map(UfsLocation::try_from).transpose()?;
        let ns = self.ns.clone();
        let info = detached(&self.mutations, async move {
            ns.complete_file(FileId(req.file_id), req.length, ufs, staged_at)
                .await
        })
        .await?;
        ok(proto::CompleteFileResponse {
            info: Some(info.into()),
        })
    }

    async fn delete(&self, req: Request<proto::DeleteRequest>) -> Answer<proto::DeleteResponse> {
        let req = req.into_inner();
        let path = parse_path(&req.path)?;
        let ns = self.ns.clone();
        let only = (req.file_id != 0).then_some(FileId(req.file_id));
        let id = request_id(req.request)?;
        detached(&self.mutations, async move {
            ns.delete(&path, req.recursive, only, id.as_ref()).await
        })
        .await?;
        ok(proto::DeleteResponse {})
    }

    async fn rename(&self, req: Request<proto::RenameRequest>) -> Answer<proto::RenameResponse> {
        let req = req.into_inner();
        let (src, dst) = (parse_path(&req.src)?, parse_path(&req.dst)?);
        let id = request_id(req.request)?;
        let ns = self.ns.clone();
        detached(&self.mutations, async move {
            ns.rename(&src, &dst, id.as_ref()).await
        })
        .await?;
        ok(proto::RenameResponse {})
    }

    async fn mount(&self, req: Request<proto::MountRequest>) -> Answer<proto::MountResponse> {
        let req = req.into_inner();
        let path = parse_path(&req.path)?;
        if req.uri.is_empty() {
            return Err(Error::invalid_argument("uri", "missing").into());
        }
        let id = request_id(req.request)?;
        let ns = self.ns.clone();
        detached(&self.mutations, async move {
            ns.mount(&path, &req.uri, req.read_only, &req.options, id.as_ref())
                .await
        })
        .await?;
        ok(proto::MountResponse {})
    }

    async fn unmount(&self, req: Request<proto::UnmountRequest>) -> Answer<proto::UnmountResponse> {
        let req = req.into_inner();
        let path = parse_path(&req.path)?;
        let id = request_id(req.request)?;
        let ns = self.ns.clone();
        detached(&self.mutations, async move {
            ns.unmount(&path, id.as_ref()).await
        })
        .await?;
        ok(proto::UnmountResponse {})
    }

    async fn get_mount_table(
        &self,
        _req: Request<proto::GetMountTableRequest>,
    ) -> Answer<proto::GetMountTableResponse> {
        self.ns.read_barrier().await?;
        ok(proto::GetMountTableResponse {
            mounts: self.ns.mount_table().into_iter().map(Into::into).collect(),
        })
    }

    async fn get_file_blocks(
        &self,
        req: Request<proto::GetFileBlocksRequest>,
    ) -> Answer<proto::GetFileBlocksResponse> {
        let req = req.into_inner();
        let path = parse_path(&req.path)?;
        let sync = sync_interval(req.sync_interval_ms)?;
        self.ns.read_barrier().await?;
        ok(self.ns.file_blocks(&path, sync).await?.into())
    }

    async fn free(&self, req: Request<proto::FreeRequest>) -> Answer<proto::FreeResponse> {
        let path = parse_path(&req.into_inner().path)?;
        let blocks_freed = self.ns.free(&path).await?;
        ok(proto::FreeResponse { blocks_freed })
    }

    async fn get_workers(
        &self,
        _req: Request<proto::GetWorkersRequest>,
    ) -> Answer<proto::GetWorkersResponse> {
        let workers = self
            .registry
            .workers()
            .into_iter()
            .map(|w| proto::WorkerInfo {
                capacity_bytes: w.capacity_bytes,
                used_bytes: w.used_bytes,
                block_count: w.blocks.len() as u64,
                last_heartbeat_ms_ago: w.last_seen.elapsed().as_millis() as u64,
                address: Some(w.address.into()),
            })
            .collect();
        ok(proto::GetWorkersResponse { workers })
    }
}

#[tonic::async_trait]
impl BlockMaster for BlockService {
    async fn register_worker(
        &self,
        req: Request<proto::RegisterWorkerRequest>,
    ) -> Answer<proto::RegisterWorkerResponse> {
        let req = req.into_inner();
        if req.rpc_address.is_empty() {
            return Err(Error::invalid_argument("rpc_address", "missing").into());
        }
        let cluster_id = self.ns.cluster_id().to_string();
        if req.cluster_id != cluster_id {
            // Storage of another cluster (this one was formatted since), or new
            // storage: its block ids may name files of this cluster. The worker is
            // not registered; it empties its storage, adopts our id and comes back.
            tracing::info!(address = %req.rpc_address, storage_cluster = %req.cluster_id,
                "worker storage belongs to another cluster; it must adopt this one first");
            return ok(proto::RegisterWorkerResponse {
                worker_id: 0,
                cluster_id,
                keep_unclaimed_blocks: req.cluster_id.is_empty()
                    && self.ns.adopts_unclaimed_storage(),
            });
        }
        let reg = Registration {
            host: req.host,
            rpc_address: req.rpc_address,
            capacity_bytes: req.capacity_bytes,
            used_bytes: req.used_bytes,
            blocks: req
                .blocks
                .into_iter()
                .map(|b| (BlockId(b.block_id), b.length))
                .collect(),
        };
        let addr = reg.rpc_address.clone();
        let n = reg.blocks.len();
        let id = self
            .registry
            .register(reg, |b, len| self.ns.block_is_valid(b, len));
        tracing::info!(worker = %id, address = %addr, blocks = n, "worker registered");
        ok(proto::RegisterWorkerResponse {
            worker_id: id.0,
            cluster_id,
            keep_unclaimed_blocks: false,
        })
    }

    async fn worker_heartbeat(
        &self,
        req: Request<proto::WorkerHeartbeatRequest>,
    ) -> Answer<proto::WorkerHeartbeatResponse> {
        let req = req.into_inner();
        let added: Vec<(BlockId, u64)> = req
            .added
            .into_iter()
            .map(|b| (BlockId(b.block_id), b.length))
            .collect();
        let removed: Vec<BlockId> = req.removed_blocks.into_iter().map(BlockId).collect();
        let answer = self.registry.heartbeat(
            WorkerId(req.worker_id),
            req.used_bytes,
            &added,
            &removed,
            |b, len| self.ns.block_is_valid(b, len),
        );
        ok(match answer {
            Some(remove) => proto::WorkerHeartbeatResponse {
                register_again: false,
                remove_blocks: remove.into_iter().map(|b| b.0).collect(),
            },
            None => proto::WorkerHeartbeatResponse {
                register_again: true,
                remove_blocks: Vec::new(),
            },
        })
    }

    async fn commit_block(
        &self,
        req: Request<proto::CommitBlockRequest>,
    ) -> Answer<proto::CommitBlockResponse> {
        let req = req.into_inner();
        let block = BlockId(req.block_id);
        if let Some(f) = req.ufs_fingerprint {
            self.ns
                .read_through_is_current(block, &UfsFingerprint::try_from(f)?)?;
        }
        if req.block_size != 0 {
            self.ns.written_at_block_size(block, req.block_size)?;
        }
        match self
            .registry
            .commit(WorkerId(req.worker_id), block, req.length, |b, len| {
                self.ns.block_is_valid(b, len)
            }) {
            CommitOutcome::Recorded => ok(proto::CommitBlockResponse {}),
            CommitOutcome::DeadBlock => Err(Error::NotFound {
                path: format!(
                    "block {block} ({} bytes) of file id {}",
                    req.length,
                    block.file()
                ),
            }
            .into()),
            CommitOutcome::UnknownWorker => Err(Error::unavailable(format!(
                "worker {} is not registered with this master",
                req.worker_id
            ))
            .into()),
        }
    }
}
