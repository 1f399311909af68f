//! The Strata client library.
//!
//! [`FileSystem`] talks to the master for metadata and to workers for data:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_client::{FileSystem, CreateOptions, OpenOptions};
//! use tokio::io::AsyncReadExt;
//!
//! let fs = FileSystem::connect(&strata_client::SiteConfig::default()).await?;
//! let mut w = fs.create("/data/hello.txt", CreateOptions::default()).await?;
//! w.write(b"hello, strata").await?;
//! w.close().await?;
//!
//! let mut r = fs.open("/data/hello.txt", OpenOptions::default()).await?;
//! let mut text = String::new();
//! r.read_to_string(&mut text).await?;
//! # Ok(()) }
//! ```
//!
//! A read asks the master where the file's blocks are, then streams each block from a
//! worker: one on this host if it has the block, else any that has it, else the
//! worker that consistent hashing assigns to the block, which reads it through from
//! the under-store and keeps it.

#![warn(missing_docs)]

pub mod admin;
mod reader;
mod requests;
mod writer;

pub use reader::FileReader;
pub use strata_common::config::SiteConfig;
pub use strata_common::types::{
    BlockLocation, FileBlocks, FileInfo, FileKind, MountOptions, MountPointInfo, ReadType,
    SyncInterval, UfsLocation, WorkerAddress, WriteType,
};
pub use strata_common::{Error, Result, StrataPath};
pub use writer::FileWriter;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_common::config::ClientConfig;
use strata_common::masters::MasterSet;
use strata_common::proto::{
    self, file_system_master_client::FileSystemMasterClient,
    worker_service_client::WorkerServiceClient, MAX_MESSAGE_BYTES,
};
use tonic::transport::Channel;

/// Options for [`FileSystem::create`]; unset fields take the configured defaults.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Where the bytes must be when the writer closes.
    pub write_type: Option<WriteType>,
    /// Block size of the new file.
    pub block_size: Option<u64>,
    /// Create missing parent directories.
    pub recursive: bool,
}

/// Options for [`FileSystem::open`]; unset fields take the configured defaults.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Whether blocks read from the under-store are kept in worker storage.
    pub read_type: Option<ReadType>,
}

/// One page of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Entries in name order.
    pub entries: Vec<FileInfo>,
    /// Whether more entries follow.
    pub more: bool,
    /// Where the next page starts: pass it as `start_after`.
    pub cursor: String,
}

/// A live worker as the master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Where it answers.
    pub address: WorkerAddress,
    /// Bytes its storage may hold.
    pub capacity_bytes: u64,
    /// Bytes it holds.
    pub used_bytes: u64,
    /// Blocks it holds.
    pub block_count: u64,
    /// Time since its last heartbeat.
    pub since_heartbeat: Duration,
}

/// How long the worker list is reused before asking the master again.
const WORKER_LIST_TTL: Duration = Duration::from_secs(3);

pub(crate) struct Inner {
    masters: MasterSet,
    requests: requests::Requests,
    pub(crate) conf: ClientConfig,
    local_host: String,
    channels: Mutex<HashMap<String, Channel>>,
    workers: Mutex<Option<(Instant, Vec<WorkerAddress>)>>,
}

/// A lazily connected channel with the configured connect timeout and keepalive:
/// HTTP/2 pings every `keepalive_interval`, and a peer that does not answer one
/// within another interval is dropped, so a vanished worker or master fails the
/// calls on it instead of hanging them.
fn channel(addr: &str, conf: &ClientConfig, timeout: Option<Duration>) -> Result<Channel> {
    let keepalive = conf.keepalive_interval.0;
    let mut ep = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::invalid_argument("address", format!("{addr}: {e}")))?
        .connect_timeout(conf.connect_timeout.0)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(keepalive))
        .http2_keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(proto::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(proto::CONNECTION_WINDOW_BYTES);
    if let Some(t) = timeout {
        ep = ep.timeout(t);
    }
    Ok(ep.connect_lazy())
}

