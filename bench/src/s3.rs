//! `s3`: Strata in front of a real S3-compatible server (`moto_server` on
//! loopback), each figure beside the same work done with a plain S3 client in the
//! same run.
//!
//! - Cold read of one object through Strata (the worker reads it through from S3
//!   and caches it) vs a direct `GetObject` of it: the overhead ratio. Then a warm
//!   read of it (from the MEM tier) vs the cold read: the speed-up.
//! - Listing a prefix of many objects through Strata (the first listing loads
//!   them into the namespace; a second compares every page with S3 again; a third
//!   with `--sync-interval -1` reads the namespace only) vs listing the prefix
//!   with `ListObjectsV2` directly; and the peak memory the first listing adds to
//!   this process (master, worker and client run in it).

use crate::{median, mib_s};
use std::time::Instant;
use strata_client::{FileSystem, OpenOptions, SyncInterval};
use strata_common::units::ByteSize;
use strata_tests::moto::Moto;
use strata_tests::{pattern, ClusterOptions, MiniCluster};
use tokio::io::AsyncReadExt;

const BUCKET: &str = "bench";

/// Sets the credentials moto accepts in this process's AWS environment, which the
/// master and worker (in this process) read as daemons do. Call before any other
/// thread exists.
pub fn aws_environment() {
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        std::env::set_var(k, v);
    }
}

/// A named field of this process's `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Resets this process's peak resident memory (`VmHWM`) to its current size.
fn reset_peak_rss() -> anyhow::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")?;
    Ok(())
}

async fn read_strata(fs: &FileSystem, path: &str, buf: &mut [u8]) -> anyhow::Result<u64> {
    let mut r = fs.open(path, OpenOptions::default()).await?;
    let mut n = 0u64;
    loop {
        let k = r.read(buf).await?;
        if k == 0 {
            return Ok(n);
        }
        n += k as u64;
    }
}

async fn get_direct(s3: &aws_sdk_s3::Client, key: &str) -> anyhow::Result<u64> {
    let out = s3.get_object().bucket(BUCKET).key(key).send().await?;
    let mut body = out.body.into_async_read();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = body.read(&mut buf).await?;
        if k == 0 {
            return Ok(n);
        }
        n += k as u64;
    }
}

/// The object read by consecutive ranged GETs of `block` bytes, as a worker reads
/// it through block by block.
async fn get_ranges(
    s3: &aws_sdk_s3::Client,
    key: &str,
    size: u64,
    block: u64,
) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    let mut start = 0;
    while start < size {
        let end = (start + block).min(size) - 1;
        let out = s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .range(format!("bytes={start}-{end}"))
            .send()
            .await?;
        let mut body = out.body.into_async_read();
        loop {
            let k = body.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        start = end + 1;
    }
    Ok(n)
}

async fn list_direct(s3: &aws_sdk_s3::Client, prefix: &str) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .delimiter("/")
            .set_continuation_token(token)
            .send()
            .await?;
        n += page.contents().len() + page.common_prefixes().len();
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return Ok(n),
        }
    }
}

async fn list_strata(fs: &FileSystem, path: &str) -> anyhow::Result<usize> {
    use futures::StreamExt;
    let mut entries = std::pin::pin!(fs.list_stream(path));
    let mut n = 0;
    while let Some(e) = entries.next().await {
        e?;
        n += 1;
    }
    Ok(n)
}

