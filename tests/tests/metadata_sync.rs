//! Metadata sync against a local under-store changed behind Strata's back: files
//! and folders created by others appear, deleted ones disappear, a file changed in
//! place is read fresh (its stale cached blocks dropped), each when the sync
//! interval says so: the master's default (`0`, every time), a mount's
//! `sync_interval` option, or a request's own interval.

use std::time::Duration;
use strata_client::{Error, FileSystem, MountOptions, OpenOptions, SyncInterval};
use strata_common::proto::{self, file_system_master_client::FileSystemMasterClient};
use strata_tests::{list_names, pattern, ClusterOptions, MiniCluster};
use tokio::io::AsyncReadExt;

async fn read_all(fs: &FileSystem, path: &str) -> Vec<u8> {
    let mut r = fs.open(path, OpenOptions::default()).await.unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

fn interval(v: &str) -> MountOptions {
    MountOptions::from([("sync_interval".to_string(), v.to_string())])
}

/// Rewrites `path` with `data` in place (same inode), its modification time moved
/// a second on so that a same-length change shows whatever the clock's grain.
fn change_in_place(path: &std::path::Path, data: &[u8]) {
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(before + Duration::from_secs(1))
        .unwrap();
}

/// With the default interval (every lookup), a cached file changed in place is
/// read fresh at once, under a new id, and the old id's cached blocks leave the
/// worker; same-length changes included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_changed_in_place_is_read_fresh_and_its_stale_blocks_dropped() {
    let c = MiniCluster::start(ClusterOptions {
        block_size: 64 << 10,
        ..Default::default()
    })
    .await;
    c.wait_for_workers(1).await;
    let file = c.underfs().join("f");
    let old = pattern(200_000, 1);
    std::fs::write(&file, &old).unwrap();
    assert_eq!(read_all(&c.fs, "/f").await, old);
    let first = c.fs.get_status("/f").await.unwrap();
    assert_eq!(first.cached_percent, 100);

    // Longer, then the same length with other bytes.
    for (round, new) in [pattern(300_000, 2), pattern(300_000, 3)]
        .into_iter()
        .enumerate()
    {
        let before = c.fs.get_status("/f").await.unwrap();
        change_in_place(&file, &new);
        let now = c.fs.get_status("/f").await.unwrap();
        assert_ne!(
            now.id, before.id,
            "round {round}: a new id for the new copy"
        );
        assert_eq!(now.length, new.len() as u64);
        assert_eq!(
            now.cached_percent, 0,
            "round {round}: nothing cached of it yet"
        );
        assert_eq!(read_all(&c.fs, "/f").await, new, "round {round}");
        assert_eq!(c.fs.get_status("/f").await.unwrap().id, now.id, "stable");
    }
    // The old ids' blocks leave the worker: 4 of the first copy, 5 of the second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let removed = c
            .worker_counter(strata_worker::metrics::BLOCKS_REMOVED)
            .await;
        if removed == 9 {
            break;
        }
        assert!(
            removed < 9 && tokio::time::Instant::now() < deadline,
            "{removed} removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read_all(&c.fs, "/f").await, pattern(300_000, 3));
    c.stop().await;
}

/// A mount's interval holds the old view (and the cached bytes) until it passes;
/// a request's own interval overrides it either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mounts_interval_decides_when_a_change_is_seen() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    c.wait_for_workers(1).await;
    let dir = c.new_folder("slow");
    let uri = format!("file://{}", dir.display());
    c.fs.mount_with_options("/slow", &uri, false, &interval("1h"))
        .await
        .unwrap();
    let old = pattern(10_000, 4);
    std::fs::write(dir.join("f"), &old).unwrap();
    assert_eq!(read_all(&c.fs, "/slow/f").await, old);
    assert_eq!(list_names(&c.fs, "/slow").await, ["f"]);

    let new = pattern(12_000, 5);
    change_in_place(&dir.join("f"), &new);
    std::fs::write(dir.join("g"), b"g").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    // Within the hour: the cached view, and the cached bytes.
    assert_eq!(c.fs.get_status("/slow/f").await.unwrap().length, 10_000);
    assert_eq!(read_all(&c.fs, "/slow/f").await, old);
    assert_eq!(list_names(&c.fs, "/slow").await, ["f"]);
    // A path looked up by name is loaded whatever the interval.
    assert_eq!(c.fs.get_status("/slow/g").await.unwrap().length, 1);

    // A request that asks for a fresh view gets one.
    let fresh = c.fs.with_sync_interval(SyncInterval::Always);
    assert_eq!(fresh.get_status("/slow/f").await.unwrap().length, 12_000);
    assert_eq!(read_all(&c.fs, "/slow/f").await, new);
    assert_eq!(list_names(&fresh, "/slow").await, ["f", "g", "sub"]);

    // A short interval: the change shows once it has passed.
    let quick =
        c.fs.with_sync_interval(SyncInterval::Every(Duration::from_millis(300)));
    assert_eq!(read_all(&quick, "/slow/f").await, new);
    let newer = pattern(7_000, 6);
    change_in_place(&dir.join("f"), &newer);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(read_all(&quick, "/slow/f").await, newer);
    c.stop().await;
}

