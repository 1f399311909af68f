//! Test harness: a mini-cluster of one master and N workers on ephemeral loopback
//! ports, in temporary folders, in this process; and helpers to run the `strata`
//! binary as real processes where a crash or restart must be real.
//!
//! Every folder lives under a `TempDir` and is removed when the cluster drops; MEM
//! tiers go to a temporary folder on `/dev/shm` where it exists, so they are real
//! tmpfs tiers.

pub mod group;
pub mod lazyfs;
pub mod moto;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata_client::FileSystem;
use strata_common::config::{LoadOptions, SiteConfig};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// How to shape a mini-cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Block size of new files.
    pub block_size: u64,
    /// MEM quota of each worker.
    pub mem_quota: u64,
    /// Number of workers.
    pub workers: usize,
    /// Mount a temporary local folder at `/`.
    pub root_ufs: bool,
    /// Bytes in one data message.
    pub chunk_size: u64,
    /// Where the master's mutations stop after their under-store side effect,
    /// when armed.
    pub master_pause: Option<std::sync::Arc<strata_master::oplock::PausePoint>>,
    /// More configuration keys, as `("master.write_lease", "\"1s\"")`.
    pub config: Vec<(&'static str, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            block_size: 64 * 1024,
            mem_quota: 64 << 20,
            workers: 1,
            root_ufs: true,
            chunk_size: 64 * 1024,
            master_pause: None,
            config: Vec::new(),
        }
    }
}

/// One in-process worker.
pub struct TestWorker {
    /// Its handle.
    pub handle: strata_worker::WorkerHandle,
    stop: CancellationToken,
    _data: TempDir,
    _mem: TempDir,
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running mini-cluster.
pub struct MiniCluster {
    /// The master.
    pub master: Option<strata_master::MasterHandle>,
    master_stop: CancellationToken,
    /// The workers.
    pub workers: Vec<TestWorker>,
    /// Configuration clients use.
    pub config: SiteConfig,
    /// A client.
    pub fs: FileSystem,
    root: TempDir,
}

/// A folder for MEM tiers: on tmpfs when the machine has `/dev/shm`.
pub fn mem_tempdir() -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("strata-test-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

/// Configuration for tests: given overrides on top of defaults, fast heartbeats.
pub fn test_config(data_dir: &Path, overrides: &[(&str, String)]) -> SiteConfig {
    let mut all: Vec<(String, String)> = vec![
        (
            "data_dir".into(),
            format!("{:?}", data_dir.display().to_string()),
        ),
        ("master.rpc_port".into(), "0".into()),
        ("worker.rpc_port".into(), "0".into()),
        ("worker.heartbeat_interval".into(), "\"100ms\"".into()),
        ("master.worker_timeout".into(), "\"5s\"".into()),
    ];
    all.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())));
    SiteConfig::load(&LoadOptions {
        file: None,
        use_env: false,
        overrides: all,
    })
    .expect("test configuration")
}

impl MiniCluster {
    /// Starts a master and the workers, and waits until every worker registered.
    pub async fn start(opts: ClusterOptions) -> MiniCluster {
        let root = tempfile::tempdir().expect("temp dir");
        let underfs = root.path().join("underfs");
        std::fs::create_dir_all(&underfs).expect("underfs");
        let root_ufs = if opts.root_ufs {
            format!("{:?}", format!("file://{}", underfs.display()))
        } else {
            "\"\"".to_string()
        };
        let mut keys = vec![
            ("master.root_ufs", root_ufs),
            ("client.block_size", opts.block_size.to_string()),
            ("worker.mem_quota", opts.mem_quota.to_string()),
            ("client.chunk_size", opts.chunk_size.to_string()),
        ];
        keys.extend(opts.config.iter().cloned());
        let mut config = test_config(&root.path().join("master"), &keys);
        let master_stop = CancellationToken::new();
        let master = strata_master::start(strata_master::MasterDeps {
            config: config.clone(),
            shutdown: master_stop.clone(),
            pause_after_under_store: opts.master_pause.clone(),
        })
        .await
        .expect("master starts");
        config.master_addresses = vec![master.addr.to_string()];
        let mut cluster = MiniCluster {
            master: Some(master),
            master_stop,
            workers: Vec::new(),
            fs: FileSystem::connect(&config).await.expect("client"),
            config,
            root,
        };
        for _ in 0..opts.workers {
            cluster.add_worker().await;
        }
        cluster.wait_for_workers(opts.workers).await;
        cluster
    }