/// Runs both parts: a cold and warm read of a `size` object, and a listing of
/// `objects` objects; `rounds` timed repetitions of each read (median).
pub async fn bench_s3(size: u64, objects: usize, rounds: usize) -> anyhow::Result<()> {
    let moto = Moto::start();
    moto.bucket(BUCKET).await;
    let s3 = moto.client().await;
    let block = 64 << 20;
    let c = MiniCluster::start(ClusterOptions {
        block_size: block,
        mem_quota: size + 2 * block,
        chunk_size: 1 << 20,
        // The first page of a listing waits for the whole folder's sync.
        config: vec![("client.rpc_timeout", "\"30min\"".to_string())],
        ..Default::default()
    })
    .await;
    c.wait_for_workers(1).await;
    c.fs.mount_with_options("/s3", &format!("s3://{BUCKET}"), false, &moto.options())
        .await?;

    // Part 1: one object, cold through Strata vs a direct GET, then warm.
    let data = pattern(size as usize, 11);
    s3.put_object()
        .bucket(BUCKET)
        .key("big.bin")
        .body(data.into())
        .send()
        .await?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut direct, mut ranged, mut cold, mut warm) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let n = get_direct(&s3, "big.bin").await?;
        anyhow::ensure!(n == size, "direct GET {n} of {size}");
        direct.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let n = get_ranges(&s3, "big.bin", size, block).await?;
        anyhow::ensure!(n == size, "ranged GETs {n} of {size}");
        ranged.push(t.elapsed().as_secs_f64());

        // Dropped from the worker before the cold read (the worker drops them at
        // its next heartbeat; a read meanwhile would race the removal).
        let removed = c.worker_counter("worker.blocks_removed").await;
        let freed = c.fs.free("/s3/big.bin").await?;
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while c.worker_counter("worker.blocks_removed").await < removed + freed {
            anyhow::ensure!(Instant::now() < deadline, "freed blocks not removed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let info = c.fs.get_status("/s3/big.bin").await?;
        anyhow::ensure!(
            info.cached_percent == 0,
            "still {}% cached",
            info.cached_percent
        );
        let t = Instant::now();
        let n = read_strata(&c.fs, "/s3/big.bin", &mut buf).await?;
        anyhow::ensure!(n == size, "cold read {n} of {size}");
        cold.push(t.elapsed().as_secs_f64());

        // The worker keeps each block once its last byte is sent: the last one
        // lands just after the read ends.
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let info = c.fs.get_status("/s3/big.bin").await?;
            if info.cached_percent == 100 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {}% cached",
                info.cached_percent
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let t = Instant::now();
        let n = read_strata(&c.fs, "/s3/big.bin", &mut buf).await?;
        anyhow::ensure!(n == size, "warm read {n} of {size}");
        warm.push(t.elapsed().as_secs_f64());
    }
    let (d, r, k, w) = (median(direct), median(ranged), median(cold), median(warm));
    let mibs = |secs: f64| mib_s(size, std::time::Duration::from_secs_f64(secs));
    let line = |what: &str, secs: f64| {
        println!("  {what:<34} {:>9.1} MiB/s  {secs:.3} s", mibs(secs));
    };
    println!(
        "s3 read: one {} object on moto_server, 1MiB reads, median of {rounds} rounds",
        ByteSize(size)
    );
    line("direct GetObject (baseline)", d);
    line(&format!("direct ranged GETs of {}", ByteSize(block)), r);
    line("strata cold (read-through)", k);
    line("strata warm (MEM tier)", w);
    println!("  overhead cold/direct (target <= 1.1) {:>8.3}", k / d);
    println!("  overhead cold/ranged GETs            {:>8.3}", k / r);
    println!("  speed-up warm vs cold                {:>8.1}x", k / w);

    // Part 2: a prefix of many objects.
    let t = Instant::now();
    {
        use futures::StreamExt;
        futures::stream::iter(0..objects)
            .map(|i| {
                let s3 = &s3;
                async move {
                    s3.put_object()
                        .bucket(BUCKET)
                        .key(format!("many/o{i:07}"))
                        .body(b"x".to_vec().into())
                        .send()
                        .await
                }
            })
            .buffer_unordered(64)
            .for_each(|r| {
                if let Err(e) = r {
                    panic!("put: {e:?}");
                }
                async {}
            })
            .await;
    }
    let put_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let n = list_direct(&s3, "many/").await?;
    let direct = t.elapsed().as_secs_f64();
    anyhow::ensure!(n == objects, "direct listing: {n} of {objects}");

    let rss_before = status_bytes("VmRSS:");
    reset_peak_rss()?;
    let t = Instant::now();
    let n = list_strata(&c.fs, "/s3/many").await?;
    let first = t.elapsed().as_secs_f64();
    let peak = status_bytes("VmHWM:");
    anyhow::ensure!(n == objects, "first listing: {n} of {objects}");
    let rss_after = status_bytes("VmRSS:");
    reset_peak_rss()?;
    let t = Instant::now();
    let n = list_strata(&c.fs, "/s3/many").await?;
    let second = t.elapsed().as_secs_f64();
    let second_peak = status_bytes("VmHWM:");
    anyhow::ensure!(n == objects, "second listing: {n} of {objects}");
    let t = Instant::now();
    let n = list_strata(&c.fs.with_sync_interval(SyncInterval::Never), "/s3/many").await?;
    let third = t.elapsed().as_secs_f64();
    anyhow::ensure!(n == objects, "third listing: {n} of {objects}");
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "s3 listing: a prefix of {objects} objects (put by a plain client at {:.0}/s)",
        objects as f64 / put_secs
    );
    println!("  direct ListObjectsV2 (baseline)       {direct:>8.2} s");
    println!(
        "  strata, first (loads them)            {first:>8.2} s  ratio {:.2}",
        first / direct
    );
    println!(
        "  strata, again (compares every page)   {second:>8.2} s  ratio {:.2}",
        second / direct
    );
    println!(
        "  strata, --sync-interval -1            {third:>8.2} s  ratio {:.3}",
        third / direct
    );
    println!(
        "  memory of this process (master, worker, client): {:.0} MiB before, peak {:.0} MiB \
         during the first listing (+{:.0} MiB: the namespace grew by {objects} files), \
         {:.0} MiB after; peak during the second listing {:.0} MiB (+{:.0} MiB)",
        mib(rss_before),
        mib(peak),
        mib(peak.saturating_sub(rss_before)),
        mib(rss_after),
        mib(second_peak),
        mib(second_peak.saturating_sub(rss_after))
    );
    c.stop().await;
    Ok(())
}
