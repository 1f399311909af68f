//! A mutation sent again with its request id (a client retrying after a lost
//! answer, a timeout or a failover) is answered with its first result and never
//! applied twice: a create gets the file it made, a delete or rename succeeds, a
//! conflict is reported again even if the state changed since.

use strata_client::Error;
use strata_common::proto::{self, file_system_master_client::FileSystemMasterClient};
use strata_tests::{list_names, ClusterOptions, MiniCluster};
use tonic::transport::Channel;

const BS: u64 = 64 * 1024;

fn master_client(c: &MiniCluster) -> FileSystemMasterClient<Channel> {
    let ch =
        tonic::transport::Endpoint::from_shared(format!("http://{}", c.config.master_addresses[0]))
            .unwrap()
            .connect_lazy();
    FileSystemMasterClient::new(ch)
}

fn id(client: u8, seq: u64) -> Option<proto::RequestId> {
    Some(proto::RequestId {
        client: vec![client; 16].into(),
        seq,
        answered_below: 1,
    })
}

fn create(path: &str, request: Option<proto::RequestId>) -> proto::CreateFileRequest {
    proto::CreateFileRequest {
        path: path.into(),
        block_size: BS,
        recursive: false,
        write_type: proto::WriteType::MustCache as i32,
        request,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_mutation_gets_its_first_answer() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let mut m = master_client(&c);

    // Create: the retry answers the same file (same id, same lease), not
    // AlreadyExists; another request for the same path is a new create and fails.
    let first = m
        .create_file(create("/f", id(1, 1)))
        .await
        .unwrap()
        .into_inner();
    let again = m
        .create_file(create("/f", id(1, 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.info, again.info);
    assert_eq!(first.cluster_id, again.cluster_id);
    let other = m
        .create_file(create("/f", id(1, 2)))
        .await
        .map_err(Error::from);
    assert!(
        matches!(other, Err(Error::AlreadyExists { .. })),
        "{other:?}"
    );

    // mkdir without `recursive`: the retry answers the folder.
    let mkdir = || proto::CreateDirectoryRequest {
        path: "/d".into(),
        recursive: false,
        request: id(1, 3),
    };
    let d1 = m.create_directory(mkdir()).await.unwrap().into_inner();
    let d2 = m.create_directory(mkdir()).await.unwrap().into_inner();
    assert_eq!(d1.info, d2.info);

    // Rename and delete: the retry succeeds (the first moved or removed it).
    let rename = || proto::RenameRequest {
        src: "/d".into(),
        dst: "/e".into(),
        request: id(1, 4),
    };
    m.rename(rename()).await.unwrap();
    m.rename(rename()).await.unwrap();
    let delete = || proto::DeleteRequest {
        path: "/e".into(),
        recursive: false,
        file_id: 0,
        request: id(1, 5),
    };
    m.delete(delete()).await.unwrap();
    m.delete(delete()).await.unwrap();
    assert_eq!(list_names(&c.fs, "/").await, ["f"]);

    // Mount and unmount.
    let folder = c.new_folder("mounted");
    let mount = || proto::MountRequest {
        path: "/m".into(),
        uri: format!("file://{}", folder.display()),
        read_only: false,
        request: id(1, 6),
        options: Default::default(),
    };
    m.mount(mount()).await.unwrap();
    m.mount(mount()).await.unwrap();
    let unmount = || proto::UnmountRequest {
        path: "/m".into(),
        request: id(1, 7),
    };
    m.unmount(unmount()).await.unwrap();
    m.unmount(unmount()).await.unwrap();
    assert!(c
        .fs
        .mount_table()
        .await
        .unwrap()
        .iter()
        .all(|t| t.path.as_str() != "/m"));

    // Another client's request with the same number is its own.
    let theirs = m
        .create_file(create("/g", id(2, 1)))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(theirs.info, first.info);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_is_answered_again_even_after_the_state_changed() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let mut m = master_client(&c);
    m.create_directory(proto::CreateDirectoryRequest {
        path: "/x".into(),
        recursive: false,
        request: None,
    })
    .await
    .unwrap();
    let mkdir = || proto::CreateDirectoryRequest {
        path: "/x".into(),
        recursive: false,
        request: id(3, 1),
    };
    // The first attempt met /x taken: a conflict decided by the handler, not by
    // apply, so nothing is recorded and the retry runs again.
    let first = m.create_directory(mkdir()).await.map_err(Error::from);
    assert!(
        matches!(first, Err(Error::AlreadyExists { .. })),
        "{first:?}"
    );

    // A create that apply refuses (the folder it names vanished between the
    // handler's look and the commit) is recorded: shown at the store level in
    // `store::requests` tests. Here: a create answered once is answered the same
    // after its file was removed, and nothing is made again.
    let made = m
        .create_file(create("/y", id(3, 2)))
        .await
        .unwrap()
        .into_inner();
    c.fs.delete("/y", false).await.unwrap();
    let again = m
        .create_file(create("/y", id(3, 2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.info, again.info);
    assert!(!c.fs.exists("/y").await.unwrap(), "the retry made nothing");
    c.stop().await;
}

/// The retry arrives while the first attempt is held between its under-store
/// side effect and its journal entry: it waits for the path, then finds the
/// first attempt's result instead of reporting the source gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_racing_its_first_attempt_gets_the_first_answer() {
    let (c, pause) = strata_tests::paused_cluster().await;
    let file = strata_tests::write_through(&c.fs, "/a", b"").await;
    let rename = || proto::RenameRequest {
        src: "/a".into(),
        dst: "/b".into(),
        request: id(4, 1),
    };
    pause.arm();
    let mut m1 = master_client(&c);
    let first = tokio::spawn(async move { m1.rename(rename()).await });
    pause.reached().await;
    let mut m2 = master_client(&c);
    let retry = tokio::spawn(async move { m2.rename(rename()).await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    pause.release();
    first.await.unwrap().unwrap();
    retry.await.unwrap().unwrap();
    assert_eq!(c.fs.get_status("/b").await.unwrap().id, file);
    assert!(!c.fs.exists("/a").await.unwrap());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_request_ids_are_refused() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let mut m = master_client(&c);
    let bad = [
        proto::RequestId {
            client: vec![1; 15].into(),
            seq: 1,
            answered_below: 0,
        },
        proto::RequestId {
            client: vec![1; 16].into(),
            seq: 0,
            answered_below: 0,
        },
        proto::RequestId {
            client: vec![1; 16].into(),
            seq: 5,
            answered_below: 6,
        },
    ];
    for b in bad {
        let r = m
            .create_file(create("/z", Some(b.clone())))
            .await
            .map_err(Error::from);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{b:?}: {r:?}"
        );
        let r = m
            .delete(proto::DeleteRequest {
                path: "/z".into(),
                recursive: false,
                file_id: 0,
                request: Some(b.clone()),
            })
            .await
            .map_err(Error::from);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{b:?}: {r:?}"
        );
    }
    assert!(!c.fs.exists("/z").await.unwrap());
    c.stop().await;
}

/// The retry of a delete waits behind its first attempt (held between its
/// under-store step and its journal entry) and behind another client's mkdir of
/// the same path. When its turn comes the path names the other client's new
/// folder: the retry must answer from its first attempt's record, and touch
/// neither that folder nor its under-store copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_never_touches_what_another_client_made_since() {
    let (c, pause) = strata_tests::paused_cluster().await;
    strata_tests::write_through(&c.fs, "/x", b"").await;
    let delete = || proto::DeleteRequest {
        path: "/x".into(),
        recursive: false,
        file_id: 0,
        request: id(5, 1),
    };
    pause.arm();
    let mut m1 = master_client(&c);
    let first = tokio::spawn(async move { m1.delete(delete()).await });
    pause.reached().await;
    let mut m2 = master_client(&c);
    let other = tokio::spawn(async move {
        m2.create_directory(proto::CreateDirectoryRequest {
            path: "/x".into(),
            recursive: false,
            request: id(6, 1),
        })
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut m3 = master_client(&c);
    let retry = tokio::spawn(async move { m3.delete(delete()).await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    pause.release();
    first.await.unwrap().unwrap();
    other.await.unwrap().unwrap();
    retry.await.unwrap().unwrap();
    let x = c.fs.get_status("/x").await.unwrap();
    assert_eq!(x.kind, strata_client::FileKind::Directory);
    assert!(
        c.underfs().join("x").is_dir(),
        "the other client's folder is gone"
    );
    c.stop().await;
}

/// A request id is one mutation: sent again with another operation, it is
/// refused, never answered with the first one's result (a delete must not
/// "succeed" by borrowing a create's answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_id_reused_for_another_operation_is_refused() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let mut m = master_client(&c);
    m.create_file(create("/k", id(7, 1))).await.unwrap();
    let r = m
        .delete(proto::DeleteRequest {
            path: "/k".into(),
            recursive: false,
            file_id: 0,
            request: id(7, 1),
        })
        .await
        .map_err(Error::from);
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert!(c.fs.exists("/k").await.unwrap());
    c.stop().await;
}
