//! Reading a file: block by block, each streamed from a worker.
//!
//! [`FileReader`] is a `tokio::io::AsyncRead + AsyncSeek`: it holds at most one open
//! block stream, from the current position to the end of that block. A seek drops
//! it; the next read opens a stream at the new position. [`FileReader::read_at`]
//! reads at an offset without moving the position.
//!
//! A block read that fails part way (its worker died, stalled past
//! `client.data_timeout`, or ended short) resumes on the next candidate worker from
//! the first byte not yet received, up to three workers per block.

use crate::Inner;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use strata_common::types::{FileBlocks, FileInfo, ReadBlock, ReadType, UfsBlockSource};
use strata_common::{Error, Result};
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};

type BlockStream = BoxStream<'static, Result<Bytes>>;

enum State {
    Idle,
    Streaming {
        stream: BlockStream,
        buf: Bytes,
        got_any: bool,
    },
}

/// An open file.
pub struct FileReader {
    fs: Arc<Inner>,
    blocks: Arc<FileBlocks>,
    read_type: ReadType,
    pos: u64,
    state: State,
}

fn io_err(e: Error) -> io::Error {
    let kind = match &e {
        Error::NotFound { .. } | Error::BlockNotFound { .. } => io::ErrorKind::NotFound,
        Error::InvalidArgument { .. } | Error::InvalidPath { .. } => io::ErrorKind::InvalidInput,
        Error::Unavailable { .. } | Error::NotLeader { .. } => io::ErrorKind::ConnectionRefused,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// Opens a stream of `length` bytes at `offset` of block `index`, trying the
/// candidate workers in order while they are unreachable, skipping those in
/// `skip` (they failed this read already). Returns the stream and its worker.
async fn open_block(
    fs: &Inner,
    blocks: &FileBlocks,
    read_type: ReadType,
    index: usize,
    (offset, length): (u64, u64),
    skip: &[String],
) -> Result<(BlockStream, String)> {
    let b = &blocks.blocks[index];
    let source = blocks.ufs.clone().map(|location| UfsBlockSource {
        location,
        block_start: b.offset,
        block_length: b.length,
        fingerprint: blocks.ufs_fingerprint.clone(),
    });
    let mut candidates = fs.prefer_local(b.workers.clone());
    if source.is_some() {
        let all = fs.worker_list().await?;
        for w in fs.rank_workers(all, b.block_id.0) {
            if !candidates.contains(&w) {
                candidates.push(w);
            }
        }
    }
    candidates.retain(|w| !skip.contains(&w.rpc_address));
    let req = ReadBlock {
        block_id: b.block_id,
        offset,
        length,
        read_type,
        source,
        cluster_id: blocks.cluster_id.clone(),
    };
    let mut last = None;
    for w in candidates {
        let mut client = fs.worker(&w.rpc_address)?;
        let call = client.read_block(strata_common::proto::ReadBlockRequest::from(req.clone()));
        let answer = match tokio::time::timeout(fs.conf.data_timeout.0, call).await {
            Ok(answer) => answer.map_err(Error::from),
            Err(_) => Err(Error::unavailable(format!(
                "worker {} did not answer within {:?}",
                w.rpc_address, fs.conf.data_timeout.0
            ))),
        };
        match answer {
            Ok(resp) => {
                let stream = resp
                    .into_inner()
                    .map_ok(|c| c.data)
                    .map_err(Error::from)
                    .boxed();
                return Ok((stream, w.rpc_address));
            }
            Err(e) => {
                // A worker that lost the block (evicted since the master answered) or
                // cannot be reached: the next candidate may still serve it.
                if !(e.is_temporary() || matches!(e, Error::BlockNotFound { .. })) {
                    return Err(e);
                }
                tracing::debug!(worker = %w.rpc_address, "trying the next worker: {e}");
                last = Some(e);
            }
        }
    }
    Err(match (last, &req.source) {
        (None | Some(Error::BlockNotFound { .. }), None) => Error::NotPermitted {
            path: blocks.info.path.to_string(),
            reason: format!(
                "block {} is in no worker's storage and the file has no under-store copy (written MUST_CACHE, then evicted or its worker lost)",
                b.block_id
            ),
        },
        (Some(e), _) => e,
        (None, Some(_)) if skip.is_empty() => {
            Error::unavailable("no worker is registered with the master")
        }
        (None, Some(_)) => Error::unavailable(format!(
            "every worker that could serve block {} failed during the read",
            b.block_id
        )),
    })
}

/// How many times one block read moves to another worker after a failure.
const BLOCK_READ_ATTEMPTS: usize = 3;

/// One block range being read, resumable: when its worker fails mid-stream (an
/// error, a stall past `data_timeout`, a stream that ends short), the rest is
/// asked of the next candidate worker from the first byte not yet received.
struct BlockRead {
    fs: Arc<Inner>,
    blocks: Arc<FileBlocks>,
    read_type: ReadType,
    index: usize,
    next: u64,
    end: u64,
    stream: Option<(BlockStream, String)>,
    failed: Vec<String>,
    done: bool,
}

impl BlockRead {
    /// The next chunk, `None` at the end of the range (or after an error).
    async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        while !self.done && self.next < self.end {
            let (stream, worker) = match &mut self.stream {
                Some(s) => s,
                None => {
                    let range = (self.next, self.end - self.next);
                    let opened = open_block(
                        &self.fs,
                        &self.blocks,
                        self.read_type,
                        self.index,
                        range,
                        &self.failed,
                    )
                    .await;
                    match opened {
                        Ok(s) => self.stream.insert(s),
                        Err(e) => return self.fail(e),
                    }
                }
            };
            let wait = self.fs.conf.data_timeout.0;
            let failure = match tokio::time::timeout(wait, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    let n = chunk.len() as u64;
                    if n > self.end - self.next {
                        let e = Error::internal(format!(
                            "worker {worker} sent {n} bytes where {} were left of block {}",
                            self.end - self.next,
                            self.index
                        ));
                        return self.fail(e);
                    }
                    self.next += n;
                    return Some(Ok(chunk));
                }
                Ok(Some(Err(e))) if e.is_temporary() => e,
                Ok(Some(Err(e))) => return self.fail(e),
                Ok(None) => Error::unavailable(format!(
                    "worker {worker} ended block {} at byte {} of {}",
                    self.index, self.next, self.end
                )),
                Err(_) => Error::unavailable(format!("worker {worker} sent nothing for {wait:?}")),
            };
            let worker = worker.clone();
            self.stream = None;
            if self.failed.len() + 1 >= BLOCK_READ_ATTEMPTS {
                return self.fail(failure);
            }
            tracing::info!(%worker, block = self.index, at = self.next, "block read moves to another worker: {failure}");
            self.failed.push(worker);
        }
        None
    }

    fn fail(&mut self, e: Error) -> Option<Result<Bytes>> {
        self.done = true;
        self.stream = None;
        Some(Err(e))
    }

    fn into_stream(self) -> BlockStream {
        futures::stream::unfold(self, |mut read| async move {
            let item = read.next_chunk().await?;
            Some((item, read))
        })
        .boxed()
    }
}

