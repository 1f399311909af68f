//! One wrapper around every backend: retries of temporary errors with backoff,
//! a deadline per attempt, and metrics per backend (operations, errors, retries,
//! time spent, bytes read and written), written once rather than per backend.
//!
//! Only calls that can be repeated without changing their outcome are retried:
//! status, list (whole or a page), opening a range, check, mkdirs, delete, discard and publish (a
//! publish retried after it succeeded finds no staged copy, which the master
//! already treats as "look at the path"). A create, a rename (on S3 a copy then a
//! delete, which a retry could find half done) and the bytes of a stream are
//! tried once; the caller decides.

use crate::{
    Capabilities, UfsFingerprint, UfsListing, UfsPage, UfsPath, UfsReader, UfsStatus, UfsWriter,
    UnderStore,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use strata_common::{Error, Result};
use tokio::io::{AsyncRead, ReadBuf};

/// How a wrapped store retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Pause before the first retry; doubled each time, up to `max_backoff`.
    pub backoff: Duration,
    /// Longest pause between two attempts.
    pub max_backoff: Duration,
    /// Longest one attempt of a metadata call may take.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(60),
        }
    }
}

/// Counters of every wrapped store of one process, by backend scheme.
#[derive(Debug, Default)]
pub struct UfsMetrics {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl UfsMetrics {
    fn counter(&self, name: String) -> Arc<AtomicU64> {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.entry(name).or_default().clone()
    }

    fn add(&self, name: String, n: u64) {
        self.counter(name).fetch_add(n, Ordering::Relaxed);
    }

    /// Every counter: `ufs.<scheme>.<op>.{ops,errors,retries,micros}` and
    /// `ufs.<scheme>.bytes_{read,written}`.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A backend wrapped with retries, deadlines and metrics.
#[derive(Debug)]
pub struct Observed {
    inner: Arc<dyn UnderStore>,
    scheme: String,
    policy: RetryPolicy,
    metrics: Arc<UfsMetrics>,
}

impl Observed {
    /// Wraps `inner`, counting into `metrics`.
    pub fn new(inner: Arc<dyn UnderStore>, policy: RetryPolicy, metrics: Arc<UfsMetrics>) -> Self {
        let scheme = match inner.uri().split_once("://") {
            Some((s, _)) => s.to_string(),
            None => "file".to_string(),
        };
        Observed {
            inner,
            scheme,
            policy,
            metrics,
        }
    }

    fn name(&self, op: &str, what: &str) -> String {
        format!("ufs.{}.{op}.{what}", self.scheme)
    }