    /// Starts one more worker with the cluster's settings.
    pub async fn add_worker(&mut self) {
        let data = tempfile::tempdir_in(self.root.path()).expect("worker dir");
        let mem = mem_tempdir();
        let mut cfg = self.config.clone();
        cfg.data_dir = data.path().to_path_buf();
        cfg.worker.mem_dir = mem.path().to_path_buf();
        let stop = CancellationToken::new();
        let handle = strata_worker::start(strata_worker::WorkerDeps {
            config: cfg,
            shutdown: stop.clone(),
        })
        .await
        .expect("worker starts");
        self.workers.push(TestWorker {
            handle,
            stop,
            _data: data,
            _mem: mem,
        });
    }

    /// Waits until the master lists `n` workers.
    pub async fn wait_for_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.fs.workers().await.map(|w| w.len()).unwrap_or(0) >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} workers did not register in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The folder mounted at `/`.
    pub fn underfs(&self) -> PathBuf {
        self.root.path().join("underfs")
    }

    /// A fresh folder for extra mounts.
    pub fn new_folder(&self, name: &str) -> PathBuf {
        let p = self.root.path().join(name);
        std::fs::create_dir_all(&p).expect("folder");
        p
    }

    /// A worker counter summed over all workers.
    pub async fn worker_counter(&self, name: &str) -> u64 {
        let mut total = 0;
        for w in &self.workers {
            let m = self
                .fs
                .worker_metrics(&w.handle.addr.to_string())
                .await
                .expect("worker metrics");
            total += m.get(name).copied().unwrap_or(0);
        }
        total
    }

    /// Stops everything and waits for it.
    pub async fn stop(mut self) {
        for mut w in self.workers.drain(..) {
            w.stop.cancel();
            let _ = w.handle.wait().await;
        }
        self.master_stop.cancel();
        if let Some(mut m) = self.master.take() {
            let _ = m.wait().await;
        }
    }
}

/// A `strata` daemon running as a child process; killed when dropped.
pub struct Daemon {
    child: Child,
    /// What it printed on stdout up to its "listening" line.
    pub banner: String,
}

impl Daemon {
    /// Runs `strata <args>` and waits for a stdout line containing `ready`.
    pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, &str)], ready: &str) -> Daemon {
        Self::spawn_in(Path::new("."), bin, args, env, ready)
    }

    /// Like [`Daemon::spawn`], in the working directory `cwd`.
    pub fn spawn_in(
        cwd: &Path,
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &str,
    ) -> Daemon {
        use std::io::BufRead;
        let mut cmd = Command::new(bin);
        cmd.current_dir(cwd);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn strata");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // Keeps draining stdout after the banner, so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut banner = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    banner.push_str(&line);
                    banner.push('\n');
                    if line.contains(ready) {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("strata {args:?} did not print {ready:?} in time; printed:\n{banner}");
                }
            }
        }
        Daemon { child, banner }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`, ...).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("process status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Extracts the `host:port` after `word` in a banner line such as
/// `master listening on 127.0.0.1:40123`.
pub fn address_after(banner: &str, word: &str) -> Option<String> {
    banner.lines().find_map(|l| {
        let (_, rest) = l.split_once(word)?;
        Some(rest.split_whitespace().next()?.to_string())
    })
}

/// Names of the entries of a directory, in order.
pub async fn list_names(fs: &FileSystem, path: &str) -> Vec<String> {
    fs.list(path)
        .await
        .unwrap_or_else(|e| panic!("list {path}: {e}"))
        .into_iter()
        .map(|f| f.name().to_string())
        .collect()
}

/// Deterministic test bytes: `len` bytes seeded by `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `data` to `path` (parents made) with `CACHE_THROUGH`, so it is in the
/// under-store too; its file id.
pub async fn write_through(fs: &FileSystem, path: &str, data: &[u8]) -> strata_common::ids::FileId {
    let mut w = fs
        .create(
            path,
            strata_client::CreateOptions {
                recursive: true,
                write_type: Some(strata_client::WriteType::CacheThrough),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    w.write(data).await.expect("write");
    w.close().await.expect("close").id
}

/// A mini-cluster whose master's mutations stop after their under-store step
/// when the returned pause point is armed.
pub async fn paused_cluster() -> (
    MiniCluster,
    std::sync::Arc<strata_master::oplock::PausePoint>,
) {
    let pause = std::sync::Arc::new(strata_master::oplock::PausePoint::default());
    let c = MiniCluster::start(ClusterOptions {
        master_pause: Some(pause.clone()),
        ..Default::default()
    })
    .await;
    (c, pause)
}
