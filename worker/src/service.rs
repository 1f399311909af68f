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
use crate::MasterLink;
use bytes::{Bytes, BytesMut};
use futures::Stream;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use strata_common::ids::BlockId;
use strata_common::proto::{self, worker_service_server::WorkerService, DATA_CHUNK_BYTES};
use strata_common::types::{ReadBlock, ReadType, UfsBlockSource, WriteFileHeader, WriteType};
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
}

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
                    .send(Err(
                        Error::internal(format!("reading block file: {e}")).into()
                    ))
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
            Err(e) => {
                return Err(Error::UnderStore {
                    path: path.to_string(),
                    reason: e.to_string(),
                    temporary: true,
                })
            }
        }
    }
    Ok(buf.freeze())
}

impl DataService {
    /// Reads the whole block from the under-store, caching it, and sends the
    /// requested range to the client as it passes.
    async fn read_through(
        self: Arc<Self>,
        req: ReadBlock,
        src: UfsBlockSource,
        tx: mpsc::Sender<Chunk>,
    ) {
        let display = format!("{}/{}", src.location.mount_uri, src.location.relative());
        let mut temp = match self.store.begin(src.block_length) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(block = %req.block_id, "not caching read-through block: {e}");
                None
            }
        };
        let result = self
            .read_through_inner(&req, &src, &display, &mut temp, &tx)
            .await;
        match result {
            Ok(()) => {
                // The client has its bytes: end its stream before talking to the master.
                drop(tx);
                if let Some(t) = temp {
                    match self.store.commit(req.block_id, t, false) {
                        Ok(len) => self.master.commit_block(req.block_id, len).await,
                        Err(e) => {
                            tracing::warn!(block = %req.block_id, "caching read-through block failed: {e}")
                        }
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
            }
        }
    }

    async fn read_through_inner(
        &self,
        req: &ReadBlock,
        src: &UfsBlockSource,
        display: &str,
        temp: &mut Option<TempBlock>,
        tx: &mpsc::Sender<Chunk>,
    ) -> Result<()> {
        let ufs = self.ufs.get(&src.location.mount_uri)?;
        let path = UfsPath::from(&src.location);
        let (want_start, want_end) = (req.offset, req.offset + req.length);
        // Without a block to fill, read only what the client wants.
        let (start, len) = if temp.is_some() {
            (0, src.block_length)
        } else {
            (req.offset, req.length)
        };
        let mut reader = ufs.open_range(&path, src.block_start + start, len).await?;
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
                return Ok(());
            }
        }
        if pos != start + len {
            *temp = None;
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
        Ok(())
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
        let mut ufs_writer: Option<Box<dyn UfsWriter>> = match &header.ufs {
            Some(loc) if header.write_type.persists() => {
                let ufs = self.ufs.get(&loc.mount_uri)?;
                Some(ufs.create(&UfsPath::from(loc)).await?)
            }
            _ => None,
        };
        let result = self
            .write_blocks(&header, &mut stream, &mut ufs_writer)
            .await;
        match (result, ufs_writer) {
            (Ok(resp), Some(w)) => {
                w.complete().await?;
                Ok(resp)
            }
            (Ok(resp), None) => Ok(resp),
            (Err(e), Some(w)) => {
                if let Err(abort) = w.abort().await {
                    tracing::warn!("aborting under-store write: {abort}");
                }
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    async fn write_blocks(
        &self,
        h: &WriteFileHeader,
        stream: &mut Streaming<proto::WriteFileRequest>,
        ufs_writer: &mut Option<Box<dyn UfsWriter>>,
    ) -> Result<proto::WriteFileResponse> {
        let mut index = 0u64;
        let mut cur: Option<TempBlock> = None;
        let mut total = 0u64;
        let mut cached = Vec::new();
        let to_cache = self.metrics.counter(BYTES_WRITTEN_CACHE);
        // Storage holds a MUST_CACHE file's only copy: evicting its first blocks to
        // make room for its last would lose it. Better a clear "no space" error.
        let _pin = (h.write_type == WriteType::MustCache).then(|| self.store.pin_file(h.file_id));
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
            total += data.len() as u64;
            if let Some(w) = ufs_writer.as_mut() {
                w.write(data.clone()).await?;
                to_ufs.add(data.len() as u64);
            }
            if !h.write_type.caches() {
                continue;
            }
            let mut rest = &data[..];
            while !rest.is_empty() {
                let t = match cur.as_mut() {
                    Some(t) => t,
                    None => cur.insert(self.store.begin(h.block_size)?),
                };
                let n = ((h.block_size - t.written()) as usize).min(rest.len());
                t.write(&rest[..n])?;
                to_cache.add(n as u64);
                rest = &rest[n..];
                if t.written() == h.block_size {
                    if let Some(full) = cur.take() {
                        cached.push(self.commit(h, index, full).await?);
                    }
                    index += 1;
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
                cached.push(self.commit(h, index, t).await?);
            }
        }
        Ok(proto::WriteFileResponse {
            length: total,
            cached_blocks: cached,
        })
    }

    async fn commit(&self, h: &WriteFileHeader, index: u64, t: TempBlock) -> Result<u64> {
        let id = BlockId::new(h.file_id, index)?;
        let len = self.store.commit(id, t, h.sync)?;
        self.master.commit_block(id, len).await;
        Ok(id.0)
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
        let req = ReadBlock::try_from(req.into_inner())?;
        let svc = self.0.clone();
        let (tx, rx) = mpsc::channel(4);
        if let Some((file, len)) = svc.store.open_block(req.block_id) {
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
            svc.ufs.get(&src.location.mount_uri)?;
            match req.read_type {
                ReadType::Cache => {
                    tokio::spawn(svc.read_through(req, src, tx));
                }
                ReadType::NoCache => {
                    tokio::spawn(async move {
                        let display =
                            format!("{}/{}", src.location.mount_uri, src.location.relative());
                        let mut none = None;
                        if let Err(e) = svc
                            .read_through_inner(&req, &src, &display, &mut none, &tx)
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
        counters.insert("worker.used_bytes".into(), self.0.store.used());
        counters.insert("worker.capacity_bytes".into(), self.0.store.capacity());
        Ok(Response::new(proto::GetMetricsResponse {
            counters: counters.into_iter().collect(),
        }))
    }
}
