//! Writing a file: one stream to one worker, which cuts the bytes into blocks it
//! caches and/or writes through to the under-store, per the write type.

use crate::Inner;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use strata_common::proto::{self, write_file_request::Msg};
use strata_common::types::{FileInfo, UfsFingerprint, UfsLocation, WriteFileHeader, WriteType};
use strata_common::{Error, Result};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the master answered to a create.
pub(crate) struct Created {
    pub(crate) info: FileInfo,
    pub(crate) ufs: Option<UfsLocation>,
    pub(crate) cluster_id: String,
    /// The write lease the master granted; `None` if it named none.
    pub(crate) lease: Option<Duration>,
}

/// Longest lease the writer takes from the wire at face value (a week, as the
/// master's own limit); the shortest is 100ms.
const LEASE_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=7 * 24 * 3600 * 1000;

/// The lease a `lease_ms` from the master describes.
pub(crate) fn lease_of(lease_ms: u64) -> Option<Duration> {
    (lease_ms != 0).then(|| {
        Duration::from_millis(lease_ms.clamp(*LEASE_RANGE_MS.start(), *LEASE_RANGE_MS.end()))
    })
}

/// Renews file `id`'s write lease three times per lease until aborted; sets `lost`
/// when the master says the file is no longer being written. Each call may take
/// at most a third of the lease, and a failed one is retried after a ninth, so
/// one lost or hung answer does not lose the lease.
fn renew(fs: Arc<Inner>, id: u64, lease: Duration, lost: Arc<AtomicBool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = lease / 3;
        let mut wait = every;
        loop {
            tokio::time::sleep(wait).await;
            let renewed = fs
                .on_master(true, |mut m| {
                    let mut req =
                        tonic::Request::new(proto::RenewLeaseRequest { file_ids: vec![id] });
                    req.set_timeout(every);
                    async move { m.renew_lease(req).await }
                })
                .await;
            match renewed {
                Ok(r) if r.get_ref().lost.contains(&id) => {
                    lost.store(true, Ordering::Release);
                    return;
                }
                Ok(_) => wait = every,
                Err(e) => {
                    tracing::debug!(file_id = id, "lease renewal failed: {e}");
                    wait = every / 3;
                }
            }
        }
    })
}

struct Stream {
    tx: mpsc::Sender<proto::WriteFileRequest>,
    call: JoinHandle<Result<proto::WriteFileResponse>>,
}

/// A file being written. Call [`FileWriter::close`]: a writer dropped without it
/// aborts the write on the worker (nothing reaches storage or the under-store) and
/// leaves the file incomplete (unreadable) until it is deleted, or until its write
/// lease runs out (`master.write_lease`) and the master deletes it. A live writer
/// renews its lease in the background, however long it stays open.
pub struct FileWriter {
    fs: Arc<Inner>,
    info: FileInfo,
    write_type: WriteType,
    ufs: Option<UfsLocation>,
    cluster_id: String,
    stream: Option<Stream>,
    buf: BytesMut,
    written: u64,
    failed: bool,
    lease_lost: Arc<AtomicBool>,
    renewal: Option<JoinHandle<()>>,
    lease: Option<Duration>,
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
    }
}

impl FileWriter {
    pub(crate) fn new(fs: Arc<Inner>, created: Created, write_type: WriteType) -> Self {
        let lease_lost = Arc::new(AtomicBool::new(false));
        let renewal = created
            .lease
            .map(|lease| renew(fs.clone(), created.info.id.0, lease, lease_lost.clone()));
        FileWriter {
            lease_lost,
            renewal,
            lease: created.lease,
            fs,
            info: created.info,
            write_type,
            ufs: created.ufs,
            cluster_id: created.cluster_id,
            stream: None,
            buf: BytesMut::new(),
            written: 0,
            failed: false,
        }
    }