/// `-1`: a folder is listed from the under-store once, then never compared again
/// (a path looked up by name is still loaded); a request can still ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn never_lists_a_folder_once_and_keeps_that_view() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let dir = c.new_folder("frozen");
    std::fs::write(dir.join("a"), b"a").unwrap();
    std::fs::write(dir.join("b"), b"bb").unwrap();
    let uri = format!("file://{}", dir.display());
    c.fs.mount_with_options("/frozen", &uri, false, &interval("-1"))
        .await
        .unwrap();
    assert_eq!(list_names(&c.fs, "/frozen").await, ["a", "b"]);
    std::fs::write(dir.join("c"), b"c").unwrap();
    std::fs::remove_file(dir.join("b")).unwrap();
    change_in_place(&dir.join("a"), b"changed");
    assert_eq!(list_names(&c.fs, "/frozen").await, ["a", "b"]);
    assert_eq!(c.fs.get_status("/frozen/a").await.unwrap().length, 1);
    assert_eq!(c.fs.get_status("/frozen/c").await.unwrap().length, 1);
    assert_eq!(list_names(&c.fs, "/frozen").await, ["a", "b", "c"]);

    let fresh = c.fs.with_sync_interval(SyncInterval::Always);
    assert_eq!(list_names(&fresh, "/frozen").await, ["a", "c"]);
    assert_eq!(c.fs.get_status("/frozen/a").await.unwrap().length, 7);
    // A folder listed from the store by any request counts as listed for `-1`.
    std::fs::write(dir.join("d"), b"d").unwrap();
    let never = c.fs.with_sync_interval(SyncInterval::Never);
    assert_eq!(list_names(&never, "/frozen").await, ["a", "c"]);
    c.stop().await;
}

