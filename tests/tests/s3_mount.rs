//! S3 end to end: a bucket on a real S3-compatible server (`moto_server`), filled
//! by a plain S3 client, mounted in Strata, listed, read through a worker and
//! cached; a file written through Strata lands in the bucket; bad mounts are
//! clear errors and leave nothing behind.
//!
//! The master and worker run in this process and take credentials from the AWS
//! environment, as daemons do; each test sets it before its runtime starts.

use strata_client::{CreateOptions, MountOptions, OpenOptions, WriteType};
use strata_common::Error;
use strata_tests::moto::Moto;
use strata_tests::{list_names, pattern, ClusterOptions, MiniCluster};
use tokio::io::AsyncReadExt;

/// Credentials for moto, in the environment the SDK's default chain reads; set
/// while this test process has one thread, before its runtime exists.
fn runtime_with_aws_environment() -> tokio::runtime::Runtime {
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        // No instance metadata service here: never wait for one.
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ] {
        // No other thread exists yet, so none reads the environment meanwhile.
        std::env::set_var(k, v);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn read_all(fs: &strata_client::FileSystem, path: &str) -> Vec<u8> {
    let mut r = fs.open(path, OpenOptions::default()).await.unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

/// A cluster with its worker registered.
async fn cluster() -> MiniCluster {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    c.wait_for_workers(1).await;
    c
}

/// A running server with an empty bucket `lake`, and a plain client of it.
async fn lake() -> (Moto, aws_sdk_s3::Client) {
    let moto = Moto::start();
    moto.bucket("lake").await;
    let s3 = moto.client().await;
    (moto, s3)
}

#[test]
fn a_bucket_filled_by_another_program_is_mounted_read_and_cached() {
    runtime_with_aws_environment().block_on(async {
        let (moto, s3) = lake().await;
        let big = pattern(300_000, 7);
        for (key, body) in [
            ("data/a.bin", big.clone()),
            ("data/sub/b.txt", b"hello".to_vec()),
            ("elsewhere/c", b"not mounted".to_vec()),
        ] {
            s3.put_object()
                .bucket("lake")
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
        let c = cluster().await;
        c.fs.mount_with_options("/s3", "s3://lake/data", false, &moto.options())
            .await
            .unwrap();
        let table = c.fs.mount_table().await.unwrap();
        let m = table.iter().find(|m| m.path.as_str() == "/s3").unwrap();
        assert_eq!(m.options, moto.options());

        assert_eq!(list_names(&c.fs, "/s3").await, ["a.bin", "sub"]);
        assert_eq!(list_names(&c.fs, "/s3/sub").await, ["b.txt"]);
        let from_ufs = c.worker_counter("worker.bytes_read_ufs").await;
        assert_eq!(read_all(&c.fs, "/s3/a.bin").await, big);
        assert_eq!(read_all(&c.fs, "/s3/sub/b.txt").await, b"hello");
        let after_first = c.worker_counter("worker.bytes_read_ufs").await;
        assert_eq!(after_first - from_ufs, 300_005, "read through from S3 once");
        // The under-store wrapper counted the same bytes, per backend.
        assert_eq!(c.worker_counter("ufs.s3.bytes_read").await, 300_005);
        assert!(c.worker_counter("ufs.s3.open_range.ops").await >= 6);
        assert_eq!(
            c.fs.get_status("/s3/a.bin").await.unwrap().cached_percent,
            100
        );
        // The second read is served from the cache.
        assert_eq!(read_all(&c.fs, "/s3/a.bin").await, big);
        assert_eq!(c.worker_counter("worker.bytes_read_ufs").await, after_first);

        // Written through Strata: in the bucket at the mounted key, and no staged
        // object left beside it.
        let mut w =
            c.fs.create(
                "/s3/sub/new.bin",
                CreateOptions {
                    write_type: Some(WriteType::CacheThrough),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let data = pattern(200_000, 9);
        w.write(&data).await.unwrap();
        w.close().await.unwrap();
        let got = s3
            .get_object()
            .bucket("lake")
            .key("data/sub/new.bin")
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(got.as_ref(), data.as_slice());
        let keys: Vec<String> = s3
            .list_objects_v2()
            .bucket("lake")
            .prefix("data/sub/")
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        // The folder's marker, the other program's file and the new one.
        assert_eq!(keys, ["data/sub/", "data/sub/b.txt", "data/sub/new.bin"]);
        c.stop().await;
    });
}

async fn put_object(s3: &aws_sdk_s3::Client, key: &str, body: &[u8]) {
    s3.put_object()
        .bucket("lake")
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap();
}

/// Objects replaced or deleted by another program: within a mount's sync interval
/// Strata keeps its view and serves the cached bytes; once the interval has passed
/// the new object is read (same length: only the ETag tells) and the deleted one
/// is gone; a request's own interval sees the change at once.
#[test]
fn an_object_replaced_behind_strata_is_read_fresh_after_the_interval_and_not_before() {
    runtime_with_aws_environment().block_on(async {
        let (moto, s3) = lake().await;
        let (old, new) = (pattern(100_000, 1), pattern(100_000, 2));
        for key in ["slow/obj", "quick/obj", "quick/gone"] {
            put_object(&s3, key, &old).await;
        }
        let c = cluster().await;
        for (path, prefix, every) in [("/slow", "slow", "1h"), ("/quick", "quick", "500ms")] {
            let mut options = moto.options();
            options.insert("sync_interval".into(), every.into());
            c.fs.mount_with_options(path, &format!("s3://lake/{prefix}"), false, &options)
                .await
                .unwrap();
        }
        let table = c.fs.mount_table().await.unwrap();
        let slow = table.iter().find(|m| m.path.as_str() == "/slow").unwrap();
        assert_eq!(slow.options["sync_interval"], "1h");
        assert_eq!(list_names(&c.fs, "/quick").await, ["gone", "obj"]);
        for path in ["/slow/obj", "/quick/obj"] {
            assert_eq!(read_all(&c.fs, path).await, old);
        }
        let cached_id = c.fs.get_status("/slow/obj").await.unwrap().id;

        for key in ["slow/obj", "quick/obj"] {
            put_object(&s3, key, &new).await;
        }
        s3.delete_object()
            .bucket("lake")
            .key("quick/gone")
            .send()
            .await
            .unwrap();

        // Not before: the hour-long interval keeps the cached object.
        assert_eq!(read_all(&c.fs, "/slow/obj").await, old);
        assert_eq!(c.fs.get_status("/slow/obj").await.unwrap().id, cached_id);
        // After: half a second on, the new object and no deleted one.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert_eq!(read_all(&c.fs, "/quick/obj").await, new);
        assert_eq!(list_names(&c.fs, "/quick").await, ["obj"]);
        // A request that asks for a fresh view gets one at once.
        let fresh = c.fs.with_sync_interval(strata_client::SyncInterval::Always);
        assert_eq!(read_all(&fresh, "/slow/obj").await, new);
        assert_ne!(c.fs.get_status("/slow/obj").await.unwrap().id, cached_id);
        assert_eq!(read_all(&c.fs, "/slow/obj").await, new);
        c.stop().await;
    });
}

/// A folder of 4,500 objects syncs page by page (S3 answers a thousand keys a
/// page, and more than one load entry is needed): every object loads; objects
/// deleted, replaced or turned into folders on any page are seen by the next
/// listing.
#[test]
fn a_folder_over_several_listing_pages_syncs_whole() {
    runtime_with_aws_environment().block_on(async {
        use futures::StreamExt;
        let (moto, s3) = lake().await;
        // More than one load entry's worth (4,096), over five pages.
        let names: Vec<String> = (0..4500).map(|i| format!("o{i:04}")).collect();
        futures::stream::iter(names.iter())
            .for_each_concurrent(32, |name| {
                let s3 = &s3;
                async move { put_object(s3, &format!("wide/{name}"), name.as_bytes()).await }
            })
            .await;
        let c = cluster().await;
        c.fs.mount_with_options("/w", "s3://lake/wide", false, &moto.options())
            .await
            .unwrap();
        assert_eq!(list_names(&c.fs, "/w").await, names);

        let before = c.fs.get_status("/w/o0999").await.unwrap().id;
        // On the first, second and third pages: deleted, replaced (same length,
        // new ETag), and turned into a folder.
        for gone in ["o0010", "o1500", "o4499"] {
            s3.delete_object()
                .bucket("lake")
                .key(format!("wide/{gone}"))
                .send()
                .await
                .unwrap();
        }
        for (changed, body) in [("o0999", b"O0999"), ("o2000", b"O2000")] {
            put_object(&s3, &format!("wide/{changed}"), body).await;
        }
        s3.delete_object()
            .bucket("lake")
            .key("wide/o1234")
            .send()
            .await
            .unwrap();
        put_object(&s3, "wide/o1234/inside", b"in").await;
        let want: Vec<String> = names
            .iter()
            .filter(|n| !["o0010", "o1500", "o4499"].contains(&n.as_str()))
            .cloned()
            .collect();
        // A listing sees it all (the listing of `/w` itself compares every page).
        let listed = c.fs.list("/w").await.unwrap();
        let got: Vec<String> = listed
            .iter()
            .map(|f| f.path.name().unwrap().to_string())
            .collect();
        assert_eq!(got, want);
        let o1234 = listed
            .iter()
            .find(|f| f.path.as_str() == "/w/o1234")
            .unwrap();
        assert!(o1234.is_dir());
        let o0999 = listed
            .iter()
            .find(|f| f.path.as_str() == "/w/o0999")
            .unwrap();
        assert_ne!(o0999.id, before, "refreshed by the listing");
        assert_eq!(read_all(&c.fs, "/w/o0999").await, b"O0999");
        assert_eq!(read_all(&c.fs, "/w/o2000").await, b"O2000");
        assert_eq!(list_names(&c.fs, "/w/o1234").await, ["inside"]);
        c.stop().await;
    });
}

/// With the S3 server gone, cached files stay readable and listable: the sync
/// with a store that does not answer serves Strata's view (with a log line),
/// and what was never cached is a clear error.
#[test]
fn cached_files_stay_readable_when_the_store_is_down() {
    runtime_with_aws_environment().block_on(async {
        let (moto, s3) = lake().await;
        let data = pattern(150_000, 3);
        put_object(&s3, "down/cached", &data).await;
        put_object(&s3, "down/cold", b"never read").await;
        let c = cluster().await;
        c.fs.mount_with_options("/s3", "s3://lake/down", false, &moto.options())
            .await
            .unwrap();
        assert_eq!(list_names(&c.fs, "/s3").await, ["cached", "cold"]);
        assert_eq!(read_all(&c.fs, "/s3/cached").await, data);
        // The worker keeps the block once the read's stream has ended.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.fs.get_status("/s3/cached").await.unwrap().cached_percent < 100 {
            assert!(std::time::Instant::now() < deadline, "never cached");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(moto);

        assert_eq!(
            c.fs.get_status("/s3/cached").await.unwrap().cached_percent,
            100
        );
        assert_eq!(read_all(&c.fs, "/s3/cached").await, data);
        assert_eq!(list_names(&c.fs, "/s3").await, ["cached", "cold"]);
        let mut r = c.fs.open("/s3/cold", OpenOptions::default()).await.unwrap();
        let mut v = Vec::new();
        assert!(r.read_to_end(&mut v).await.is_err());
        c.stop().await;
    });
}

/// A file deleted while its writer still streams to S3 (`THROUGH` and
/// `CACHE_THROUGH`) stays deleted: the writer's close fails, and the bucket keeps
/// no copy of it, staged or published.
#[test]
fn a_file_deleted_during_its_s3_write_leaves_nothing_in_the_bucket() {
    runtime_with_aws_environment().block_on(async {
        let (moto, s3) = lake().await;
        put_object(&s3, "w/keep", b"k").await;
        let c = cluster().await;
        c.fs.mount_with_options("/s3", "s3://lake/w", false, &moto.options())
            .await
            .unwrap();
        for wt in [WriteType::Through, WriteType::CacheThrough] {
            let path = format!("/s3/del-{wt}");
            let mut w =
                c.fs.create(
                    &path,
                    CreateOptions {
                        write_type: Some(wt),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            // Below one part (16 MiB): the staged copy is one object.
            w.write(&pattern(3 << 20, 4)).await.unwrap();
            c.fs.delete(&path, false).await.unwrap();
            w.write(&pattern(1 << 20, 5)).await.unwrap();
            assert!(w.close().await.is_err(), "{wt}: close of a deleted file");
            assert!(!c.fs.exists(&path).await.unwrap(), "{wt}");
        }
        let keys: Vec<String> = s3
            .list_objects_v2()
            .bucket("lake")
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        assert_eq!(keys, ["w/keep"]);
        let uploads = s3
            .list_multipart_uploads()
            .bucket("lake")
            .send()
            .await
            .unwrap();
        assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
        c.stop().await;
    });
}

#[test]
fn bad_s3_mounts_are_clear_errors_and_leave_no_mount() {
    runtime_with_aws_environment().block_on(async {
        let moto = Moto::start();
        moto.bucket("there").await;
        let c = cluster().await;
        let mounts_before = c.fs.mount_table().await.unwrap().len();

        let e =
            c.fs.mount_with_options("/a", "s3://missing-bucket/x", false, &moto.options())
                .await
                .unwrap_err();
        assert!(
            matches!(&e, Error::NotFound { path } if path.contains("missing-bucket")),
            "{e}"
        );

        let mut unknown = moto.options();
        unknown.insert("s3.secret_key".into(), "nope".into());
        let e =
            c.fs.mount_with_options("/b", "s3://there", false, &unknown)
                .await
                .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument { .. }) && e.to_string().contains("s3.secret_key"),
            "{e}"
        );

        // Nothing listens there: refused at once, not after a hang.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nowhere = moto.options();
        nowhere.insert("s3.endpoint".into(), format!("http://127.0.0.1:{closed}"));
        let started = std::time::Instant::now();
        let e =
            c.fs.mount_with_options("/c", "s3://there", false, &nowhere)
                .await
                .unwrap_err();
        assert!(e.to_string().contains("127.0.0.1"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));

        // A local folder takes no options.
        let folder = c.new_folder("plain");
        let e =
            c.fs.mount_with_options(
                "/d",
                &format!("file://{}", folder.display()),
                false,
                &MountOptions::from([("s3.region".to_string(), "x".to_string())]),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("s3.region"), "{e}");

        assert_eq!(c.fs.mount_table().await.unwrap().len(), mounts_before);
        for p in ["/a", "/b", "/c", "/d"] {
            assert!(!c.fs.exists(p).await.unwrap(), "{p} left behind");
        }
        c.stop().await;
    });
}