    /// The file as created (incomplete until closed).
    pub fn info(&self) -> &FileInfo {
        &self.info
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    async fn open_stream(&mut self) -> Result<()> {
        let workers = self.fs.worker_list().await?;
        let worker = self
            .fs
            .rank_workers(workers, self.info.id.0)
            .into_iter()
            .next()
            .ok_or_else(|| Error::unavailable("no worker is registered with the master"))?;
        let mut client = self.fs.worker(&worker.rpc_address)?;
        let (tx, rx) = mpsc::channel(4);
        let header = WriteFileHeader {
            file_id: self.info.id,
            block_size: self.info.block_size,
            write_type: self.write_type,
            ufs: self.ufs.clone(),
            sync: false,
            cluster_id: self.cluster_id.clone(),
        };
        tx.send(proto::WriteFileRequest {
            msg: Some(Msg::Header(header.into())),
        })
        .await
        .map_err(|_| Error::internal("write stream closed before it started"))?;
        let call = tokio::spawn(async move {
            let resp = client
                .write_file(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?;
            Ok(resp.into_inner())
        });
        self.stream = Some(Stream { tx, call });
        Ok(())
    }

    async fn send(&mut self, data: Bytes) -> Result<()> {
        if self.stream.is_none() {
            self.open_stream().await?;
        }
        self.send_msg(proto::WriteFileRequest {
            msg: Some(Msg::Data(data)),
        })
        .await
    }

    async fn send_msg(&mut self, msg: proto::WriteFileRequest) -> Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(Error::internal("write stream missing"));
        };
        if stream.tx.send(msg).await.is_ok() {
            return Ok(());
        }
        // The worker ended the call: its answer says why.
        let Some(stream) = self.stream.take() else {
            return Err(Error::internal("write stream missing"));
        };
        match stream.call.await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(Error::internal("worker ended the write early")),
            Err(e) => Err(Error::internal(e)),
        }
    }

    /// Why the file can no longer be written, if it cannot.
    fn check_usable(&self) -> Result<()> {
        if self.lease_lost.load(Ordering::Acquire) {
            return Err(Error::NotPermitted {
                path: self.info.path.to_string(),
                reason: "its write lease was lost (the master did not hear from this \
                         writer within master.write_lease, or the file was deleted)"
                    .into(),
            });
        }
        if self.failed {
            return Err(Error::NotPermitted {
                path: self.info.path.to_string(),
                reason: "an earlier write failed; the file is abandoned".into(),
            });
        }
        Ok(())
    }

    /// Appends bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.check_usable()?;
        let chunk = self.fs.conf.chunk_size.0 as usize;
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        while self.buf.len() >= chunk {
            let piece = self.buf.split_to(chunk).freeze();
            if let Err(e) = self.send(piece).await {
                return Err(self.fail(e).await);
            }
        }
        Ok(())
    }

    /// Records the failure and removes the incomplete file, best effort.
    async fn fail(&mut self, e: Error) -> Error {
        self.failed = true;
        self.stream = None;
        let req = proto::DeleteRequest {
            path: self.info.path.to_string(),
            recursive: false,
            file_id: self.info.id.0,
            request: None,
        };
        let deleted = self
            .fs
            .on_master(false, |mut m| {
                let req = req.clone();
                async move { m.delete(req).await }
            })
            .await;
        if let Err(del) = deleted {
            tracing::warn!(path = %self.info.path, "cannot remove the abandoned file: {del}");
        }
        e
    }

    /// Sends what is buffered, waits until the worker has everything where the write
    /// type says, and completes the file. Returns the completed file's status.
    ///
    /// If the bytes cannot be stored the incomplete file is removed. Once the master
    /// has been asked to complete the file it is never removed: a failure of that
    /// call is returned as it is, and the file's status tells whether it completed.
    ///
    /// Completing is idempotent on the master, so a temporary failure of that call
    /// (a lost answer, a master restarting) is retried.
    pub async fn close(mut self) -> Result<FileInfo> {
        let ufs_fingerprint = match self.finish_data().await {
            Ok(f) => f,
            Err(e) => return Err(self.fail(e).await),
        };
        let req = proto::CompleteFileRequest {
            file_id: self.info.id.0,
            length: self.written,
            persisted: self.write_type.persists(),
            ufs_fingerprint: ufs_fingerprint.map(Into::into),
            ufs: self
                .ufs
                .clone()
                .filter(|_| self.write_type.persists())
                .map(Into::into),
        };
        // Temporary failures (a master restarting, a lost answer) are retried for
        // up to one lease (at least 30 s, at most 5 minutes) while the lease is
        // renewed: a file whose bytes were all stored is not given up lightly.
        let patience = self
            .lease
            .unwrap_or_default()
            .clamp(Duration::from_secs(30), Duration::from_secs(300));
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Duration::from_millis(100);
        let resp = loop {
            let completed = self
                .fs
                .on_master(true, |mut m| {
                    let req = req.clone();
                    async move { m.complete_file(req).await }
                })
                .await;
            match completed {
                Ok(r) => break r.into_inner(),
                Err(e) => {
                    if !e.is_temporary() || tokio::time::Instant::now() + backoff > deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        resp.info
            .ok_or_else(|| Error::internal("master answered without info"))?
            .try_into()
    }

    /// Ends the data stream; returns the under-store copy's fingerprint when the
    /// write persists.
    async fn finish_data(&mut self) -> Result<Option<UfsFingerprint>> {
        self.check_usable()?;
        if !self.buf.is_empty() {
            let rest = self.buf.split().freeze();
            self.send(rest).await?;
        }
        // An empty file that is not persisted needs no worker at all.
        if self.stream.is_none() && self.write_type.persists() {
            self.open_stream().await?;
        }
        if self.stream.is_some() {
            let end = proto::WriteFileRequest {
                msg: Some(Msg::End(proto::WriteFileEnd {
                    length: self.written,
                })),
            };
            self.send_msg(end).await?;
        }
        let mut fingerprint = None;
        if let Some(Stream { tx, call }) = self.stream.take() {
            drop(tx);
            let resp = call.await.map_err(Error::internal)??;
            if resp.length != self.written {
                return Err(Error::internal(format!(
                    "worker stored {} bytes of {}",
                    resp.length, self.written
                )));
            }
            fingerprint = resp
                .ufs_fingerprint
                .map(UfsFingerprint::try_from)
                .transpose()?;
        }
        if self.write_type.persists() && fingerprint.is_none() {
            return Err(Error::internal(
                "worker persisted the file without saying what it wrote",
            ));
        }
        Ok(fingerprint)
    }
}