/// Folders removed outside Strata disappear, with everything below them; a file
/// replaced by a folder of the same name (and back) shows as what is there now;
/// a folder below which a file lives in Strata alone is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn folders_removed_or_replaced_outside_disappear() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let ufs = c.underfs();
    std::fs::create_dir_all(ufs.join("d/e")).unwrap();
    std::fs::write(ufs.join("d/e/f"), b"f").unwrap();
    std::fs::write(ufs.join("x"), b"x").unwrap();
    assert_eq!(list_names(&c.fs, "/d/e").await, ["f"]);
    assert_eq!(list_names(&c.fs, "/").await, ["d", "x"]);

    std::fs::remove_dir_all(ufs.join("d")).unwrap();
    std::fs::remove_file(ufs.join("x")).unwrap();
    std::fs::create_dir(ufs.join("x")).unwrap();
    std::fs::write(ufs.join("x/inside"), b"i").unwrap();
    // Looked up directly, the folder is gone.
    assert!(matches!(
        c.fs.get_status("/d/e").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(list_names(&c.fs, "/").await, ["x"]);
    assert!(c.fs.get_status("/x").await.unwrap().is_dir());
    assert_eq!(list_names(&c.fs, "/x").await, ["inside"]);

    // And back: the folder replaced by a file, found by a lookup.
    std::fs::remove_dir_all(ufs.join("x")).unwrap();
    std::fs::write(ufs.join("x"), b"file again").unwrap();
    let x = c.fs.get_status("/x").await.unwrap();
    assert!(!x.is_dir());
    assert_eq!(read_all(&c.fs, "/x").await, b"file again");

    // Bytes only Strata has keep their folder.
    std::fs::create_dir(ufs.join("keep")).unwrap();
    assert_eq!(list_names(&c.fs, "/").await, ["keep", "x"]);
    let mut w =
        c.fs.create(
            "/keep/only-here",
            strata_client::CreateOptions {
                write_type: Some(strata_client::WriteType::MustCache),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(b"precious").await.unwrap();
    w.close().await.unwrap();
    std::fs::remove_dir_all(ufs.join("keep")).unwrap();
    assert_eq!(list_names(&c.fs, "/").await, ["keep", "x"]);
    assert_eq!(read_all(&c.fs, "/keep/only-here").await, b"precious");
    c.stop().await;
}

/// A bad interval is refused where it enters: a mount option (no mount left
/// behind), and a request's field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_intervals_are_clear_errors() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let dir = c.new_folder("m");
    let uri = format!("file://{}", dir.display());
    for bad in ["sometimes", "-2", "9999h", ""] {
        let r =
            c.fs.mount_with_options("/m", &uri, false, &interval(bad))
                .await;
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{bad:?}: {r:?}"
        );
    }
    assert!(c
        .fs
        .mount_table()
        .await
        .unwrap()
        .iter()
        .all(|m| m.path.as_str() != "/m"));

    let ch =
        tonic::transport::Endpoint::from_shared(format!("http://{}", c.config.master_addresses[0]))
            .unwrap()
            .connect_lazy();
    let mut master = FileSystemMasterClient::new(ch);
    for ms in [-2, i64::MIN, i64::MAX, 366 * 24 * 3600 * 1000] {
        let r = master
            .get_status(proto::GetStatusRequest {
                path: "/".into(),
                sync_interval_ms: Some(ms),
            })
            .await;
        let e = Error::from(r.expect_err("accepted"));
        assert!(matches!(e, Error::InvalidArgument { .. }), "{ms}: {e:?}");
        let r = master
            .list_status(proto::ListStatusRequest {
                path: "/".into(),
                sync_interval_ms: Some(ms),
                ..Default::default()
            })
            .await;
        assert!(r.is_err(), "{ms}");
    }
    c.stop().await;
}

/// A non-recursive delete of a folder whose file changed in place answers (the
/// folder is not empty) instead of waiting on its own lock, and the folder stays
/// usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_folder_with_a_changed_file_does_not_wait_on_itself() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let ufs = c.underfs();
    std::fs::create_dir(ufs.join("d")).unwrap();
    std::fs::write(ufs.join("d/f"), b"one").unwrap();
    std::fs::write(ufs.join("d/g"), b"g").unwrap();
    assert_eq!(list_names(&c.fs, "/d").await, ["f", "g"]);
    change_in_place(&ufs.join("d/f"), b"two!");
    let limit = Duration::from_secs(10);
    let r = tokio::time::timeout(limit, c.fs.delete("/d", false))
        .await
        .expect("the delete answers");
    assert!(matches!(r, Err(Error::DirectoryNotEmpty { .. })), "{r:?}");
    let g = tokio::time::timeout(limit, c.fs.get_status("/d/g"))
        .await
        .expect("the folder is not left locked");
    assert_eq!(g.unwrap().length, 1);
    assert_eq!(read_all(&c.fs, "/d/f").await, b"two!");
    c.stop().await;
}

/// A file replaced outside by a huge (sparse) one gets a block size that keeps
/// its block count within what a file may have, whatever the old block size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_grown_huge_outside_keeps_a_bounded_block_count() {
    let c = MiniCluster::start(ClusterOptions {
        block_size: 4096,
        ..Default::default()
    })
    .await;
    let file = c.underfs().join("big");
    std::fs::write(&file, b"small").unwrap();
    let small = c.fs.get_status("/big").await.unwrap();
    assert_eq!(small.block_size, 4096);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let big = c.fs.get_status("/big").await.unwrap();
    assert_eq!(big.length, 1 << 40);
    let blocks = big.length.div_ceil(big.block_size);
    assert!(
        blocks <= strata_common::ids::MAX_BLOCKS_PER_FILE,
        "{blocks} blocks of {}",
        big.block_size
    );
    assert_ne!(big.id, small.id);
    c.stop().await;
}

