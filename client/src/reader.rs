//! Reading a file: block by block, each streamed from a worker.
//!
//! [`FileReader`] is a `tokio::io::AsyncRead + AsyncSeek`: it holds at most one open
//! block stream, from the current position to the end of that block. A seek drops
//! it; the next read opens a stream at the new position. [`FileReader::read_at`]
//! reads at an offset without moving the position.

use crate::Inner;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
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
    Opening(BoxFuture<'static, Result<BlockStream>>),
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
        Error::Unavailable { .. } => io::ErrorKind::ConnectionRefused,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// Opens a stream of `length` bytes at `offset` of block `index`, trying the
/// candidate workers in order while they are unreachable.
async fn open_block(
    fs: Arc<Inner>,
    blocks: Arc<FileBlocks>,
    read_type: ReadType,
    index: usize,
    offset: u64,
    length: u64,
) -> Result<BlockStream> {
    let b = &blocks.blocks[index];
    let source = blocks.ufs.clone().map(|location| UfsBlockSource {
        location,
        block_start: b.offset,
        block_length: b.length,
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
    let req = ReadBlock {
        block_id: b.block_id,
        offset,
        length,
        read_type,
        source,
    };
    let mut last = None;
    for w in candidates {
        let mut client = fs.worker(&w.rpc_address)?;
        match client
            .read_block(strata_common::proto::ReadBlockRequest::from(req.clone()))
            .await
        {
            Ok(resp) => {
                let stream = resp
                    .into_inner()
                    .map_ok(|c| c.data)
                    .map_err(Error::from)
                    .boxed();
                return Ok(stream);
            }
            Err(status) => {
                let e = Error::from(status);
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
        (None, Some(_)) => Error::unavailable("no worker is registered with the master"),
    })
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
            let mut stream = open_block(
                self.fs.clone(),
                self.blocks.clone(),
                self.read_type,
                index,
                in_block,
                n,
            )
            .await?;
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
                State::Opening(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok(stream)) => {
                        this.state = State::Streaming {
                            stream,
                            buf: Bytes::new(),
                            got_any: false,
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        this.state = State::Idle;
                        return Poll::Ready(Err(io_err(e)));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Idle => {
                    let (index, in_block) = this.locate(this.pos);
                    let length = this.blocks.blocks[index].length - in_block;
                    this.state = State::Opening(Box::pin(open_block(
                        this.fs.clone(),
                        this.blocks.clone(),
                        this.read_type,
                        index,
                        in_block,
                        length,
                    )));
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
