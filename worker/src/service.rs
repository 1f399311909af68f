//! The worker's data service: block reads (from storage, or read-through from the
//! under-store on a miss) and file writes (cut into blocks and/or written through).
//!
//! Reads and read-through caching run in spawned tasks that feed the response stream:
//! if the client goes away mid-read, a read-through still finishes caching the block
//! it has paid to fetch.

use crate::metrics::{
    WorkerMetrics, BYTES_READ_CACHE, BYTES_READ_UFS, BYTES_WRITTEN_CACHE, BYTES_WRITTEN_UFS,
};
use crate::store::{BlockStore, TempBlock};
use crate::{MasterLink, Origin};
use bytes::{Bytes, BytesMut};
use futures::Stream;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use strata_common::ids::{BlockId, MAX_BLOCKS_PER_FILE};
use strata_common::proto::{self, worker_service_server::WorkerService, DATA_CHUNK_BYTES};
use strata_common::types::{
    ReadBlock, ReadType, UfsBlockSource, UfsFingerprint, WriteFileHeader, WriteType,
};
use strata_common::{Error, Result};
use strata_ufs::{StoreCache, UfsPath, UfsReader, UfsWriter};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

type Chunk = std::result::Result<proto::ReadBlockResponse, Status>;

/// Shared state of one worker's service.
pub struct DataService {
    pub(crate) store: Arc<BlockStore>,
    pub(crate) ufs: Arc<StoreCache>,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) master: Arc<MasterLink>,
    pub(crate) mounted: tokio::sync::Mutex<MountedUris>,
}

/// The under-stores the master has mounted (URI → options), as last asked.
#[derive(Default)]
pub struct MountedUris {
    uris: std::collections::HashMap<String, strata_common::types::MountOptions>,
    asked: Option<std::time::Instant>,
}

/// How often a request naming an unknown URI may make the worker ask the master
/// again (a mount made since): at most this often, whatever clients send.
const MOUNT_REFRESH: std::time::Duration = std::time::Duration::from_millis(200);
/// How long the worker trusts its copy of the mount table (an unmount is seen
/// within this).
const MOUNT_TABLE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

fn chunk(data: Bytes) -> Chunk {
    Ok(proto::ReadBlockResponse { data })
}

/// Streams `length` bytes from `offset` of an open block file.
async fn stream_file(
    file: std::fs::File,
    offset: u64,
    length: u64,
    tx: mpsc::Sender<Chunk>,
    metrics: Arc<WorkerMetrics>,
) {
    let file = Arc::new(file);
    let served = metrics.counter(BYTES_READ_CACHE);
    let mut pos = offset;
    let end = offset + length;
    while pos < end {
        let n = ((end - pos) as usize).min(DATA_CHUNK_BYTES);
        let f = file.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            f.read_exact_at(&mut buf, pos).map(|_| buf)
        })
        .await;
        let buf = match read {
            Ok(Ok(buf)) => buf,
            Ok(Err(e)) => {
                let _ = tx
                    .send(Err(Error::StorageIo {
                        what: "block file".into(),
                        reason: e.to_string(),
                    }
                    .into()))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(Error::internal(e).into())).await;
                return;
            }
        };
        // Counted before the send, so a client that has its bytes sees them counted.
        served.add(n as u64);
        if tx.send(chunk(Bytes::from(buf))).await.is_err() {
            return; // the client went away
        }
        pos += n as u64;
    }
}

/// Reads up to one chunk; an empty result means end of stream.
async fn read_chunk(reader: &mut UfsReader, path: &str) -> Result<Bytes> {
    let mut buf = BytesMut::with_capacity(DATA_CHUNK_BYTES);
    while buf.len() < DATA_CHUNK_BYTES {
        match reader.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(ufs_read_error(path, e)),
        }
    }
    Ok(buf.freeze())
}

