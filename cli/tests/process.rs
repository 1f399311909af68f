//! Tests that run the real `strata` binary: a master restarted (cleanly and by
//! SIGKILL) on the same data dir keeps the namespace and the mounts; `strata local`
//! and the README's tour work as written; errors print one line and exit non-zero.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use strata_client::{CreateOptions, FileSystem, OpenOptions, WriteType};
use strata_tests::{address_after, mem_tempdir, pattern, test_config, Daemon};
use tokio::io::AsyncReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// Peak master memory growth allowed while loading, listing (twice), freeing and
/// deleting a 300,000-file folder. Measured on a 2-core, 24 GiB machine: 114 to
/// 166 MiB after the first listing, 182 to 256 MiB at the end, and a plateau from
/// the second listing on (five listings in a row: 237, 240, 240, 242 MiB RSS).
/// What grows is bounded by configuration, not by the folder: RocksDB's memtables
/// (64 MiB) and block cache (32 MiB), the inode and directory-entry caches
/// (`master.inode_cache_entries`, 100,000 each), plus the folder's under-store
/// listing, held while it syncs (about 100 bytes an entry).
const LS_MASTER_GROWTH_MIB: u64 = 320;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn client(master: &str) -> FileSystem {
    let mut cfg = test_config(Path::new("/nonexistent"), &[]);
    cfg.master_addresses = vec![master.to_string()];
    cfg.client.block_size = strata_common::units::ByteSize(64 * 1024);
    FileSystem::connect(&cfg).await.unwrap()
}

