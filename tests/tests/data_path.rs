//! End-to-end data path: writes of every type and size read back byte-exact,
//! read-through and caching of files dropped into a mounted folder, eviction.

use strata_client::{CreateOptions, Error, FileSystem, OpenOptions, ReadType, WriteType};
use strata_tests::{list_names, pattern, ClusterOptions, MiniCluster};
use strata_worker::metrics::{BLOCKS_EVICTED, BYTES_READ_CACHE, BYTES_READ_UFS};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const BS: u64 = 64 * 1024;

async fn write_file(fs: &FileSystem, path: &str, data: &[u8], wt: WriteType) {
    let mut w = fs
        .create(
            path,
            CreateOptions {
                write_type: Some(wt),
                recursive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
    // Uneven pieces, so chunk and block boundaries fall mid-write.
    for piece in data.chunks(10_007) {
        w.write(piece).await.unwrap();
    }
    let info = w.close().await.unwrap();
    assert_eq!(info.length, data.len() as u64);
    assert!(info.complete);
    assert_eq!(info.persisted, wt.persists());
}

async fn read_all(fs: &FileSystem, path: &str, rt: ReadType) -> Vec<u8> {
    let mut r = fs
        .open(
            path,
            OpenOptions {
                read_type: Some(rt),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_write_type_and_size_reads_back_exactly() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let sizes = [0, 1, BS - 1, BS, BS + 1, 3 * BS + 17];
    for wt in [
        WriteType::MustCache,
        WriteType::CacheThrough,
        WriteType::Through,
    ] {
        for (i, &n) in sizes.iter().enumerate() {
            let path = format!("/rt/{wt}/f{i}");
            let data = pattern(n as usize, n + i as u64);
            write_file(&c.fs, &path, &data, wt).await;
            assert_eq!(
                read_all(&c.fs, &path, ReadType::Cache).await,
                data,
                "{path}"
            );
            assert_eq!(
                read_all(&c.fs, &path, ReadType::NoCache).await,
                data,
                "{path}"
            );
            let st = c.fs.get_status(&path).await.unwrap();
            assert_eq!(st.length, n);
            let in_ufs = c.underfs().join(format!("rt/{wt}/f{i}"));
            if wt.persists() {
                assert_eq!(
                    std::fs::read(&in_ufs).unwrap(),
                    data,
                    "{}",
                    in_ufs.display()
                );
            } else {
                assert!(
                    !in_ufs.exists(),
                    "{} must not be persisted",
                    in_ufs.display()
                );
            }
        }
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positioned_reads_and_seeks() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let data = pattern((4 * BS + 100) as usize, 9);
    write_file(&c.fs, "/p/f", &data, WriteType::CacheThrough).await;
    let mut r = c.fs.open("/p/f", OpenOptions::default()).await.unwrap();
    for (off, len) in [
        (0u64, 10usize),
        (BS - 3, 6),
        (2 * BS, BS as usize * 2),
        (4 * BS + 90, 50),
    ] {
        let got = r.read_at(off, len).await.unwrap();
        let end = (off as usize + len).min(data.len());
        assert_eq!(&got[..], &data[off as usize..end], "read_at({off}, {len})");
    }
    r.seek(std::io::SeekFrom::Start(BS + 5)).await.unwrap();
    let mut buf = vec![0u8; 1000];
    r.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf[..], &data[(BS + 5) as usize..(BS + 1005) as usize]);
    r.seek(std::io::SeekFrom::End(-7)).await.unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).await.unwrap();
    assert_eq!(&tail[..], &data[data.len() - 7..]);
    assert!(r
        .seek(std::io::SeekFrom::Current(-(data.len() as i64) - 1))
        .await
        .is_err());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_dropped_into_mount_is_read_through_then_cached() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let lake = c.new_folder("lake");
    let data = pattern((2 * BS + 333) as usize, 77);
    std::fs::create_dir_all(lake.join("day=1")).unwrap();
    std::fs::write(lake.join("day=1/part-0.bin"), &data).unwrap();
    c.fs.mount("/lake", &format!("file://{}", lake.display()), false)
        .await
        .unwrap();

    let names = list_names(&c.fs, "/lake").await;
    assert_eq!(names, ["day=1"]);
    let listed = c.fs.list("/lake/day=1").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].length, data.len() as u64);
    assert!(listed[0].persisted);
    assert_eq!(listed[0].cached_percent, 0);

    let ufs0 = c.worker_counter(BYTES_READ_UFS).await;
    assert_eq!(
        read_all(&c.fs, "/lake/day=1/part-0.bin", ReadType::Cache).await,
        data
    );
    let ufs1 = c.worker_counter(BYTES_READ_UFS).await;
    assert_eq!(
        ufs1 - ufs0,
        data.len() as u64,
        "first read goes to the under-store"
    );

    // The worker commits each block to the master as it caches it.
    let mut cached = 0;
    for _ in 0..100 {
        cached =
            c.fs.get_status("/lake/day=1/part-0.bin")
                .await
                .unwrap()
                .cached_percent;
        if cached == 100 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(cached, 100);

    let cache0 = c.worker_counter(BYTES_READ_CACHE).await;
    assert_eq!(
        read_all(&c.fs, "/lake/day=1/part-0.bin", ReadType::Cache).await,
        data
    );
    assert_eq!(
        c.worker_counter(BYTES_READ_UFS).await,
        ufs1,
        "second read must not touch the under-store"
    );
    assert_eq!(
        c.worker_counter(BYTES_READ_CACHE).await - cache0,
        data.len() as u64
    );

    // A file looked up directly (never listed) is found too.
    std::fs::write(lake.join("direct.txt"), b"direct").unwrap();
    assert_eq!(
        read_all(&c.fs, "/lake/direct.txt", ReadType::NoCache).await,
        b"direct"
    );

    // A file removed from the folder outside Strata leaves the listing, cache and all.
    std::fs::write(lake.join("day=1/gone.bin"), b"short-lived").unwrap();
    assert_eq!(
        read_all(&c.fs, "/lake/day=1/gone.bin", ReadType::Cache).await,
        b"short-lived"
    );
    std::fs::remove_file(lake.join("day=1/gone.bin")).unwrap();
    assert_eq!(list_names(&c.fs, "/lake/day=1").await, ["part-0.bin"]);
    assert!(matches!(
        c.fs.get_status("/lake/day=1/gone.bin").await,
        Err(Error::NotFound { .. })
    ));

    // free drops the cached copies; the next read goes back to the under-store.
    assert!(c.fs.free("/lake").await.unwrap() >= 3);
    assert_eq!(
        c.fs.get_status("/lake/day=1/part-0.bin")
            .await
            .unwrap()
            .cached_percent,
        0
    );
    // The worker drops the blocks when its next heartbeat brings the order.
    for _ in 0..100 {
        if c.worker_counter(strata_worker::metrics::BLOCKS_REMOVED)
            .await
            >= 3
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        c.worker_counter(strata_worker::metrics::BLOCKS_REMOVED)
            .await
            >= 3
    );
    assert_eq!(
        read_all(&c.fs, "/lake/day=1/part-0.bin", ReadType::Cache).await,
        data
    );
    assert!(c.worker_counter(BYTES_READ_UFS).await > ufs1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eviction_under_a_small_quota_keeps_reads_correct() {
    let c = MiniCluster::start(ClusterOptions {
        mem_quota: 4 * BS,
        ..Default::default()
    })
    .await;
    let mut files = Vec::new();
    for i in 0..6u64 {
        let data = pattern((2 * BS + i) as usize, 100 + i);
        let path = format!("/ev/f{i}");
        write_file(&c.fs, &path, &data, WriteType::CacheThrough).await;
        files.push((path, data));
    }
    assert!(
        c.worker_counter(BLOCKS_EVICTED).await > 0,
        "writing 12 blocks into 4 must evict"
    );
    for _ in 0..2 {
        for (path, data) in &files {
            assert_eq!(
                &read_all(&c.fs, path, ReadType::Cache).await,
                data,
                "{path}"
            );
        }
    }
    let used = c.worker_counter("worker.used_bytes").await;
    assert!(used <= 4 * BS, "used {used} exceeds the quota");
    let evicted = c.worker_counter(BLOCKS_EVICTED).await;
    assert!(evicted >= 8, "evicted only {evicted}");

    // A MUST_CACHE file whose blocks were all evicted answers with a clear error.
    write_file(
        &c.fs,
        "/ev/volatile",
        &pattern(BS as usize, 1),
        WriteType::MustCache,
    )
    .await;
    for (path, data) in &files {
        assert_eq!(&read_all(&c.fs, path, ReadType::Cache).await, data);
    }
    // Wait for the evictions to reach the master with a heartbeat.
    let mut lost = None;
    for _ in 0..100 {
        let mut r =
            c.fs.open("/ev/volatile", OpenOptions::default())
                .await
                .unwrap();
        let mut v = Vec::new();
        if let Err(e) = r.read_to_end(&mut v).await {
            lost = Some(e.to_string());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let msg = lost.expect("an evicted MUST_CACHE file cannot be read");
    assert!(
        msg.contains("/ev/volatile") && msg.contains("MUST_CACHE"),
        "{msg}"
    );
    // A MUST_CACHE file larger than the tier cannot evict its own first blocks: the
    // write fails with a clear error and leaves no file behind.
    let mut w =
        c.fs.create(
            "/ev/too-big",
            CreateOptions {
                write_type: Some(WriteType::MustCache),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let big = pattern((5 * BS) as usize, 3);
    let mut res = Ok(());
    for piece in big.chunks(BS as usize) {
        res = w.write(piece).await;
        if res.is_err() {
            break;
        }
    }
    let err = match res {
        Err(e) => e,
        Ok(()) => w
            .close()
            .await
            .expect_err("5 blocks cannot fit a 4-block tier"),
    };
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert!(matches!(
        c.fs.get_status("/ev/too-big").await,
        Err(Error::NotFound { .. })
    ));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocks_spread_over_workers_by_hash_and_survive_a_lost_worker() {
    let mut c = MiniCluster::start(ClusterOptions {
        workers: 2,
        ..Default::default()
    })
    .await;
    let lake = c.new_folder("lake2");
    // 16 blocks: the chance that hashing puts all of them on one worker is 2^-15.
    let data = pattern((16 * BS) as usize, 5);
    std::fs::write(lake.join("big.bin"), &data).unwrap();
    c.fs.mount("/l", lake.to_str().unwrap(), true)
        .await
        .unwrap();
    assert_eq!(read_all(&c.fs, "/l/big.bin", ReadType::Cache).await, data);
    // Both workers took part: consistent hashing spreads the blocks.
    for w in &c.workers {
        let m =
            c.fs.worker_metrics(&w.handle.addr.to_string())
                .await
                .unwrap();
        assert!(
            m[BYTES_READ_UFS] > 0,
            "worker {} read nothing",
            w.handle.addr
        );
    }
    // Read-only mount: writes are refused with the reason.
    let err =
        c.fs.create(
            "/l/new",
            CreateOptions {
                write_type: Some(WriteType::Through),
                ..Default::default()
            },
        )
        .await
        .err()
        .expect("read-only mount refuses writes");
    assert!(err.to_string().contains("read-only"), "{err}");
    // Stop one worker: reads still succeed through the other.
    let w = c.workers.remove(0);
    let lost_addr = w.handle.addr;
    drop(w);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let fresh = FileSystem::connect(&c.config).await.unwrap();
    let mut r = fresh
        .open("/l/big.bin", OpenOptions::default())
        .await
        .unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    assert_eq!(v, data, "reads survive the loss of worker {lost_addr}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_in_one_directory_all_land() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    c.fs.mkdir("/conc", false).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let fs = c.fs.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let w = fs
                    .create(
                        &format!("/conc/t{t}-{i}"),
                        CreateOptions {
                            write_type: Some(WriteType::MustCache),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                w.close().await.unwrap();
            }
            // Everyone races for the same name: exactly one wins.
            fs.create("/conc/same", CreateOptions::default())
                .await
                .map(|_| ())
        }));
    }
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => winners += 1,
            Err(Error::AlreadyExists { path }) => assert_eq!(path, "/conc/same"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(c.fs.list("/conc").await.unwrap().len(), 161);
    c.stop().await;
}