/// An under-store read failure: temporary only when the cause is (a timeout, a
/// reset connection, an interrupted call), so the client does not retry a file
/// that is gone or unreadable.
fn ufs_read_error(path: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    // A backend that knows what went wrong says so with a Strata error.
    if let Some(known) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        return known.clone();
    }
    let temporary = matches!(
        e.kind(),
        K::TimedOut
            | K::Interrupted
            | K::WouldBlock
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
    );
    Error::UnderStore {
        path: path.to_string(),
        reason: e.to_string(),
        temporary,
    }
}

impl DataService {
    /// The under-store at `uri`, if the master has it mounted: a client cannot make
    /// the worker read or write any folder it names, only mounted ones.
    async fn mounted_store(&self, uri: &str) -> Result<Arc<dyn strata_ufs::UnderStore>> {
        let mut mounted = self.mounted.lock().await;
        let stale = mounted.asked.is_none_or(|t| t.elapsed() >= MOUNT_TABLE_TTL);
        if stale || !mounted.uris.contains_key(uri) {
            // A URI not seen yet may have been mounted since: ask, but no more often
            // than MOUNT_REFRESH, whatever clients send (they wait their turn).
            if let Some(t) = mounted.asked {
                tokio::time::sleep(MOUNT_REFRESH.saturating_sub(t.elapsed())).await;
            }
            mounted.uris = self.master.mounted_stores().await?.into_iter().collect();
            mounted.asked = Some(std::time::Instant::now());
        }
        // The options are the master's, never a client's: a client cannot point the
        // worker at another endpoint.
        let Some(options) = mounted.uris.get(uri).cloned() else {
            return Err(Error::NotPermitted {
                path: uri.to_string(),
                reason: "is not a mounted under-store".into(),
            });
        };
        drop(mounted);
        self.ufs.get(uri, &options)
    }

    /// Refuses a request for another cluster's blocks: block ids of one cluster name
    /// other files in another (after a format), so storage serves and takes blocks
    /// only for the cluster that adopted it at registration.
    fn check_cluster(&self, requested: &str) -> Result<()> {
        match self.store.cluster_id() {
            Some(mine) if mine == requested => Ok(()),
            Some(mine) => Err(Error::unavailable(format!(
                "this worker's storage belongs to cluster {mine}, not {requested}"
            ))),
            None => Err(Error::unavailable(
                "this worker has not registered with a master yet",
            )),
        }
    }

    /// Reads the whole block from the under-store, caching it, and sends the
    /// requested range to the client as it passes.
    async fn read_through(
        self: Arc<Self>,
        req: ReadBlock,
        src: UfsBlockSource,
        tx: mpsc::Sender<Chunk>,
    ) {
        let display = format!("{}/{}", src.location.mount_uri, src.location.relative());
        let result = self
            .read_through_inner(&req, &src, &display, true, &tx)
            .await;
        match result {
            Ok(temp) => {
                // The client has its bytes: end its stream before talking to the master.
                drop(tx);
                if let Some(t) = temp {
                    self.keep_read_through(req.block_id, t, &src.fingerprint)
                        .await;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
            }
        }
    }

    /// Caches a block read through from the under-store, and keeps it only if the
    /// master accepts it: the file it came from must still be the file's recorded
    /// copy. A block the master did not confirm is dropped, so storage never holds
    /// bytes the namespace does not vouch for.
    async fn keep_read_through(&self, id: BlockId, temp: TempBlock, source: &UfsFingerprint) {
        let len = match self.store.commit(id, temp, false) {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!(block = %id, "caching read-through block failed: {e}");
                return;
            }
        };
        if let Err(e) = self
            .master
            .commit_block(id, len, Origin::ReadThrough(source))
            .await
        {
            tracing::info!(block = %id, "read-through block not kept: {e}");
            self.store.remove(id);
        }
    }