async fn read(fs: &FileSystem, path: &str) -> Vec<u8> {
    let mut r = fs.open(path, OpenOptions::default()).await.unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

async fn wait_for_worker(fs: &FileSystem) {
    for _ in 0..200 {
        if fs.workers().await.map(|w| !w.is_empty()).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no worker registered");
}

fn start_master(data: &Path, ufs: &Path, port: u16) -> Daemon {
    start_master_with(data, ufs, port, &[])
}

/// A master with more arguments (`-D key=value` settings).
fn start_master_with(data: &Path, ufs: &Path, port: u16, more: &[&str]) -> Daemon {
    let (port, ufs) = (port.to_string(), format!("file://{}", ufs.display()));
    let mut args = vec![
        "master",
        "--port",
        &port,
        "--data-dir",
        data.to_str().unwrap(),
        "--root-ufs",
        &ufs,
    ];
    args.extend_from_slice(more);
    Daemon::spawn(Path::new(BIN), &args, &[], "master listening on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_restart_keeps_namespace_and_mounts() {
    let root = tempfile::tempdir().unwrap();
    let (mdata, ufs, wdata, lake) = (
        root.path().join("m"),
        root.path().join("ufs"),
        root.path().join("w"),
        root.path().join("lake"),
    );
    for d in [&ufs, &lake] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(lake.join("data.csv"), b"a,b\n1,2\n").unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let master = start_master(&mdata, &ufs, port);
    assert_eq!(address_after(&master.banner, "listening on").unwrap(), addr);
    let mem = mem_tempdir();
    let _worker = start_worker(&wdata, mem.path(), &addr);
    let fs = client(&addr).await;
    wait_for_worker(&fs).await;
    fs.mkdir("/keep/deep/er", true).await.unwrap();
    let data = pattern(200_000, 1);
    for (path, wt) in [
        ("/keep/cached", WriteType::CacheThrough),
        ("/keep/only-cache", WriteType::MustCache),
    ] {
        let mut w = fs
            .create(
                path,
                CreateOptions {
                    write_type: Some(wt),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        w.write(&data).await.unwrap();
        w.close().await.unwrap();
    }
    fs.mount("/lake", lake.to_str().unwrap(), true)
        .await
        .unwrap();
    assert_eq!(read(&fs, "/lake/data.csv").await, b"a,b\n1,2\n");
    let before = fs.list("/keep").await.unwrap();

    // A clean stop, then a crash: both come back with everything acknowledged.
    let status = master.terminate();
    assert!(status.success(), "master exit status {status}");
    let master = start_master(&mdata, &ufs, port);
    check_namespace(&fs, &before, &data).await;
    master.kill();
    let master = start_master(&mdata, &ufs, port);
    check_namespace(&fs, &before, &data).await;
    drop(master);
}

async fn check_namespace(fs: &FileSystem, before: &[strata_client::FileInfo], data: &[u8]) {
    let after = fs.list("/keep").await.unwrap();
    let key = |v: &[strata_client::FileInfo]| {
        v.iter()
            .map(|f| (f.path.to_string(), f.id, f.length, f.persisted, f.kind))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&after), key(before));
    assert!(fs.get_status("/keep/deep/er").await.unwrap().is_dir());
    let mounts = fs.mount_table().await.unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.path.as_str() == "/lake" && m.read_only),
        "{mounts:?}"
    );
    assert_eq!(read(fs, "/lake/data.csv").await, b"a,b\n1,2\n");
    // The worker re-registers with the new master and its cached blocks count again:
    // the MUST_CACHE file, which lives only there, is readable.
    wait_for_worker(fs).await;
    let mut ok = false;
    for _ in 0..100 {
        if fs
            .get_status("/keep/only-cache")
            .await
            .unwrap()
            .cached_percent
            == 100
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "the worker's block report did not reach the restarted master"
    );
    assert_eq!(read(fs, "/keep/only-cache").await, data);
    assert_eq!(read(fs, "/keep/cached").await, data);
}

#[test]
fn errors_print_one_line_and_exit_non_zero() {
    let port = free_port();
    let out = Command::new(BIN)
        .args([
            "fs",
            "--master",
            &format!("127.0.0.1:{port}"),
            "ls",
            "/a//b",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/a//b") && err.contains("empty component"),
        "{err}"
    );

    // A mount option that is not KEY=VALUE is refused before anything is asked.
    let out = Command::new(BIN)
        .args([
            "fs",
            "--master",
            &format!("127.0.0.1:{port}"),
            "mount",
            "--option",
            "s3.region",
            "/s3",
            "s3://bucket",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("KEY=VALUE") && err.contains("s3.region"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["master", "-D", "worker.mem_quota=lots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("worker.mem_quota"), "{err}");
}

/// Extracts the shell lines of the README block that follows `<!-- tour -->`.
fn tour_lines() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let after = readme
        .split("<!-- tour -->")
        .nth(1)
        .expect("README has a tour");
    let block = after.split("```").nth(1).expect("tour code block");
    block
        .lines()
        .skip(1) // the ```sh line's language tag
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn local_cluster_and_readme_tour_work_as_written() {
    let lines = tour_lines();
    assert!(lines.len() >= 15, "tour too short: {lines:?}");
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mem = mem_tempdir();
    let (mp, wp) = (free_port(), free_port());
    let env = [
        ("STRATA_MASTER__RPC_PORT", mp.to_string()),
        ("STRATA_WORKER__RPC_PORT", wp.to_string()),
        ("STRATA_WORKER__MEM_DIR", mem.path().display().to_string()),
        ("STRATA_WORKER__MEM_QUOTA", "256MiB".to_string()),
        ("STRATA_MASTER_ADDRESSES", format!("127.0.0.1:{mp}")),
    ];
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let local = Daemon::spawn_in(home.path(), Path::new(BIN), &["local"], &env_refs, "Stop:");
    assert!(
        local.banner.contains("Strata local cluster is up"),
        "{}",
        local.banner
    );
    assert!(home.path().join("strata-data/underfs").is_dir());
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for line in &lines {
        let out = Command::new("bash")
            .args(["-c", line])
            .current_dir(work.path())
            .env("PATH", &path)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tour line failed: {line}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The report for scripts: this master leads a group of one, and every
    // mutation of the tour was committed and applied.
    let out = Command::new(BIN)
        .args(["fsadmin", "report", "--json"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let master = &report["masters"][0];
    assert_eq!(master["address"], format!("127.0.0.1:{mp}"));
    assert_eq!(report["leader"], format!("127.0.0.1:{mp}"));
    let journal = &master["journal"];
    assert_eq!(journal["role"], "leader", "{report}");
    let applied = journal["applied_index"].as_u64().unwrap();
    assert!(applied > 10, "{report}");
    assert_eq!(journal["last_index"].as_u64(), Some(applied), "{report}");
    assert!(
        journal["commit_index"].as_u64().unwrap() >= applied,
        "{report}"
    );
    assert!(journal["log_syncs"].as_u64().unwrap() > 0, "{report}");
    // The tour took a snapshot of everything applied; asked again, the master
    // answers the same one (nothing was applied since).
    let out = Command::new(BIN)
        .args(["fsadmin", "journal", "checkpoint", "--json"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snap["index"].as_u64(), Some(applied), "{snap}");
    assert_eq!(snap["term"], journal["term"], "{snap}");
    let status = local.terminate();
    assert!(status.success(), "strata local exit status {status}");
    // A master that does not answer is named, and the exit code says so.
    let out = Command::new(BIN)
        .args(["fsadmin", "report"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("does not answer"), "{text}");
}

fn start_worker(wdata: &Path, mem: &Path, master: &str) -> Daemon {
    Daemon::spawn(
        Path::new(BIN),
        &[
            "worker",
            "--port",
            "0",
            "--data-dir",
            wdata.to_str().unwrap(),
            "--master",
            master,
            "-D",
            "worker.heartbeat_interval=\"100ms\"",
            "-D",
            &format!("worker.mem_dir={:?}", mem.display().to_string()),
        ],
        &[],
        "worker listening on",
    )
}

/// The master is formatted (a fresh metastore: inode ids start over) while a worker
/// keeps its warm tier. Blocks cached for the old namespace carry the same ids as
/// the new namespace's first files: they must never be served as those files' bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_then_restart_with_a_warm_worker_serves_the_new_bytes() {
    let root = tempfile::tempdir().unwrap();
    let (m1, m2, u1, u2, wdata) = (
        root.path().join("m1"),
        root.path().join("m2"),
        root.path().join("u1"),
        root.path().join("u2"),
        root.path().join("w"),
    );
    for d in [&u1, &u2] {
        std::fs::create_dir_all(d).unwrap();
    }
    let old = pattern(150_000, 1);
    let new = pattern(150_000, 2);
    std::fs::write(u1.join("f"), &old).unwrap();
    std::fs::write(u2.join("f"), &new).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let master = start_master(&m1, &u1, port);
    let mem = mem_tempdir();
    let _worker = start_worker(&wdata, mem.path(), &addr);
    let fs = client(&addr).await;
    wait_for_worker(&fs).await;
    let first = fs.get_status("/f").await.unwrap();
    assert_eq!(read(&fs, "/f").await, old);
    // Wait until the blocks are cached and known to the master.
    for _ in 0..100 {
        if fs.get_status("/f").await.unwrap().cached_percent == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fs.get_status("/f").await.unwrap().cached_percent, 100);
    master.kill();

    // A new cluster on the same address: the same path gets the same inode id.
    let master = start_master(&m2, &u2, port);
    let second = fs.get_status("/f").await.unwrap();
    assert_eq!(second.id, first.id, "the test needs colliding block ids");
    wait_for_worker(&fs).await;
    assert_eq!(
        fs.get_status("/f").await.unwrap().cached_percent,
        0,
        "the old cluster's blocks must not count for the new one"
    );
    assert_eq!(read(&fs, "/f").await, new);
    drop(master);
}

/// Two workers; the one serving a long read is killed (SIGKILL) part way. The read
/// resumes on the other worker from the byte where it stopped and is byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_read_is_replaced_and_the_read_is_exact() {
    let root = tempfile::tempdir().unwrap();
    let (mdata, ufs) = (root.path().join("m"), root.path().join("ufs"));
    std::fs::create_dir_all(&ufs).unwrap();
    // One block of 24 MiB: more than a stream's flow-control window (8 MiB) plus the
    // chunks in flight, so most of it is still at the worker when it dies.
    let data = pattern(24 << 20, 5);
    std::fs::write(ufs.join("big"), &data).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _master = start_master(&mdata, &ufs, port);
    let mems = [mem_tempdir(), mem_tempdir()];
    let mut workers: Vec<Option<Daemon>> = (0..2)
        .map(|i| {
            Some(start_worker(
                &root.path().join(format!("w{i}")),
                mems[i].path(),
                &addr,
            ))
        })
        .collect();
    let mut cfg = test_config(Path::new("/nonexistent"), &[]);
    cfg.master_addresses = vec![addr.clone()];
    cfg.client.block_size = strata_common::units::ByteSize(32 << 20);
    cfg.client.chunk_size = strata_common::units::ByteSize(64 << 10);
    let fs = FileSystem::connect(&cfg).await.unwrap();
    for _ in 0..200 {
        if fs.workers().await.map(|w| w.len()).unwrap_or(0) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fs.workers().await.unwrap().len(), 2);
    let mut r = fs
        .open(
            "/big",
            OpenOptions {
                read_type: Some(strata_client::ReadType::NoCache),
            },
        )
        .await
        .unwrap();
    // Read the first MiB slowly, then kill whichever worker is serving it.
    let mut got = vec![0u8; 1 << 20];
    r.read_exact(&mut got).await.unwrap();
    let mut serving = None;
    for (i, w) in fs.workers().await.unwrap().iter().enumerate() {
        let m = fs
            .worker_metrics(&w.address.rpc_address)
            .await
            .unwrap_or_default();
        if m.get("worker.bytes_read_ufs").copied().unwrap_or(0) > 0 {
            serving = Some((i, w.address.rpc_address.clone()));
        }
    }
    let (_, serving_addr) = serving.expect("one worker is serving the read");
    for w in workers.iter_mut() {
        let Some(d) = w.as_ref() else { continue };
        if address_after(&d.banner, "listening on").as_deref() == Some(serving_addr.as_str()) {
            w.take().unwrap().kill();
        }
    }
    assert!(
        workers.iter().filter(|w| w.is_some()).count() == 1,
        "killed the serving worker"
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.unwrap();
    got.extend_from_slice(&rest);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the resumed read is byte-exact");
}

/// `strata fs ls` of a mounted folder of 300,000 files: every entry is listed, a
/// page at a time, while the master's peak memory grows by less than a bound that
/// does not depend on the folder's size (the inode cache is bounded; the folder
/// loads in bounded journal entries and is served in bounded pages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_of_a_folder_of_300000_files_works_in_bounded_master_memory() {
    const FILES: usize = 300_000;
    let root = tempfile::tempdir().unwrap();
    let (mdata, ufs) = (root.path().join("m"), root.path().join("ufs"));
    let lake = ufs.join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    for i in 0..FILES {
        std::fs::File::create(lake.join(format!("part-{i:07}"))).unwrap();
    }
    let port = free_port();
    let master = start_master(&mdata, &ufs, port);
    let before = master.status_kib("VmRSS");
    let ls_lake = || {
        Command::new(BIN)
            .args([
                "fs",
                "--master",
                &format!("127.0.0.1:{port}"),
                "ls",
                "/lake",
            ])
            .output()
            .unwrap()
    };
    let out = ls_lake();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut count = 0;
    let mut last = "";
    for line in text.lines() {
        let name = line.rsplit('/').next().unwrap();
        assert!(name > last, "names in order: {last} then {name}");
        last = name;
        count += 1;
    }
    assert_eq!(count, FILES);
    assert_eq!(last, format!("part-{:07}", FILES - 1));
    let peak = master.status_kib("VmHWM");
    let grew_mib = peak.saturating_sub(before) / 1024;
    println!(
        "master RSS before {before} KiB, peak {peak} KiB, grew {grew_mib} MiB for {FILES} files"
    );
    assert!(
        grew_mib < LS_MASTER_GROWTH_MIB,
        "master grew by {grew_mib} MiB listing {FILES} files"
    );
    // A second listing (no load this time) works too and adds no peak.
    let out = ls_lake();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        FILES
    );

    // Freeing and then deleting the folder stay within the same bound: the walk
    // reads a page at a time, and the delete detaches the folder at once and
    // reclaims its inodes in bounded batches afterwards.
    let fs_cmd = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["fs", "--master", &format!("127.0.0.1:{port}")])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    fs_cmd(&["free", "/lake"]);
    println!("master peak after free: {} KiB", master.status_kib("VmHWM"));
    fs_cmd(&["rm", "-R", "/lake"]);
    assert!(!lake.exists(), "the under-store folder is gone");
    let peak = master.status_kib("VmHWM");
    let grew_mib = peak.saturating_sub(before) / 1024;
    println!("master peak after free and rm -R: {peak} KiB, grew {grew_mib} MiB");
    assert!(
        grew_mib < LS_MASTER_GROWTH_MIB,
        "master grew by {grew_mib} MiB freeing and deleting {FILES} files"
    );
    let fs = client(&format!("127.0.0.1:{port}")).await;
    assert!(!fs.exists("/lake").await.unwrap());

    // The master is killed (SIGKILL) while it reclaims, again and again: each
    // restart resumes where the last one stopped, and the store ends with nothing
    // of the folder left.
    master.kill();
    let metastore = mdata.join("master").join("metastore");
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let mut restarts = 0;
    loop {
        let store = strata_master::store::MetaStore::open(&metastore, 1000).unwrap();
        let left = store.detached_roots(1).unwrap();
        if left.is_empty() {
            let inodes = store
                .dump()
                .unwrap()
                .into_iter()
                .filter(|(cf, _, _)| cf == "inodes")
                .count();
            assert_eq!(inodes, 1, "only the root is left");
            break;
        }
        drop(store);
        assert!(
            std::time::Instant::now() < deadline,
            "reclaim did not finish after {restarts} restarts"
        );
        let master = start_master(&mdata, &ufs, port);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        master.kill();
        restarts += 1;
    }
    println!("reclaimed {FILES} inodes across {restarts} master restarts");
}

/// Files in `dir` (not below it).
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// A `strata fs copyFromLocal` process is killed (SIGKILL) part way through a
/// `CACHE_THROUGH` copy, and the master is restarted after it. The restarted
/// master grants the incomplete file a fresh lease; nobody renews it, and once it
/// runs out the file, its staged under-store copy and its blocks are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_process_is_cleaned_up_after_a_master_restart() {
    let root = tempfile::tempdir().unwrap();
    let (mdata, ufs, wdata) = (
        root.path().join("m"),
        root.path().join("ufs"),
        root.path().join("w"),
    );
    std::fs::create_dir_all(&ufs).unwrap();
    let lease = ["-D", "master.write_lease=\"2s\""];
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let master = start_master_with(&mdata, &ufs, port, &lease);
    let mem = mem_tempdir();
    let _worker = start_worker(&wdata, mem.path(), &addr);
    let fs = client(&addr).await;
    wait_for_worker(&fs).await;

    // The copy reads a FIFO that this test feeds, so it is mid-stream for as long
    // as the test wants.
    let fifo = root.path().join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut copy = Command::new(BIN)
        .args(["fs", "--master", &addr, "copyFromLocal", "--write-type"])
        .args(["CACHE_THROUGH", fifo.to_str().unwrap(), "/victim"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let feed = fifo.clone();
    let pipe = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut pipe = std::fs::OpenOptions::new().write(true).open(feed).unwrap();
        pipe.write_all(&pattern(3 << 20, 11)).unwrap();
        pipe
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while files_in(&ufs).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no staged copy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let staged = files_in(&ufs);
    assert!(
        staged.len() == 1 && staged[0].ends_with(".strata-tmp"),
        "{staged:?}"
    );
    assert!(!fs.get_status("/victim").await.unwrap().complete);
    copy.kill().unwrap();
    copy.wait().unwrap();
    drop(pipe);

    assert!(master.terminate().success());
    let master = start_master_with(&mdata, &ufs, port, &lease);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let exists = fs.exists("/victim").await;
        if matches!(exists, Ok(false)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the killed writer's file outlived its lease: {exists:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(files_in(&ufs), Vec::<String>::new());
    wait_for_worker(&fs).await;
    let blocks: u64 = fs
        .workers()
        .await
        .unwrap()
        .iter()
        .map(|w| w.block_count)
        .sum();
    assert_eq!(blocks, 0);
    drop(master);
}

/// Three `strata master` processes on 127.0.0.1-3 (one Raft group), the leader
/// found by asking each one for itself.
struct Group {
    masters: Vec<Option<Daemon>>,
    dirs: Vec<std::path::PathBuf>,
    ufs: std::path::PathBuf,
    rpc_port: u16,
    raft_port: u16,
}

impl Group {
    fn address(&self, i: usize) -> String {
        format!("127.0.0.{}:{}", i + 1, self.rpc_port)
    }

    /// Three masters with their folders under `root`, all started.
    fn start_all(root: &Path) -> Group {
        let ufs = root.join("ufs");
        std::fs::create_dir_all(&ufs).unwrap();
        let mut g = Group {
            masters: vec![None, None, None],
            dirs: (1..=3).map(|i| root.join(format!("m{i}"))).collect(),
            ufs,
            rpc_port: free_port(),
            raft_port: free_port(),
        };
        for i in 0..3 {
            g.start(i);
        }
        g
    }

    /// Stops every master and checks the three state machines are identical.
    fn stop_and_compare(&mut self) {
        for m in self.masters.iter_mut() {
            let status = m.take().unwrap().terminate();
            assert!(status.success(), "{status}");
        }
        let dumps: Vec<_> = self
            .dirs
            .iter()
            .map(|d| {
                strata_master::store::MetaStore::open(&d.join("master").join("metastore"), 10)
                    .unwrap()
                    .dump()
                    .unwrap()
            })
            .collect();
        assert!(
            dumps[0] == dumps[1] && dumps[1] == dumps[2],
            "identical state machines"
        );
    }

    fn start(&mut self, i: usize) {
        let peers: Vec<String> = (1..=3)
            .map(|id| format!("\"{id}@127.0.0.{id}:{}\"", self.raft_port))
            .collect();
        let settings = [
            format!("master.id={}", i + 1),
            format!("master.bind_host=127.0.0.{}", i + 1),
            format!("master.raft_port={}", self.raft_port),
            format!("master.peers=[{}]", peers.join(",")),
        ];
        let mut more = Vec::new();
        for s in &settings {
            more.push("-D");
            more.push(s.as_str());
        }
        self.masters[i] = Some(start_master_with(
            &self.dirs[i],
            &self.ufs,
            self.rpc_port,
            &more,
        ));
    }

    /// The index of the master that serves, once one does.
    async fn leader(&self) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            for i in 0..3 {
                if self.masters[i].is_none() {
                    continue;
                }
                let asked = async {
                    let mut c = strata_common::proto::file_system_master_client::FileSystemMasterClient::connect(
                        format!("http://{}", self.address(i)),
                    )
                    .await
                    .ok()?;
                    c.get_mount_table(strata_common::proto::GetMountTableRequest {})
                        .await
                        .ok()
                };
                if asked.await.is_some() {
                    return i;
                }
            }
            assert!(std::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Eight clients create files as fast as they can, each recording what was
/// acknowledged; the leader of three masters is killed with SIGKILL part way.
/// Every acknowledged file exists afterwards; the old leader rejoins and the three
/// state machines are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_of_three_masters_loses_no_acknowledged_create() {
    kill_one_of_three(true).await;
}

/// The same with a follower killed: the two others go on, and it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_follower_of_three_masters_loses_no_acknowledged_create() {
    kill_one_of_three(false).await;
}

async fn kill_one_of_three(kill_leader: bool) {
    let root = tempfile::tempdir().unwrap();
    let mut g = Group::start_all(root.path());
    let leader = g.leader().await;

    let mut cfg = test_config(Path::new("/nonexistent"), &[]);
    cfg.master_addresses = (0..3).map(|i| g.address(i)).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let fs = FileSystem::connect(&cfg).await.unwrap();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut acked, mut unknown, mut last_ack) = (Vec::new(), 0usize, None);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let path = format!("/c{c}-{i}");
                i += 1;
                let made = async {
                    let w = fs
                        .create(
                            &path,
                            CreateOptions {
                                write_type: Some(WriteType::MustCache),
                                ..Default::default()
                            },
                        )
                        .await?;
                    w.close().await
                };
                match made.await {
                    Ok(_) => {
                        acked.push(path);
                        last_ack = Some(std::time::Instant::now());
                    }
                    // Retries carry the request's id through the failover, so
                    // none should end here; counted, and checked below.
                    Err(_) => {
                        unknown += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (acked, unknown, last_ack)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = std::time::Instant::now();
    let victim = if kill_leader {
        leader
    } else {
        (leader + 1) % 3
    };
    g.masters[victim].take().unwrap().kill();
    let new_leader = g.leader().await;
    let serving_after = killed_at.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (mut acked, mut unknown) = (Vec::new(), 0);
    let mut after_kill = 0;
    for c in clients {
        let (a, u, last) = c.await.unwrap();
        if last.is_some_and(|t| t > killed_at) {
            after_kill += 1;
        }
        acked.extend(a);
        unknown += u;
    }
    let killed = if kill_leader { "leader" } else { "follower" };
    println!(
        "three masters: {killed} killed; a leader served after {serving_after:?}; \
         {} creates acknowledged, {unknown} with an unknown outcome",
        acked.len()
    );
    assert_eq!(after_kill, 8, "every client went on after the kill");
    assert_eq!(
        unknown, 0,
        "a create failed: retries with request ids go through a failover"
    );

    let fs = FileSystem::connect(&cfg).await.unwrap();
    let mut names = std::collections::HashSet::new();
    let mut after = String::new();
    loop {
        let page = fs.list_page("/", &after, 1000).await.unwrap();
        for e in &page.entries {
            assert!(names.insert(e.path.to_string()), "{} listed twice", e.path);
        }
        if !page.more {
            break;
        }
        after = page.cursor;
    }
    for p in &acked {
        assert!(names.contains(p), "{p} was acknowledged and is gone");
    }
    // Exactly the acknowledged files: none lost, none made twice by a retry.
    assert_eq!(names.len(), acked.len());

    // The killed master comes back and catches up; then every master stops and the
    // three state machines are compared.
    g.start(victim);
    let reports = || async {
        strata_client::admin::journal_reports(&cfg)
            .await
            .into_iter()
            .map(|(_, r)| r.map(|r| r.applied_index).unwrap_or(0))
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let applied = reports().await;
        if applied.iter().all(|a| *a == applied[new_leader] && *a > 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not caught up: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    g.stop_and_compare();
}

/// A master of three is stopped, its data erased with `strata format`, and
/// started again: it receives the leader's snapshot (the others still believe
/// it holds everything), catches up, and the three metastores are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_formatted_master_rejoins_its_group_through_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let mut g = Group::start_all(root.path());
    let leader = g.leader().await;
    let mut cfg = test_config(Path::new("/nonexistent"), &[]);
    cfg.master_addresses = (0..3).map(|i| g.address(i)).collect();
    let fs = FileSystem::connect(&cfg).await.unwrap();
    for i in 0..200 {
        fs.mkdir(&format!("/d{i}"), false).await.unwrap();
    }
    let formatted = (leader + 1) % 3;
    let status = g.masters[formatted].take().unwrap().terminate();
    assert!(status.success(), "{status}");
    let out = Command::new(BIN)
        .args(["format", "--data-dir", g.dirs[formatted].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Formatted journal") && said.contains("Formatted metastore"),
        "{said}"
    );
    g.start(formatted);

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reports = strata_client::admin::journal_reports(&cfg).await;
        let applied: Vec<u64> = reports
            .iter()
            .map(|(_, r)| r.as_ref().map(|r| r.applied_index).unwrap_or(0))
            .collect();
        let first = reports[formatted]
            .1
            .as_ref()
            .map(|r| r.first_index)
            .unwrap_or(0);
        if applied.iter().all(|a| *a == applied[leader] && *a > 0) {
            assert!(
                first > 1,
                "it caught up through a snapshot, not from entry 1"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not caught up: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(strata_tests::list_names(&fs, "/").await.len(), 200);
    g.stop_and_compare();
}