    /// Runs `call`, retrying temporary errors when `retry`, each attempt within
    /// the policy's deadline; counts it.
    async fn run<T, F, Fut>(&self, op: &str, retry: bool, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let started = Instant::now();
        let mut pause = self.policy.backoff;
        let attempts = if retry {
            self.policy.attempts.max(1)
        } else {
            1
        };
        let mut attempt = 1;
        let result = loop {
            let outcome = match tokio::time::timeout(self.policy.attempt_timeout, call()).await {
                Ok(r) => r,
                Err(_) => Err(Error::UnderStore {
                    path: self.inner.uri().to_string(),
                    reason: format!("{op} took longer than {:?}", self.policy.attempt_timeout),
                    temporary: true,
                }),
            };
            match outcome {
                Err(e) if e.is_temporary() && attempt < attempts => {
                    self.metrics.add(self.name(op, "retries"), 1);
                    tracing::debug!(op, attempt, "under-store call failed, retrying: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.policy.max_backoff);
                    attempt += 1;
                }
                other => break other,
            }
        };
        self.metrics.add(self.name(op, "ops"), 1);
        self.metrics.add(
            self.name(op, "micros"),
            started.elapsed().as_micros() as u64,
        );
        if result.is_err() {
            self.metrics.add(self.name(op, "errors"), 1);
        }
        result
    }
}

#[async_trait]
impl UnderStore for Observed {
    fn uri(&self) -> &str {
        self.inner.uri()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn check(&self) -> Result<()> {
        self.run("check", true, || self.inner.check()).await
    }

    async fn status(&self, path: &UfsPath) -> Result<Option<UfsStatus>> {
        self.run("status", true, || self.inner.status(path)).await
    }

    async fn list(&self, path: &UfsPath) -> Result<UfsListing> {
        self.run("list", true, || self.inner.list(path)).await
    }

    async fn list_page(&self, path: &UfsPath, token: Option<&str>) -> Result<UfsPage> {
        self.run("list_page", true, || self.inner.list_page(path, token))
            .await
    }

    async fn open_range(
        &self,
        path: &UfsPath,
        offset: u64,
        length: u64,
        expect: &UfsFingerprint,
    ) -> Result<UfsReader> {
        let reader = self
            .run("open_range", true, || {
                self.inner.open_range(path, offset, length, expect)
            })
            .await?;
        Ok(Box::pin(Counted {
            inner: reader,
            bytes: self
                .metrics
                .counter(format!("ufs.{}.bytes_read", self.scheme)),
        }))
    }

    async fn create(&self, path: &UfsPath, key: u64) -> Result<Box<dyn UfsWriter>> {
        let w = self
            .run("create", false, || self.inner.create(path, key))
            .await?;
        Ok(Box::new(CountedWriter {
            inner: w,
            bytes: self
                .metrics
                .counter(format!("ufs.{}.bytes_written", self.scheme)),
        }))
    }

    async fn publish(&self, path: &UfsPath, key: u64) -> Result<UfsStatus> {
        self.run("publish", true, || self.inner.publish(path, key))
            .await
    }

    async fn discard_in(&self, dir: &UfsPath, key: u64) -> Result<()> {
        self.run("discard", true, || self.inner.discard_in(dir, key))
            .await
    }

    async fn mkdirs(&self, path: &UfsPath) -> Result<()> {
        self.run("mkdirs", true, || self.inner.mkdirs(path)).await
    }

    async fn delete(&self, path: &UfsPath, recursive: bool) -> Result<()> {
        self.run("delete", true, || self.inner.delete(path, recursive))
            .await
    }

    async fn rename(&self, src: &UfsPath, dst: &UfsPath) -> Result<()> {
        self.run("rename", false, || self.inner.rename(src, dst))
            .await
    }
}

/// A reader that counts the bytes it hands out.
struct Counted {
    inner: UfsReader,
    bytes: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = self.inner.as_mut().poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

/// A writer that counts the bytes it takes.
struct CountedWriter {
    inner: Box<dyn UfsWriter>,
    bytes: Arc<AtomicU64>,
}

#[async_trait]
impl UfsWriter for CountedWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let n = data.len() as u64;
        self.inner.write(data).await?;
        self.bytes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<UfsStatus> {
        self.inner.finish().await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A store whose `status` fails with `error` the first `failures` times.
    #[derive(Debug)]
    struct Flaky {
        failures: AtomicU32,
        temporary: bool,
    }

    #[async_trait]
    impl UnderStore for Flaky {
        fn uri(&self) -> &str {
            "flaky://x"
        }

        fn capabilities(&self) -> Capabilities {
            Capabilities {
                atomic_rename: true,
                real_directories: true,
                ranged_reads: true,
                append: false,
            }
        }
        async fn check(&self) -> Result<()> {
            Ok(())
        }
        async fn status(&self, _: &UfsPath) -> Result<Option<UfsStatus>> {
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(Error::UnderStore {
                    path: "flaky://x".into(),
                    reason: "injected".into(),
                    temporary: self.temporary,
                });
            }
            Ok(None)
        }
        async fn list(&self, _: &UfsPath) -> Result<UfsListing> {
            std::future::pending().await
        }
        async fn open_range(
            &self,
            _: &UfsPath,
            _: u64,
            _: u64,
            _: &UfsFingerprint,
        ) -> Result<UfsReader> {
            Ok(Box::pin(&b"abc"[..]))
        }
        async fn create(&self, _: &UfsPath, _: u64) -> Result<Box<dyn UfsWriter>> {
            Err(Error::unavailable("injected"))
        }
        async fn publish(&self, _: &UfsPath, _: u64) -> Result<UfsStatus> {
            Err(Error::unavailable("injected"))
        }
        async fn discard_in(&self, _: &UfsPath, _: u64) -> Result<()> {
            Ok(())
        }
        async fn mkdirs(&self, _: &UfsPath) -> Result<()> {
            Ok(())
        }
        async fn delete(&self, _: &UfsPath, _: bool) -> Result<()> {
            Ok(())
        }
        async fn rename(&self, _: &UfsPath, _: &UfsPath) -> Result<()> {
            Ok(())
        }
    }

    fn wrapped(failures: u32, temporary: bool) -> (Observed, Arc<UfsMetrics>) {
        let metrics = Arc::new(UfsMetrics::default());
        let policy = RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            attempt_timeout: Duration::from_millis(200),
        };
        let inner = Arc::new(Flaky {
            failures: AtomicU32::new(failures),
            temporary,
        });
        (Observed::new(inner, policy, metrics.clone()), metrics)
    }

    #[tokio::test]
    async fn temporary_errors_are_retried_and_counted() {
        let (s, m) = wrapped(2, true);
        assert!(s.status(&UfsPath::root()).await.unwrap().is_none());
        let got = m.snapshot();
        assert_eq!(got["ufs.flaky.status.retries"], 2);
        assert_eq!(got["ufs.flaky.status.ops"], 1);
        assert!(!got.contains_key("ufs.flaky.status.errors"));
        // More failures than attempts: the last error comes back.
        let (s, m) = wrapped(5, true);
        assert!(s.status(&UfsPath::root()).await.is_err());
        assert_eq!(m.snapshot()["ufs.flaky.status.errors"], 1);
    }

    #[tokio::test]
    async fn permanent_errors_and_unsafe_calls_are_tried_once() {
        let (s, m) = wrapped(1, false);
        assert!(s.status(&UfsPath::root()).await.is_err());
        assert!(!m.snapshot().contains_key("ufs.flaky.status.retries"));
        // A create is never retried, whatever the error.
        assert!(s.create(&UfsPath::root(), 1).await.is_err());
        assert!(!m.snapshot().contains_key("ufs.flaky.create.retries"));
    }

    #[tokio::test]
    async fn an_attempt_past_its_deadline_is_a_temporary_error() {
        let (s, m) = wrapped(0, true);
        let e = s.list(&UfsPath::root()).await.unwrap_err();
        assert!(
            e.is_temporary() && e.to_string().contains("longer than"),
            "{e}"
        );
        assert_eq!(m.snapshot()["ufs.flaky.list.retries"], 2);
    }

    #[tokio::test]
    async fn bytes_read_are_counted() {
        use tokio::io::AsyncReadExt;
        let (s, m) = wrapped(0, true);
        let fp = UfsFingerprint::default();
        let mut r = s.open_range(&UfsPath::root(), 0, 3, &fp).await.unwrap();
        let mut v = Vec::new();
        r.read_to_end(&mut v).await.unwrap();
        assert_eq!(m.snapshot()["ufs.flaky.bytes_read"], 3);
    }
}