/// A stream of `length` bytes at `offset` of block `index`, resumed on another
/// worker if its worker fails.
fn read_block_range(
    fs: Arc<Inner>,
    blocks: Arc<FileBlocks>,
    read_type: ReadType,
    index: usize,
    offset: u64,
    length: u64,
) -> BlockStream {
    BlockRead {
        fs,
        blocks,
        read_type,
        index,
        next: offset,
        end: offset + length,
        stream: None,
        failed: Vec::new(),
        done: false,
    }
    .into_stream()
}

impl FileReader {
    pub(crate) fn new(fs: Arc<Inner>, blocks: FileBlocks, read_type: ReadType) -> Self {
        FileReader {
            fs,
            blocks: Arc::new(blocks),
            read_type,
            pos: 0,
            state: State::Idle,
        }
    }

    /// The file's status as of opening.
    pub fn info(&self) -> &FileInfo {
        &self.blocks.info
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.blocks.info.length
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Block index and offset within it for file offset `pos` (< length).
    fn locate(&self, pos: u64) -> (usize, u64) {
        let bs = self.blocks.info.block_size.max(1);
        let index = (pos / bs) as usize;
        (index, pos - self.blocks.blocks[index].offset)
    }

    /// Reads up to `len` bytes at `offset` without moving the position; fewer only at
    /// the end of the file.
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let end = (offset.saturating_add(len as u64)).min(self.len());
        let mut out = BytesMut::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let (index, in_block) = self.locate(pos);
            let block_len = self.blocks.blocks[index].length;
            let n = (block_len - in_block).min(end - pos);
            let mut stream = read_block_range(
                self.fs.clone(),
                self.blocks.clone(),
                self.read_type,
                index,
                in_block,
                n,
            );
            let mut got = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                got += chunk.len() as u64;
                out.extend_from_slice(&chunk);
            }
            if got != n {
                return Err(Error::internal(format!(
                    "worker sent {got} of {n} bytes of block {index}"
                )));
            }
            pos += n;
        }
        Ok(out.freeze())
    }
}

impl AsyncRead for FileReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos >= this.len() || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match &mut this.state {
                State::Streaming { buf, .. } if !buf.is_empty() => {
                    let n = buf.len().min(out.remaining());
                    out.put_slice(&buf.split_to(n));
                    this.pos += n as u64;
                    return Poll::Ready(Ok(()));
                }
                State::Streaming {
                    stream,
                    buf,
                    got_any,
                } => match stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        *got_any |= !chunk.is_empty();
                        *buf = chunk;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        this.state = State::Idle;
                        return Poll::Ready(Err(io_err(e)));
                    }
                    Poll::Ready(None) => {
                        let progressed = *got_any;
                        this.state = State::Idle;
                        if !progressed {
                            return Poll::Ready(Err(io_err(Error::internal(
                                "worker ended a block stream without data",
                            ))));
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Idle => {
                    let (index, in_block) = this.locate(this.pos);
                    let length = this.blocks.blocks[index].length - in_block;
                    this.state = State::Streaming {
                        stream: read_block_range(
                            this.fs.clone(),
                            this.blocks.clone(),
                            this.read_type,
                            index,
                            in_block,
                            length,
                        ),
                        buf: Bytes::new(),
                        got_any: false,
                    };
                }
            }
        }
    }
}

impl AsyncSeek for FileReader {
    fn start_seek(mut self: Pin<&mut Self>, to: io::SeekFrom) -> io::Result<()> {
        let len = self.len() as i128;
        let target = match to {
            io::SeekFrom::Start(n) => n as i128,
            io::SeekFrom::End(d) => len + d as i128,
            io::SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if target < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            ));
        }
        let target = target.min(u64::MAX as i128) as u64;
        if target != self.pos {
            self.pos = target;
            self.state = State::Idle;
        }
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}
