//! `strata-bench`: Strata's benchmarks. Each figure is printed next to a baseline
//! measured in the same run on the same machine, and the ratio is the result (the
//! machines are shared, so absolute numbers drift; ratios drift far less).
//!
//! - `read`: sequential read of a cached file over gRPC vs reading the same bytes
//!   from a local file.
//! - `meta`: getFileStatus and create ops/s with N concurrent clients against one
//!   master, vs a trivial master RPC (the mount table) with the same clients.
//! - `journal`: journaled, fsynced creates/s with 1, 16 and 64 concurrent clients
//!   against one master whose log is on disk, vs the trivial RPC with as many
//!   clients; and the log's fsyncs/s beside them (group commit: many entries share
//!   one fsync).
//! - `group`: entries proposed on the leader of a Raft group of 3 masters (in this
//!   process, over loopback gRPC) vs a group of 1, at 1, 16 and 64 concurrent
//!   proposers: what replication costs.
//! - `scale`: a namespace of `--files` files (one folder): a lone master's memory
//!   (RSS of this process, before vs after), its data on disk, its time from start
//!   to serving (vs reading its data files once); and in a group of 3, the time a
//!   wiped, formatted member takes to catch up through a snapshot (vs copying the
//!   leader's data folder).
//! - `s3`: in front of a real S3-compatible server (`moto_server`): a cold read of
//!   an object through Strata vs a direct GET, warm vs cold, and a listing of a
//!   prefix of `--objects` objects vs a direct listing, with the memory it takes
//!   (see `s3.rs`).

use anyhow::Context;
use clap::Parser;
use std::io::Read;
use std::time::{Duration, Instant};
use strata_client::{CreateOptions, FileSystem, OpenOptions, WriteType};
use strata_common::units::ByteSize;
use strata_master::journal::Journal;
use strata_tests::group::{create_entry, Group};
use strata_tests::{pattern, ClusterOptions, MiniCluster};
use tokio::io::AsyncReadExt;

mod s3;

/// Strata benchmarks.
#[derive(Debug, Parser)]
struct Args {
    /// Size of the file read sequentially.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Timed repetitions of each read; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent clients for the metadata benchmark.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Operations per client per metadata benchmark.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Creates per client count in the journal benchmark.
    #[arg(long, default_value_t = 4000)]
    journal_ops: usize,
    /// Which benchmarks: read, meta, journal, group, scale, s3, or all.
    #[arg(long, default_value = "all")]
    only: String,
    /// Size of the object the s3 benchmark reads.
    #[arg(long, default_value = "256MiB")]
    s3_size: ByteSize,
    /// Objects in the prefix the s3 benchmark lists.
    #[arg(long, default_value_t = 100_000)]
    objects: usize,
    /// Files in the namespace of the scale benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    files: u64,
}

/// This process's resident memory, in bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Bytes of the files below `dir`.
fn tree_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => tree_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Reads every file below `dir` once; the bytes read.
fn read_tree(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            total += read_tree(&p);
        } else if let Ok(mut f) = std::fs::File::open(&p) {
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
    }
    total
}

/// Copies the files below `from` into `to`; the bytes copied.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> u64 {
    let _ = std::fs::create_dir_all(to);
    let mut total = 0;
    for e in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let (p, q) = (e.path(), to.join(e.file_name()));
        if p.is_dir() {
            total += copy_tree(&p, &q);
        } else if let Ok(n) = std::fs::copy(&p, &q) {
            total += n;
        }
    }
    total
}