/// A reader that opened a file before it was refreshed never reads the new bytes
/// as the old file's: once the old blocks leave the worker, it gets an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_of_a_refreshed_file_never_mixes_old_and_new() {
    let c = MiniCluster::start(ClusterOptions {
        block_size: 64 << 10,
        ..Default::default()
    })
    .await;
    c.wait_for_workers(1).await;
    let file = c.underfs().join("f");
    let old = pattern(256 << 10, 1);
    std::fs::write(&file, &old).unwrap();
    assert_eq!(read_all(&c.fs, "/f").await, old);
    let mut reader = c.fs.open("/f", OpenOptions::default()).await.unwrap();
    let mut first = vec![0u8; 64 << 10];
    reader.read_exact(&mut first).await.unwrap();
    assert_eq!(first, old[..64 << 10]);

    let new = pattern(256 << 10, 2);
    change_in_place(&file, &new);
    let removed = c
        .worker_counter(strata_worker::metrics::BLOCKS_REMOVED)
        .await;
    assert_ne!(c.fs.get_status("/f").await.unwrap().length, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c
        .worker_counter(strata_worker::metrics::BLOCKS_REMOVED)
        .await
        < removed + 4
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "old blocks not removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest).await {
        Err(_) => {}
        Ok(_) => assert_eq!(rest, old[64 << 10..], "only the old file's bytes"),
    }
    assert_eq!(read_all(&c.fs, "/f").await, new);
    c.stop().await;
}

/// A file being written through Strata is never refreshed or dropped by a sync,
/// even when another program puts a file at its path meanwhile: the writer's
/// bytes win.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_being_written_is_left_to_its_writer() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    c.wait_for_workers(1).await;
    let mut w =
        c.fs.create(
            "/w",
            strata_client::CreateOptions {
                write_type: Some(strata_client::WriteType::Through),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = w.info().id;
    let mine = pattern(100_000, 7);
    w.write(&mine[..50_000]).await.unwrap();
    std::fs::write(c.underfs().join("w"), b"someone else").unwrap();
    let fresh = c.fs.with_sync_interval(SyncInterval::Always);
    assert_eq!(list_names(&fresh, "/").await, ["w"]);
    let st = fresh.get_status("/w").await.unwrap();
    assert_eq!((st.id, st.complete), (id, false));
    w.write(&mine[50_000..]).await.unwrap();
    w.close().await.unwrap();
    assert_eq!(read_all(&fresh, "/w").await, mine);
    assert_eq!(std::fs::read(c.underfs().join("w")).unwrap(), mine);
    c.stop().await;
}

/// A listing that read the under-store before a write through Strata replaced a
/// file (deleted, then created again `CACHE_THROUGH`) does not take the listed,
/// older copy for a change outside: the file keeps its writer's id and bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listing_older_than_a_write_does_not_refresh_the_written_file() {
    let (c, pause) = strata_tests::paused_cluster().await;
    c.wait_for_workers(1).await;
    let ufs = c.underfs();
    std::fs::create_dir(ufs.join("d")).unwrap();
    std::fs::write(ufs.join("d/f"), b"from outside").unwrap();
    assert_eq!(list_names(&c.fs, "/d").await, ["f"]);

    pause.arm();
    let fresh = c.fs.with_sync_interval(SyncInterval::Always);
    let listing = tokio::spawn(async move { fresh.list("/d").await });
    tokio::time::timeout(Duration::from_secs(10), pause.reached())
        .await
        .expect("the listing read a page");
    // Meanwhile, through Strata: /d/f replaced by a new file.
    c.fs.delete("/d/f", false).await.unwrap();
    let mine = pattern(5_000, 9);
    let mut w =
        c.fs.create(
            "/d/f",
            strata_client::CreateOptions {
                write_type: Some(strata_client::WriteType::CacheThrough),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(&mine).await.unwrap();
    let written = w.close().await.unwrap();
    pause.release();
    let listed = listing.await.unwrap().unwrap();
    assert_eq!(listed.len(), 1);
    let now = c.fs.get_status("/d/f").await.unwrap();
    assert_eq!(now.id, written.id, "the written file keeps its id");
    assert_eq!(now.length, 5_000);
    assert_eq!(read_all(&c.fs, "/d/f").await, mine);
    c.stop().await;
}