fn master_client(ch: Channel) -> FileSystemMasterClient<Channel> {
    FileSystemMasterClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl Inner {
    /// Runs `call` on the leading master (see [`MasterSet::call`]); an `idempotent`
    /// call is also tried again past unreachable masters and temporary failures.
    pub(crate) async fn on_master<T, F, Fut>(&self, idempotent: bool, mut call: F) -> Result<T>
    where
        F: FnMut(FileSystemMasterClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        self.masters
            .call(idempotent, self.conf.rpc_timeout.0, |ch| {
                call(master_client(ch))
            })
            .await
    }

    pub(crate) fn worker(&self, addr: &str) -> Result<WorkerServiceClient<Channel>> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let ch = match map.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = channel(addr, &self.conf, None)?;
                map.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(WorkerServiceClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Live workers, from a short-lived cache.
    pub(crate) async fn worker_list(&self) -> Result<Vec<WorkerAddress>> {
        if let Some((at, list)) = &*self.workers.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < WORKER_LIST_TTL && !list.is_empty() {
                return Ok(list.clone());
            }
        }
        let resp = self
            .on_master(true, |mut m| async move {
                m.get_workers(proto::GetWorkersRequest {}).await
            })
            .await?
            .into_inner();
        let list: Vec<WorkerAddress> = resp
            .workers
            .into_iter()
            .filter_map(|w| w.address)
            .map(WorkerAddress::try_from)
            .collect::<Result<_>>()?;
        *self.workers.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Workers to try for `key`, best first: one on this host, then by rendezvous hash
    /// (so every client sends the same block to the same worker).
    pub(crate) fn rank_workers(
        &self,
        mut workers: Vec<WorkerAddress>,
        key: u64,
    ) -> Vec<WorkerAddress> {
        workers.sort_by_key(|w| {
            (
                w.host != self.local_host,
                std::cmp::Reverse(rendezvous_score(&w.rpc_address, key)),
            )
        });
        workers
    }

    /// Puts workers on this host first, keeping the master's order otherwise.
    pub(crate) fn prefer_local(&self, mut workers: Vec<WorkerAddress>) -> Vec<WorkerAddress> {
        workers.sort_by_key(|w| w.host != self.local_host);
        workers
    }
}

/// A 64-bit finaliser (splitmix64's): every input bit reaches every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous weight of worker `address` for `key`. FNV-1a of the address
/// (stable across processes, builds and toolchains, unlike std's hasher), mixed with
/// the mixed key: without the final mix, consecutive block ids differ only in low
/// bits that FNV's multiplications barely carry upward, and a pair of workers could
/// take every block of a file in the same order.
fn rendezvous_score(address: &str, key: u64) -> u64 {
    let fnv = address.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix(fnv ^ mix(key))
}

#[cfg(test)]
mod rendezvous_tests {
    use super::rendezvous_score;

    #[test]
    fn consecutive_blocks_spread_over_any_pair_of_workers() {
        // Every pair of loopback ports in a range, 64 consecutive blocks of a file:
        // each worker of the pair wins a fair share, never all or nothing.
        for a in 40_000..40_040u32 {
            for b in (a + 1)..40_040 {
                let (wa, wb) = (format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}"));
                let file = 3u64 << 24;
                let won = (0..64)
                    .filter(|i| rendezvous_score(&wa, file | i) > rendezvous_score(&wb, file | i))
                    .count();
                assert!((12..=52).contains(&won), "{wa} vs {wb}: {won} of 64");
            }
        }
    }
}

/// A connection to a Strata cluster.
#[derive(Clone)]
pub struct FileSystem {
    inner: Arc<Inner>,
    /// The sync interval this handle's lookups and listings ask for.
    sync: Option<SyncInterval>,
}

fn parse(path: &str) -> Result<StrataPath> {
    StrataPath::parse(path)
}

impl FileSystem {
    /// Connects to the masters of `conf.master_addresses` with `conf.client`
    /// settings, and follows their leader. Connections are made on first use; when
    /// no master can be reached, calls fail with [`Error::Unavailable`].
    pub async fn connect(conf: &SiteConfig) -> Result<Self> {
        let client_conf = conf.client.clone();
        let masters = MasterSet::new(&conf.master_addresses, move |addr| {
            channel(addr, &client_conf, Some(client_conf.rpc_timeout.0))
        })?;
        let local_host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Ok(FileSystem {
            inner: Arc::new(Inner {
                masters,
                requests: requests::Requests::new()?,
                conf: conf.client.clone(),
                local_host,
                channels: Mutex::new(HashMap::new()),
                workers: Mutex::new(None),
            }),
            sync: None,
        })
    }

    /// A handle on the same connection whose status lookups, listings and opens
    /// ask the master to compare paths under a mount with the under-store when
    /// their view is older than `interval` (`SyncInterval::Always`: every time;
    /// `SyncInterval::Never`: never once loaded), instead of the mount's or the
    /// master's interval.
    pub fn with_sync_interval(&self, interval: SyncInterval) -> FileSystem {
        FileSystem {
            inner: self.inner.clone(),
            sync: Some(interval),
        }
    }

    fn sync_ms(&self) -> Option<i64> {
        self.sync.map(SyncInterval::to_millis)
    }

    /// The client settings in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.conf
    }

    /// Runs an idempotent read on the leading master, trying temporary failures
    /// again.
    async fn retry<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut(FileSystemMasterClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        self.inner.on_master(true, call).await
    }

    /// Runs a mutation on the leading master, with a request id that every
    /// attempt shares: the master runs it at most once and answers a retry with
    /// the first attempt's result, so it is tried again like a read (past
    /// unreachable masters, lost answers and elections).
    async fn mutate<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(FileSystemMasterClient<Channel>, proto::RequestId) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let ticket = self.inner.requests.start();
        let id = ticket.proto();
        self.inner.on_master(true, |m| call(m, id.clone())).await
    }

    /// Status of a file or directory.
    pub async fn get_status(&self, path: &str) -> Result<FileInfo> {
        let path = parse(path)?.to_string();
        let sync_interval_ms = self.sync_ms();
        let resp = self
            .retry(|mut m| {
                let req = proto::GetStatusRequest {
                    path: path.clone(),
                    sync_interval_ms,
                };
                async move { m.get_status(req).await }
            })
            .await?
            .into_inner();
        resp.info
            .ok_or_else(|| Error::internal("master answered without info"))?
            .try_into()
    }

    /// Whether something exists at `path`.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.get_status(path).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Entries of a directory in name order (a file lists as itself). Holds the
    /// whole listing in memory: for folders that may be huge, use
    /// [`FileSystem::list_stream`].
    pub async fn list(&self, path: &str) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        let mut pages = std::pin::pin!(self.list_pages(path));
        while let Some(page) = futures::StreamExt::next(&mut pages).await {
            out.extend(page?);
        }
        Ok(out)
    }

    /// The entries of a directory in name order, fetched a page at a time as the
    /// stream is read, so memory stays flat however large the folder.
    pub fn list_stream(
        &self,
        path: &str,
    ) -> impl futures::Stream<Item = Result<FileInfo>> + Send + '_ {
        use futures::{StreamExt, TryStreamExt};
        self.list_pages(path)
            .map_ok(|page| futures::stream::iter(page.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// The pages of a listing, each asked for when the one before is consumed.
    fn list_pages(&self, path: &str) -> impl futures::Stream<Item = Result<Vec<FileInfo>>> + '_ {
        let path = path.to_string();
        // State: the name the next page starts after; `None` once the last came.
        futures::stream::try_unfold(Some(String::new()), move |after| {
            let path = path.clone();
            async move {
                let Some(after) = after else {
                    return Ok(None);
                };
                let page = self.list_page(&path, &after, 0).await?;
                let next = page.more.then_some(page.cursor);
                Ok(Some((page.entries, next)))
            }
        })
    }

    /// One page of a listing: up to `limit` entries (0: the master's default)
    /// whose names sort after `start_after` ("" for the first page). The master
    /// syncs with the under-store on the first page only.
    pub async fn list_page(&self, path: &str, start_after: &str, limit: u32) -> Result<ListPage> {
        let path = parse(path)?.to_string();
        let resp = self
            .retry(|mut m| {
                let req = proto::ListStatusRequest {
                    path: path.clone(),
                    start_after: start_after.to_string(),
                    limit,
                    sync_interval_ms: self.sync_ms(),
                };
                async move { m.list_status(req).await }
            })
            .await?
            .into_inner();
        let entries = resp
            .entries
            .into_iter()
            .map(FileInfo::try_from)
            .collect::<Result<Vec<_>>>()?;
        if resp.more && resp.cursor.as_str() <= start_after {
            return Err(Error::internal(format!(
                "master's listing cursor {:?} does not move past {start_after:?}",
                resp.cursor
            )));
        }
        Ok(ListPage {
            entries,
            more: resp.more,
            cursor: resp.cursor,
        })
    }

    /// Creates a directory; with `recursive`, missing parents too, and an existing
    /// directory is not an error.
    pub async fn mkdir(&self, path: &str, recursive: bool) -> Result<FileInfo> {
        let path = parse(path)?.to_string();
        let resp = self
            .mutate(|mut m, request| {
                let path = path.clone();
                async move {
                    m.create_directory(proto::CreateDirectoryRequest {
                        path,
                        recursive,
                        request: Some(request),
                    })
                    .await
                }
            })
            .await?
            .into_inner();
        resp.info
            .ok_or_else(|| Error::internal("master answered without info"))?
            .try_into()
    }

    /// Creates a file and returns its writer. Nothing is readable until
    /// [`FileWriter::close`] returns.
    pub async fn create(&self, path: &str, opts: CreateOptions) -> Result<FileWriter> {
        let path = parse(path)?;
        let write_type = opts.write_type.unwrap_or(self.inner.conf.write_type);
        let block_size = opts.block_size.unwrap_or(self.inner.conf.block_size.0);
        let req = proto::CreateFileRequest {
            path: path.to_string(),
            block_size,
            recursive: opts.recursive,
            write_type: proto::WriteType::from(write_type) as i32,
            request: None,
        };
        let resp = self
            .mutate(|mut m, request| {
                let req = proto::CreateFileRequest {
                    request: Some(request),
                    ..req.clone()
                };
                async move { m.create_file(req).await }
            })
            .await?
            .into_inner();
        let info: FileInfo = resp
            .info
            .ok_or_else(|| Error::internal("master answered without info"))?
            .try_into()?;
        let ufs = resp.ufs.map(UfsLocation::try_from).transpose()?;
        let created = writer::Created {
            info,
            ufs,
            cluster_id: resp.cluster_id,
            lease: writer::lease_of(resp.lease_ms),
        };
        Ok(FileWriter::new(self.inner.clone(), created, write_type))
    }

    /// Opens a complete file for reading.
    pub async fn open(&self, path: &str, opts: OpenOptions) -> Result<FileReader> {
        let blocks = self.file_blocks(path).await?;
        let read_type = opts.read_type.unwrap_or(self.inner.conf.read_type);
        Ok(FileReader::new(self.inner.clone(), blocks, read_type))
    }

    /// A file's blocks with their locations.
    pub async fn file_blocks(&self, path: &str) -> Result<FileBlocks> {
        let path = parse(path)?.to_string();
        let resp = self
            .retry(|mut m| {
                let req = proto::GetFileBlocksRequest {
                    path: path.clone(),
                    sync_interval_ms: self.sync_ms(),
                };
                async move { m.get_file_blocks(req).await }
            })
            .await?
            .into_inner();
        resp.try_into()
    }

    /// Deletes a file or directory (a non-empty directory only with `recursive`), in
    /// the under-store too.
    pub async fn delete(&self, path: &str, recursive: bool) -> Result<()> {
        let req = proto::DeleteRequest {
            path: parse(path)?.to_string(),
            recursive,
            file_id: 0,
            request: None,
        };
        self.mutate(|mut m, request| {
            let req = proto::DeleteRequest {
                request: Some(request),
                ..req.clone()
            };
            async move { m.delete(req).await }
        })
        .await?;
        Ok(())
    }

    /// Renames `src` to `dst`; `dst` must not exist.
    pub async fn rename(&self, src: &str, dst: &str) -> Result<()> {
        let req = proto::RenameRequest {
            src: parse(src)?.to_string(),
            dst: parse(dst)?.to_string(),
            request: None,
        };
        self.mutate(|mut m, request| {
            let req = proto::RenameRequest {
                request: Some(request),
                ..req.clone()
            };
            async move { m.rename(req).await }
        })
        .await?;
        Ok(())
    }

    /// Mounts an under-store (`file:///folder` or `/folder`) at `path`, which must not
    /// exist yet.
    pub async fn mount(&self, path: &str, uri: &str, read_only: bool) -> Result<()> {
        self.mount_with_options(path, uri, read_only, &MountOptions::new())
            .await
    }

    /// Mounts an under-store with backend options (`s3://bucket/prefix` with
    /// `s3.endpoint`, `s3.region`, ...). The master checks the store before it
    /// mounts it: a missing bucket or refused credentials fail here.
    pub async fn mount_with_options(
        &self,
        path: &str,
        uri: &str,
        read_only: bool,
        options: &MountOptions,
    ) -> Result<()> {
        strata_common::types::check_mount_options(options)?;
        let req = proto::MountRequest {
            path: parse(path)?.to_string(),
            uri: uri.to_string(),
            read_only,
            request: None,
            options: options.clone(),
        };
        self.mutate(|mut m, request| {
            let req = proto::MountRequest {
                request: Some(request),
                ..req.clone()
            };
            async move { m.mount(req).await }
        })
        .await?;
        Ok(())
    }

    /// Removes the mount at `path` from the namespace; the under-store is untouched.
    pub async fn unmount(&self, path: &str) -> Result<()> {
        let req = proto::UnmountRequest {
            path: parse(path)?.to_string(),
            request: None,
        };
        self.mutate(|mut m, request| {
            let req = proto::UnmountRequest {
                request: Some(request),
                ..req.clone()
            };
            async move { m.unmount(req).await }
        })
        .await?;
        Ok(())
    }

    /// The mount table.
    pub async fn mount_table(&self) -> Result<Vec<MountPointInfo>> {
        let resp = self
            .retry(|mut m| async move { m.get_mount_table(proto::GetMountTableRequest {}).await })
            .await?
            .into_inner();
        resp.mounts
            .into_iter()
            .map(MountPointInfo::try_from)
            .collect()
    }

    /// Drops the cached copies of a file, or of every file below a directory;
    /// returns how many block copies are being dropped.
    pub async fn free(&self, path: &str) -> Result<u64> {
        let req = proto::FreeRequest {
            path: parse(path)?.to_string(),
        };
        // Dropping cached copies twice drops nothing more: safe to try again.
        let resp = self
            .retry(|mut m| {
                let req = req.clone();
                async move { m.free(req).await }
            })
            .await?
            .into_inner();
        Ok(resp.blocks_freed)
    }

    /// Live workers.
    pub async fn workers(&self) -> Result<Vec<WorkerSummary>> {
        let resp = self
            .retry(|mut m| async move { m.get_workers(proto::GetWorkersRequest {}).await })
            .await?
            .into_inner();
        resp.workers
            .into_iter()
            .map(|w| {
                Ok(WorkerSummary {
                    address: w
                        .address
                        .ok_or_else(|| Error::internal("worker without address"))?
                        .try_into()?,
                    capacity_bytes: w.capacity_bytes,
                    used_bytes: w.used_bytes,
                    block_count: w.block_count,
                    since_heartbeat: Duration::from_millis(w.last_heartbeat_ms_ago),
                })
            })
            .collect()
    }

    /// A worker's counters (`worker.bytes_read_ufs`, ...), by its RPC address.
    pub async fn worker_metrics(&self, rpc_address: &str) -> Result<BTreeMap<String, u64>> {
        let resp = self
            .inner
            .worker(rpc_address)?
            .get_metrics(proto::GetMetricsRequest {})
            .await?
            .into_inner();
        Ok(resp.counters.into_iter().collect())
    }
}