/// Proposes creates `ids` on `journal` from 64 tasks.
async fn fill(
    journal: &std::sync::Arc<strata_master::journal::RaftJournal>,
    ids: std::ops::Range<u64>,
) {
    let tasks = 64u64;
    let per = (ids.end - ids.start).div_ceil(tasks);
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let j = journal.clone();
            let lo = ids.start + t * per;
            let hi = (lo + per).min(ids.end);
            tokio::spawn(async move {
                for id in lo..hi {
                    if let Err(e) = j.propose(create_entry(id)).await {
                        eprintln!("scale: a create failed: {e}");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.await;
    }
}

async fn bench_scale(args: &Args) -> anyhow::Result<()> {
    let n = args.files;
    println!("scale: a namespace of {n} files in one folder");
    // A lone master: memory, disk, start to serving.
    let rss_before = rss_bytes();
    let mut g = Group::start(1, Duration::from_millis(50)).await;
    let journal = g.leader().await.journal.clone();
    let t = Instant::now();
    fill(&journal, 2..n + 2).await;
    let fill_secs = t.elapsed().as_secs_f64();
    drop(journal);
    let rss_after = rss_bytes();
    let names = g.leader().await.names().len();
    let dir = g
        .meta_dir(1)
        .parent()
        .map(|p| p.to_path_buf())
        .context("member dir")?;
    let disk = tree_bytes(&dir);
    println!(
        "  lone master: {names} files created in {fill_secs:.1} s ({:.0}/s)",
        n as f64 / fill_secs
    );
    println!(
        "  RSS of this process: {:.0} MiB before the master, {:.0} MiB with it and {n} files \
         (master's share {:.0} MiB)",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        rss_after.saturating_sub(rss_before) as f64 / 1048576.0
    );
    println!(
        "  data on disk (metastore, log, snapshots): {:.0} MiB",
        disk as f64 / 1048576.0
    );
    g.stop_member(1).await;
    let t = Instant::now();
    let read = read_tree(&dir);
    let read_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    g.start_member(1).await;
    g.leader().await;
    let serve_secs = t.elapsed().as_secs_f64();
    println!(
        "  start to serving: {serve_secs:.2} s; reading its {:.0} MiB once: {read_secs:.2} s \
         (ratio {:.2})",
        read as f64 / 1048576.0,
        serve_secs / read_secs.max(1e-9)
    );
    g.stop().await;

    // A group of 3: a wiped member catches up through a snapshot.
    let mut g = Group::start(3, Duration::from_millis(50)).await;
    let journal = g.leader().await.journal.clone();
    fill(&journal, 2..n + 2).await;
    let (index, _) = journal.checkpoint().await?;
    drop(journal);
    g.caught_up().await;
    let leader = g.leader().await.id;
    let wiped = g
        .members
        .iter()
        .find(|m| m.id != leader)
        .map(|m| m.id)
        .context("a follower")?;
    g.stop_member(wiped).await;
    g.wipe_member(wiped);
    let leader_dir = g
        .meta_dir(leader)
        .parent()
        .map(|p| p.to_path_buf())
        .context("dir")?;
    let copy_to = tempfile::tempdir()?;
    let t = Instant::now();
    let copied = copy_tree(&leader_dir, copy_to.path());
    let copy_secs = t.elapsed().as_secs_f64();
    drop(copy_to);
    let t = Instant::now();
    g.start_member(wiped).await;
    let member = g
        .members
        .iter()
        .find(|m| m.id == wiped)
        .map(|m| m.journal.clone())
        .context("the member")?;
    while member.status().applied < index {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let catch_up = t.elapsed().as_secs_f64();
    let first = member.status().first_index;
    let how = if first > 1 {
        "through a snapshot"
    } else {
        "from the log"
    };
    println!(
        "  3 masters: a wiped member caught up to entry {index} in {catch_up:.2} s (its log \
         starts at {first}: {how}); copying the leader's {:.0} MiB folder: \
         {copy_secs:.2} s (ratio {:.2})",
        copied as f64 / 1048576.0,
        catch_up / copy_secs.max(1e-9)
    );
    drop(member);
    g.stop().await;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

async fn bench_read(args: &Args) -> anyhow::Result<()> {
    let size = args.size.0;
    let block = 64 << 20;
    let c = MiniCluster::start(ClusterOptions {
        block_size: block,
        mem_quota: size + 2 * block,
        chunk_size: 1 << 20,
        ..Default::default()
    })
    .await;
    // Write the file MUST_CACHE, and the same bytes to a local file.
    let local_dir = tempfile::tempdir()?;
    let local = local_dir.path().join("baseline.bin");
    let piece = pattern(16 << 20, 42);
    let mut w =
        c.fs.create(
            "/bench/read.bin",
            CreateOptions {
                write_type: Some(WriteType::MustCache),
                recursive: true,
                ..Default::default()
            },
        )
        .await?;
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&local)?);
        let mut left = size;
        while left > 0 {
            let n = left.min(piece.len() as u64) as usize;
            w.write(&piece[..n]).await?;
            f.write_all(&piece[..n])?;
            left -= n as u64;
        }
        f.flush()?;
    }
    w.close().await?;
    let info = c.fs.get_status("/bench/read.bin").await?;
    anyhow::ensure!(
        info.cached_percent == 100,
        "file is only {}% cached",
        info.cached_percent
    );

    let mut strata = Vec::new();
    let mut baseline = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..args.rounds {
        // Baseline: the same bytes from a local file (page cache warm after round 1).
        let t = Instant::now();
        let mut f = std::fs::File::open(&local)?;
        let mut n = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        anyhow::ensure!(n == size, "local read {n} of {size}");
        baseline.push(mib_s(n, t.elapsed()));

        let t = Instant::now();
        let mut r = c.fs.open("/bench/read.bin", OpenOptions::default()).await?;
        let mut n = 0u64;
        loop {
            let k = r.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        anyhow::ensure!(n == size, "strata read {n} of {size}");
        strata.push(mib_s(n, t.elapsed()));
    }
    let (s, b) = (median(strata), median(baseline));
    println!(
        "read: sequential, {} cached file, 1MiB reads, median of {} rounds",
        ByteSize(size),
        args.rounds
    );
    println!("  strata gRPC (MEM tier)   {s:>10.1} MiB/s");
    println!("  local file (baseline)    {b:>10.1} MiB/s");
    println!("  ratio strata/local       {:>10.3}", s / b);
    c.stop().await;
    Ok(())
}

/// Runs `op(client, i)` `ops` times on each of `clients` connections at once;
/// returns total ops/s.
async fn concurrent<F, Fut>(clients: &[FileSystem], ops: usize, op: F) -> anyhow::Result<f64>
where
    F: Fn(FileSystem, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (ci, fs) in clients.iter().cloned().enumerate() {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..ops {
                op(fs.clone(), ci, i).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((clients.len() * ops) as f64 / t.elapsed().as_secs_f64())
}

async fn bench_meta(args: &Args) -> anyhow::Result<()> {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(FileSystem::connect(&c.config).await?);
    }
    c.fs.mkdir("/meta/stat", true).await?;
    c.fs.mkdir("/meta/create", true).await?;
    let files = 1000;
    for i in 0..files {
        let w =
            c.fs.create(
                &format!("/meta/stat/f{i}"),
                CreateOptions {
                    write_type: Some(WriteType::MustCache),
                    ..Default::default()
                },
            )
            .await?;
        w.close().await?;
    }
    // Warm-up, so connections are established before timing.
    concurrent(&clients, 50, |fs, _, _| async move {
        fs.mount_table().await?;
        Ok(())
    })
    .await?;
    let noop = concurrent(&clients, args.ops, |fs, _, _| async move {
        fs.mount_table().await?;
        Ok(())
    })
    .await?;
    let stat = concurrent(&clients, args.ops, move |fs, ci, i| async move {
        fs.get_status(&format!("/meta/stat/f{}", (ci * 7919 + i) % files))
            .await
            .context("getFileStatus")?;
        Ok(())
    })
    .await?;
    let create = concurrent(&clients, args.ops / 2, |fs, ci, i| async move {
        let w = fs
            .create(
                &format!("/meta/create/c{ci}-{i}"),
                CreateOptions {
                    write_type: Some(WriteType::MustCache),
                    ..Default::default()
                },
            )
            .await
            .context("createFile")?;
        w.close().await.context("completeFile")?;
        Ok(())
    })
    .await?;
    println!(
        "meta: {} concurrent clients, one master (RocksDB metastore, Raft journal of one)",
        args.clients
    );
    println!("  getFileStatus                 {stat:>10.0} ops/s");
    println!("  create (createFile+complete)  {create:>10.0} ops/s");
    println!("  trivial RPC (baseline)        {noop:>10.0} ops/s");
    println!("  ratio getFileStatus/trivial   {:>10.3}", stat / noop);
    println!("  ratio create/trivial          {:>10.3}", create / noop);
    c.stop().await;
    Ok(())
}

async fn bench_journal(args: &Args) -> anyhow::Result<()> {
    let c = MiniCluster::start(ClusterOptions {
        // Outside any mount: what is measured is the journal, not the under-store
        // lookups a create under a mount makes (metadata sync).
        root_ufs: false,
        ..Default::default()
    })
    .await;
    let master = c.master.as_ref().context("master")?;
    println!(
        "journal: one master, Raft log fsynced in {} (a disk folder), creates are createFile \
         entries outside any mount",
        c.config.journal_dir().display()
    );
    println!(
        "  {:>7} {:>11} {:>11} {:>8} {:>10} {:>13}",
        "clients", "creates/s", "trivial/s", "ratio", "fsyncs/s", "entries/fsync"
    );
    for (round, n) in [1usize, 16, 64].into_iter().enumerate() {
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(FileSystem::connect(&c.config).await?);
        }
        concurrent(&clients, 20, |fs, _, _| async move {
            fs.mount_table().await?;
            Ok(())
        })
        .await?;
        let per_client = (args.journal_ops / n).max(20);
        let noop = concurrent(&clients, per_client, |fs, _, _| async move {
            fs.mount_table().await?;
            Ok(())
        })
        .await?;
        let before = master.journal_status();
        let t = Instant::now();
        let creates = concurrent(&clients, per_client, move |fs, ci, i| async move {
            // The writer is dropped unclosed: one journal entry per create.
            fs.create(
                &format!("/j{round}/c{ci}-{i}"),
                CreateOptions {
                    recursive: true,
                    write_type: Some(WriteType::MustCache),
                    ..Default::default()
                },
            )
            .await
            .context("createFile")?;
            Ok(())
        })
        .await?;
        let secs = t.elapsed().as_secs_f64();
        let after = master.journal_status();
        let syncs = (after.log_syncs - before.log_syncs) as f64;
        let entries = (after.entries_appended - before.entries_appended) as f64;
        println!(
            "  {n:>7} {creates:>11.0} {noop:>11.0} {:>8.3} {:>10.0} {:>13.1}",
            creates / noop,
            syncs / secs,
            entries / syncs.max(1.0)
        );
    }
    c.stop().await;
    Ok(())
}

/// Proposals per second on `group`'s leader from `clients` concurrent tasks, and
/// the leader's log fsyncs per second meanwhile.
async fn group_rate(group: &Group, clients: usize, per_client: usize, first_id: u64) -> (f64, f64) {
    let journal = group.leader().await.journal.clone();
    let before = journal.status();
    let t = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let j = journal.clone();
            tokio::spawn(async move {
                for i in 0..per_client {
                    let id = first_id + (c * per_client + i) as u64;
                    j.propose(create_entry(id)).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        if let Err(e) = t.await.map_err(anyhow::Error::from).and_then(|r| r) {
            eprintln!("group: a proposal failed: {e:#}");
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let after = journal.status();
    let ops = (clients * per_client) as f64 / secs;
    (ops, (after.log_syncs - before.log_syncs) as f64 / secs)
}

async fn bench_group(args: &Args) -> anyhow::Result<()> {
    println!(
        "group: journaled creates/s proposed on the leader, a group of 3 masters (in-process, \
         loopback gRPC, each log fsynced) vs a group of 1, same run"
    );
    println!(
        "  {:>7} {:>10} {:>10} {:>8} {:>12} {:>12}",
        "clients", "1 master/s", "3 masters/s", "ratio", "fsyncs/s (1)", "fsyncs/s (3)"
    );
    let mut next_id = 2u64;
    for clients in [1usize, 16, 64] {
        let per_client = (args.journal_ops / clients).max(20);
        let mut rates = Vec::new();
        for size in [1u64, 3] {
            let g = Group::start(size, Duration::from_millis(50)).await;
            // Warm up: connections made, leader settled.
            group_rate(&g, 1, 20, next_id).await;
            next_id += 20;
            rates.push(group_rate(&g, clients, per_client, next_id).await);
            next_id += (clients * per_client) as u64;
            g.stop().await;
        }
        println!(
            "  {clients:>7} {:>10.0} {:>10.0} {:>8.3} {:>12.0} {:>12.0}",
            rates[0].0,
            rates[1].0,
            rates[1].0 / rates[0].0,
            rates[0].1,
            rates[1].1
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.only == "all" || args.only == "s3" {
        // Before the runtime's threads exist, so none reads the environment
        // while it changes.
        s3::aws_environment();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    strata_common::telemetry::init_logging("warn");
    if args.only == "all" || args.only == "read" {
        bench_read(&args).await?;
    }
    if args.only == "all" || args.only == "meta" {
        bench_meta(&args).await?;
    }
    if args.only == "all" || args.only == "journal" {
        bench_journal(&args).await?;
    }
    if args.only == "all" || args.only == "group" {
        bench_group(&args).await?;
    }
    if args.only == "all" || args.only == "scale" {
        bench_scale(&args).await?;
    }
    if args.only == "all" || args.only == "s3" {
        s3::bench_s3(args.s3_size.0, args.objects, args.rounds).await?;
    }
    Ok(())
}
