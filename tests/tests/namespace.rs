//! End-to-end namespace behaviour: bad input gets a clear, typed error naming the
//! path and loses nothing; mutations reach the under-store; no path escapes a mount.

use strata_client::{CreateOptions, Error, FileSystem, OpenOptions, WriteType};
use strata_common::proto::{self, worker_service_client::WorkerServiceClient};
use strata_tests::{list_names, pattern, ClusterOptions, MiniCluster};
use tokio::io::AsyncReadExt;

async fn put(fs: &FileSystem, path: &str, data: &[u8]) {
    let mut w = fs
        .create(
            path,
            CreateOptions {
                recursive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(data).await.unwrap();
    w.close().await.unwrap();
}

async fn get(fs: &FileSystem, path: &str) -> Vec<u8> {
    let mut r = fs.open(path, OpenOptions::default()).await.unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_a_clear_error_and_loses_nothing() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let fs = &c.fs;
    put(fs, "/d/file", b"keep me").await;
    put(fs, "/d/sub/inner", b"inner").await;

    // A missing path.
    let e = fs.get_status("/nope/x").await.unwrap_err();
    assert_eq!(
        e,
        Error::NotFound {
            path: "/nope/x".into()
        }
    );
    assert_eq!(e.to_string(), "/nope/x: no such file or directory");
    assert!(matches!(
        fs.open("/d/missing", OpenOptions::default()).await,
        Err(Error::NotFound { .. })
    ));
    // mkdir over a file, and below a file.
    assert_eq!(
        fs.mkdir("/d/file", false).await.unwrap_err(),
        Error::AlreadyExists {
            path: "/d/file".into()
        }
    );
    assert_eq!(
        fs.mkdir("/d/file", true).await.unwrap_err(),
        Error::AlreadyExists {
            path: "/d/file".into()
        }
    );
    assert_eq!(
        fs.mkdir("/d/file/x", true).await.unwrap_err(),
        Error::NotADirectory {
            path: "/d/file".into()
        }
    );
    // mkdir without parents.
    assert_eq!(
        fs.mkdir("/a/b/c", false).await.unwrap_err(),
        Error::NotFound {
            path: "/a/b".into()
        }
    );
    // create over an existing file or directory.
    for p in ["/d/file", "/d/sub"] {
        let e = fs.create(p, CreateOptions::default()).await.err().unwrap();
        assert_eq!(e, Error::AlreadyExists { path: p.into() });
    }
    // rm of a non-empty folder without recursion.
    assert_eq!(
        fs.delete("/d", false).await.unwrap_err(),
        Error::DirectoryNotEmpty { path: "/d".into() }
    );
    // rename into its own subtree, onto an existing path, from a missing one.
    let e = fs.rename("/d", "/d/sub/d2").await.unwrap_err();
    assert!(
        matches!(&e, Error::NotPermitted { path, .. } if path == "/d/sub/d2"),
        "{e}"
    );
    assert!(e.to_string().contains("own subtree"), "{e}");
    assert_eq!(
        fs.rename("/d/file", "/d/sub/inner").await.unwrap_err(),
        Error::AlreadyExists {
            path: "/d/sub/inner".into()
        }
    );
    assert_eq!(
        fs.rename("/d/none", "/d/x").await.unwrap_err(),
        Error::NotFound {
            path: "/d/none".into()
        }
    );
    // unmount of a non-mount, mount over an existing path.
    assert_eq!(
        fs.unmount("/d").await.unwrap_err(),
        Error::NotAMountPoint { path: "/d".into() }
    );
    let other = c.new_folder("other");
    let e = fs
        .mount("/d/sub", other.to_str().unwrap(), false)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::AlreadyExists {
            path: "/d/sub".into()
        }
    );
    // A mount of a folder that does not exist, or of an unknown scheme.
    assert!(matches!(
        fs.mount("/m1", "/definitely/not/here", false)
            .await
            .unwrap_err(),
        Error::NotFound { .. }
    ));
    let e = fs
        .mount("/m2", "hdfs://namenode:8020/x", false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("hdfs"), "{e}");
    // Malformed paths: an empty component, NUL, relative, `.` and `..`.
    for bad in [
        "/d//file",
        "/d/\0x",
        "d/file",
        "/d/./file",
        "/d/../d/file",
        "",
    ] {
        let e = fs.get_status(bad).await.unwrap_err();
        assert!(matches!(e, Error::InvalidPath { .. }), "{bad:?}: {e}");
        let e = fs.mkdir(bad, true).await.unwrap_err();
        assert!(matches!(e, Error::InvalidPath { .. }), "{bad:?}: {e}");
    }
    // The root cannot be removed, renamed or unmounted.
    assert!(matches!(
        fs.delete("/", true).await.unwrap_err(),
        Error::NotPermitted { .. }
    ));
    assert!(matches!(
        fs.unmount("/").await.unwrap_err(),
        Error::NotPermitted { .. }
    ));
    // Without a mount, persisting writes have nowhere to go.
    let bare = MiniCluster::start(ClusterOptions {
        root_ufs: false,
        ..Default::default()
    })
    .await;
    let e = bare
        .fs
        .create(
            "/x",
            CreateOptions {
                write_type: Some(WriteType::Through),
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("not under a mount"), "{e}");
    bare.stop().await;

    // Nothing was lost along the way.
    assert_eq!(get(fs, "/d/file").await, b"keep me");
    assert_eq!(get(fs, "/d/sub/inner").await, b"inner");
    assert_eq!(
        std::fs::read(c.underfs().join("d/file")).unwrap(),
        b"keep me"
    );
    let names = list_names(fs, "/").await;
    assert_eq!(names, ["d"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutations_follow_through_to_the_under_store() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let fs = &c.fs;
    let ufs = c.underfs();
    fs.mkdir("/w/x", true).await.unwrap();
    assert!(ufs.join("w/x").is_dir());
    put(fs, "/w/x/f", &pattern(100_000, 3)).await;
    fs.rename("/w/x", "/w/y").await.unwrap();
    assert!(!ufs.join("w/x").exists());
    assert_eq!(
        std::fs::read(ufs.join("w/y/f")).unwrap(),
        pattern(100_000, 3)
    );
    assert_eq!(get(fs, "/w/y/f").await, pattern(100_000, 3));
    assert!(matches!(
        fs.get_status("/w/x/f").await,
        Err(Error::NotFound { .. })
    ));
    fs.delete("/w/y/f", false).await.unwrap();
    assert!(!ufs.join("w/y/f").exists());
    fs.delete("/w", true).await.unwrap();
    assert!(!ufs.join("w").exists());

    // Mounts: listed, not deletable or renamable, unmount keeps the folder's files.
    let lake = c.new_folder("lake");
    std::fs::write(lake.join("keep.txt"), b"mine").unwrap();
    fs.mount("/lake", &format!("file://{}", lake.display()), false)
        .await
        .unwrap();
    let table = fs.mount_table().await.unwrap();
    assert_eq!(table.len(), 2);
    assert!(table
        .iter()
        .any(|m| m.path.as_str() == "/lake" && m.uri.ends_with("lake")));
    assert!(fs.get_status("/lake").await.unwrap().mount_point);
    assert!(matches!(
        fs.delete("/lake", true).await.unwrap_err(),
        Error::NotPermitted { .. }
    ));
    assert!(matches!(
        fs.rename("/lake", "/lake2").await.unwrap_err(),
        Error::NotPermitted { .. }
    ));
    let e = fs
        .mount("/lake/inner", c.new_folder("x").to_str().unwrap(), false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot nest"), "{e}");
    let e = fs.rename("/lake/keep.txt", "/moved.txt").await.unwrap_err();
    assert!(e.to_string().contains("across mounts"), "{e}");
    assert_eq!(get(fs, "/lake/keep.txt").await, b"mine");
    fs.unmount("/lake").await.unwrap();
    assert!(matches!(
        fs.get_status("/lake/keep.txt").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(std::fs::read(lake.join("keep.txt")).unwrap(), b"mine");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_path_reaches_outside_a_mount() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let outside = c.new_folder("outside");
    std::fs::write(outside.join("secret"), b"top secret").unwrap();
    let lake = c.new_folder("lake");
    std::fs::write(lake.join("ok.txt"), b"fine").unwrap();
    std::os::unix::fs::symlink(&outside, lake.join("link-dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), lake.join("link-file")).unwrap();
    c.fs.mount("/lake", lake.to_str().unwrap(), false)
        .await
        .unwrap();

    // `..` cannot be spelled in a namespace path.
    for p in ["/lake/..", "/lake/../outside/secret", "/lake/ok.txt/.."] {
        assert!(
            matches!(c.fs.get_status(p).await, Err(Error::InvalidPath { .. })),
            "{p}"
        );
    }
    // Symlinks leading out are neither listed nor reachable.
    let names = list_names(&c.fs, "/lake").await;
    assert_eq!(names, ["ok.txt"]);
    for p in ["/lake/link-dir/secret", "/lake/link-file"] {
        let e = c.fs.get_status(p).await.unwrap_err();
        assert!(matches!(e, Error::NotPermitted { .. }), "{p}: {e}");
    }
    // Writing through a link is refused and leaves the outside untouched.
    assert!(c
        .fs
        .create("/lake/link-dir/planted", CreateOptions::default())
        .await
        .is_err());
    assert!(!outside.join("planted").exists());

    // A client that bypasses the master and asks a worker for `..` is refused too.
    let addr = c.workers[0].handle.addr;
    let cluster_id = c.fs.file_blocks("/lake/ok.txt").await.unwrap().cluster_id;
    let mut worker = WorkerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    for rel in ["../outside/secret", "link-file", "a/../../outside/secret"] {
        let req = proto::ReadBlockRequest {
            block_id: 12345 << 24,
            offset: 0,
            length: 10,
            read_type: proto::ReadType::NoCache as i32,
            source: Some(proto::UfsBlockSource {
                location: Some(proto::UfsLocation {
                    mount_uri: format!("file://{}", lake.display()),
                    path: rel.into(),
                }),
                block_start: 0,
                block_length: 10,
                fingerprint: Some(proto::UfsFingerprint {
                    length: 10,
                    version: String::new(),
                }),
            }),
            cluster_id: cluster_id.clone(),
        };
        let got = match worker.read_block(req).await {
            Err(status) => Err(Error::from(status)),
            Ok(resp) => {
                let mut s = resp.into_inner();
                let mut data = Vec::new();
                let mut err = None;
                while let Some(m) = s.message().await.transpose() {
                    match m {
                        Ok(chunk) => data.extend_from_slice(&chunk.data),
                        Err(st) => err = Some(Error::from(st)),
                    }
                }
                err.map(Err).unwrap_or(Ok(data))
            }
        };
        let e = got.expect_err(rel);
        assert!(
            matches!(e, Error::InvalidPath { .. } | Error::NotPermitted { .. }),
            "{rel}: {e}"
        );
    }
    assert_eq!(
        std::fs::read(outside.join("secret")).unwrap(),
        b"top secret"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_in_a_new_folder_all_succeed() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    // Many clients make files (and folders) under the same folders, which none of
    // them finds: every one makes the missing folders, so each must see the
    // others' folders as made, not as a name already taken.
    for round in 0..3 {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let fs = c.fs.clone();
                tokio::spawn(async move {
                    let dir = format!("/new{round}/deeper");
                    if i % 2 == 0 {
                        let w = fs
                            .create(
                                &format!("{dir}/f{i}"),
                                CreateOptions {
                                    recursive: true,
                                    write_type: Some(WriteType::MustCache),
                                    ..Default::default()
                                },
                            )
                            .await?;
                        w.close().await.map(|_| ())
                    } else {
                        fs.mkdir(&format!("{dir}/d{i}"), true).await.map(|_| ())
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let names = list_names(&c.fs, &format!("/new{round}/deeper")).await;
        assert_eq!(names.len(), 16, "{names:?}");
    }
    c.stop().await;
}

/// A leader that dies between a mutation's under-store step and its journal
/// entry leaves the under-store changed and the namespace not. The next leader's
/// metadata sync takes the under-store's word: a file removed there is dropped, a
/// folder renamed there shows under its new name, a folder made there appears,
/// and a mutation retried by its client finds the state it expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_store_steps_without_their_entries_are_reconciled_by_sync() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let fs = &c.fs;
    let ufs = c.underfs();
    put(fs, "/r/gone", b"1").await;
    put(fs, "/r/old/f", b"2").await;
    fs.mkdir("/r/keep", false).await.unwrap();
    // A folder whose file only Strata holds (written MUST_CACHE).
    fs.mkdir("/r/mixed", false).await.unwrap();
    let mut w = fs
        .create(
            "/r/mixed/cached",
            CreateOptions {
                write_type: Some(WriteType::MustCache),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(b"only here").await.unwrap();
    w.close().await.unwrap();
    // The under-store steps of a delete, a rename and a mkdir, done and then lost
    // with their leader: nothing of them reached the namespace.
    std::fs::remove_file(ufs.join("r/gone")).unwrap();
    std::fs::rename(ufs.join("r/old"), ufs.join("r/new")).unwrap();
    std::fs::create_dir(ufs.join("r/made")).unwrap();
    std::fs::remove_dir_all(ufs.join("r/mixed")).unwrap();

    // The folder holding bytes only Strata has stays, with them.
    assert_eq!(list_names(fs, "/r").await, ["keep", "made", "mixed", "new"]);
    assert_eq!(get(fs, "/r/mixed/cached").await, b"only here");
    assert!(matches!(
        fs.get_status("/r/gone").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(get(fs, "/r/new/f").await, b"2");
    // The client's retries: the rename finds its source gone, the mkdir its
    // folder there (recursive), and the delete nothing to delete.
    assert!(matches!(
        fs.rename("/r/old", "/r/new").await,
        Err(Error::NotFound { .. })
    ));
    fs.mkdir("/r/made", true).await.unwrap();
    assert!(matches!(
        fs.delete("/r/gone", false).await,
        Err(Error::NotFound { .. })
    ));
    c.stop().await;
}