    async fn read_through_inner(
        &self,
        req: &ReadBlock,
        src: &UfsBlockSource,
        display: &str,
        cache: bool,
        tx: &mpsc::Sender<Chunk>,
    ) -> Result<Option<TempBlock>> {
        let ufs = self.mounted_store(&src.location.mount_uri).await?;
        let path = UfsPath::from(&src.location);
        let (want_start, want_end) = (req.offset, req.offset + req.length);
        // Without a block to fill, read only what the client wants.
        let (start, len) = if cache {
            (0, src.block_length)
        } else {
            (req.offset, req.length)
        };
        let mut reader = ufs
            .open_range(&path, src.block_start + start, len, &src.fingerprint)
            .await?;
        // Room is made only now that the file is known to be the recorded one: a
        // request naming a file that is not cannot evict anything.
        let mut temp = if cache {
            match self.store.begin(src.block_length) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(block = %req.block_id, "not caching read-through block: {e}");
                    None
                }
            }
        } else {
            None
        };
        let from_ufs = self.metrics.counter(BYTES_READ_UFS);
        let mut pos = start;
        let mut client_alive = true;
        loop {
            let data = read_chunk(&mut reader, display).await?;
            if data.is_empty() {
                break;
            }
            let n = data.len() as u64;
            from_ufs.add(n);
            if let Some(t) = temp.as_mut() {
                t.write(&data)?;
            }
            let (lo, hi) = (pos.max(want_start), (pos + n).min(want_end));
            if client_alive && lo < hi {
                let slice = data.slice((lo - pos) as usize..(hi - pos) as usize);
                client_alive = tx.send(chunk(slice)).await.is_ok();
            }
            pos += n;
            if !client_alive && temp.is_none() {
                return Ok(None);
            }
        }
        if pos != start + len {
            return Err(Error::UnderStore {
                path: display.to_string(),
                reason: format!(
                    "file is shorter than Strata recorded (block ends at {}, under-store at {}); it changed outside Strata",
                    src.block_start + start + len,
                    src.block_start + pos
                ),
                temporary: false,
            });
        }
        Ok(temp)
    }

    async fn write_file(
        &self,
        mut stream: Streaming<proto::WriteFileRequest>,
    ) -> Result<proto::WriteFileResponse> {
        let header = match stream.message().await.map_err(Error::from)? {
            Some(proto::WriteFileRequest {
                msg: Some(proto::write_file_request::Msg::Header(h)),
            }) => WriteFileHeader::try_from(h)?,
            _ => {
                return Err(Error::invalid_argument(
                    "header",
                    "a write stream must start with its header",
                ))
            }
        };
        self.check_cluster(&header.cluster_id)?;
        // Storage holds a MUST_CACHE file's only copy: evicting its first blocks to
        // make room for its last would lose it. Better a clear "no space" error.
        let _pin = (header.write_type == WriteType::MustCache)
            .then(|| self.store.pin_file(header.file_id));
        let mut ufs_writer: Option<Box<dyn UfsWriter>> = match &header.ufs {
            Some(loc) if header.write_type.persists() => {
                let ufs = self.mounted_store(&loc.mount_uri).await?;
                Some(ufs.create(&UfsPath::from(loc), header.file_id.0).await?)
            }
            _ => None,
        };
        let received = self
            .receive_blocks(&header, &mut stream, &mut ufs_writer)
            .await;
        let (length, pending) = match received {
            Ok(r) => r,
            Err(e) => {
                if let Some(w) = ufs_writer {
                    if let Err(abort) = w.abort().await {
                        tracing::warn!("aborting under-store write: {abort}");
                    }
                }
                return Err(e);
            }
        };
        // The stream ended with its end message. The under-store copy is made
        // durable but stays staged: the master publishes it when the file completes,
        // under the file's path lock, so this write cannot undo a delete or a rename
        // that happened meanwhile. Then the cached blocks become visible.
        let ufs_fingerprint = match ufs_writer {
            Some(w) => Some(w.finish().await?.fingerprint()),
            None => None,
        };
        let mut cached = Vec::with_capacity(pending.len());
        for (index, temp) in pending {
            let id = BlockId::new(header.file_id, index)?;
            let len = self.store.commit(id, temp, header.sync)?;
            let origin = Origin::Written {
                block_size: header.block_size,
            };
            match self.master.commit_block(id, len, origin).await {
                Ok(()) => {}
                // The next heartbeat reports it again.
                Err(e) if e.is_temporary() => {
                    tracing::warn!(block = %id, "commit to master failed: {e}")
                }
                // The master refuses it (the file is gone, or the block does not fit
                // it): storage does not keep what the namespace does not vouch for.
                Err(e) => {
                    tracing::info!(block = %id, "written block refused: {e}");
                    self.store.remove(id);
                    continue;
                }
            }
            cached.push(id.0);
        }
        Ok(proto::WriteFileResponse {
            length,
            cached_blocks: cached,
            ufs_fingerprint: ufs_fingerprint.map(Into::into),
        })
    }

    /// Takes the stream's data up to its end message: into the under-store writer
    /// when the write persists, and into temporary blocks when it caches. Returns
    /// the byte count and the blocks, none of them visible yet.
    async fn receive_blocks(
        &self,
        h: &WriteFileHeader,
        stream: &mut Streaming<proto::WriteFileRequest>,
        ufs_writer: &mut Option<Box<dyn UfsWriter>>,
    ) -> Result<(u64, Vec<(u64, TempBlock)>)> {
        let mut index = 0u64;
        let mut cur: Option<TempBlock> = None;
        let mut pending: std::collections::VecDeque<(u64, TempBlock)> = Default::default();
        // A persisted write caches what fits: when the tier is full, its oldest
        // pending blocks give way (the under-store has them), then caching stops.
        let mut caching = h.write_type.caches();
        let mut total = 0u64;
        let to_cache = self.metrics.counter(BYTES_WRITTEN_CACHE);
        let to_ufs = self.metrics.counter(BYTES_WRITTEN_UFS);
        let mut ended = false;
        while let Some(msg) = stream.message().await.map_err(Error::from)? {
            let data = match msg.msg {
                Some(proto::write_file_request::Msg::Data(d)) if !ended => d,
                Some(proto::write_file_request::Msg::End(end)) if !ended => {
                    if end.length != total {
                        return Err(Error::invalid_argument(
                            "end.length",
                            format!("client sent {} bytes, worker received {total}", end.length),
                        ));
                    }
                    ended = true;
                    continue;
                }
                _ => {
                    return Err(Error::invalid_argument(
                        "data",
                        "expected a data or end message",
                    ))
                }
            };
            let mut pos = total;
            total = total
                .checked_add(data.len() as u64)
                .ok_or_else(|| Error::invalid_argument("data", "file too long"))?;
            if let Some(w) = ufs_writer.as_mut() {
                w.write(data.clone()).await?;
                to_ufs.add(data.len() as u64);
            }
            let mut rest = &data[..];
            while !rest.is_empty() {
                let offset = pos % h.block_size;
                let n = (h.block_size - offset).min(rest.len() as u64) as usize;
                if caching && cur.is_none() && offset == 0 {
                    cur = self.begin_block(h, &mut pending)?;
                    caching = cur.is_some();
                }
                if let Some(t) = cur.as_mut() {
                    t.write(&rest[..n])?;
                    to_cache.add(n as u64);
                }
                rest = &rest[n..];
                pos += n as u64;
                if pos % h.block_size == 0 {
                    if let Some(mut full) = cur.take() {
                        // Closed now: a long write holds one open block file.
                        full.seal(h.sync)?;
                        pending.push_back((index, full));
                    }
                    index += 1;
                    if index > MAX_BLOCKS_PER_FILE {
                        return Err(Error::invalid_argument(
                            "data",
                            format!("a file may hold at most {MAX_BLOCKS_PER_FILE} blocks"),
                        ));
                    }
                }
            }
        }
        if !ended {
            return Err(Error::unavailable(
                "write stream ended without its end message; write aborted",
            ));
        }
        if let Some(t) = cur.take() {
            if t.written() > 0 {
                pending.push_back((index, t));
            }
        }
        Ok((total, pending.into_iter().collect()))
    }

    /// Starts the next cached block of a write; `None` when a persisted write gives
    /// up caching because the tier has no room even after dropping its own pending
    /// blocks.
    fn begin_block(
        &self,
        h: &WriteFileHeader,
        pending: &mut std::collections::VecDeque<(u64, TempBlock)>,
    ) -> Result<Option<TempBlock>> {
        loop {
            match self.store.begin(h.block_size) {
                Ok(t) => return Ok(Some(t)),
                Err(Error::NoSpace { .. }) if h.write_type.persists() => {
                    if pending.pop_front().is_none() {
                        tracing::debug!(file = %h.file_id, "tier full: rest of the file not cached");
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The gRPC face of a [`DataService`].
pub struct WorkerGrpc(pub(crate) Arc<DataService>);

#[tonic::async_trait]
impl WorkerService for WorkerGrpc {
    type ReadBlockStream = Pin<Box<dyn Stream<Item = Chunk> + Send>>;

    async fn read_block(
        &self,
        req: Request<proto::ReadBlockRequest>,
    ) -> std::result::Result<Response<Self::ReadBlockStream>, Status> {
        let svc = self.0.clone();
        let req = ReadBlock::try_from(req.into_inner())?;
        svc.check_cluster(&req.cluster_id)?;
        let (tx, rx) = mpsc::channel(4);
        let cached = svc.store.open_block(req.block_id);
        if let (Some((_, len)), Some(src)) = (&cached, &req.source) {
            if *len != src.block_length {
                // The request and the cached block disagree on what the block is:
                // serve nothing. (The block stays: a request cannot remove it.)
                return Err(Error::invalid_argument(
                    "source.block_length",
                    format!(
                        "block {} is cached with {len} bytes, not {}",
                        req.block_id, src.block_length
                    ),
                )
                .into());
            }
        }
        if let Some((file, len)) = cached {
            if req.offset.saturating_add(req.length) > len {
                return Err(Error::invalid_argument(
                    "length",
                    format!(
                        "range {}+{} ends past block {} of {len} bytes",
                        req.offset, req.length, req.block_id
                    ),
                )
                .into());
            }
            tokio::spawn(stream_file(
                file,
                req.offset,
                req.length,
                tx,
                svc.metrics.clone(),
            ));
        } else {
            let Some(src) = req.source.clone() else {
                return Err(Error::BlockNotFound {
                    block_id: req.block_id.0,
                }
                .into());
            };
            // Fail fast on a bad mount URI, before the stream starts.
            svc.mounted_store(&src.location.mount_uri).await?;
            match req.read_type {
                ReadType::Cache => {
                    tokio::spawn(svc.read_through(req, src, tx));
                }
                ReadType::NoCache => {
                    tokio::spawn(async move {
                        let display =
                            format!("{}/{}", src.location.mount_uri, src.location.relative());
                        if let Err(e) = svc
                            .read_through_inner(&req, &src, &display, false, &tx)
                            .await
                        {
                            let _ = tx.send(Err(e.into())).await;
                        }
                    });
                }
            }
        }
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn write_file(
        &self,
        req: Request<Streaming<proto::WriteFileRequest>>,
    ) -> std::result::Result<Response<proto::WriteFileResponse>, Status> {
        Ok(Response::new(self.0.write_file(req.into_inner()).await?))
    }

    async fn get_metrics(
        &self,
        _req: Request<proto::GetMetricsRequest>,
    ) -> std::result::Result<Response<proto::GetMetricsResponse>, Status> {
        let mut counters = self.0.metrics.snapshot();
        for name in crate::metrics::ALL {
            counters.entry(name.to_string()).or_insert(0);
        }
        counters.extend(self.0.ufs.metrics());
        counters.insert("worker.used_bytes".into(), self.0.store.used());
        counters.insert("worker.capacity_bytes".into(), self.0.store.capacity());
        Ok(Response::new(proto::GetMetricsResponse {
            counters: counters.into_iter().collect(),
        }))
    }
}
