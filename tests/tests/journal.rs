//! The master on its Raft journal, end to end: the log, fsynced before each
//! answer, brings back what the metastore lost, and a master that cannot apply its
//! log does not serve.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use strata_client::FileSystem;
use strata_common::config::SiteConfig;
use strata_common::proto::{self, file_system_master_client::FileSystemMasterClient};
use strata_master::oplock::PausePoint;
use strata_master::{MasterDeps, MasterHandle};
use strata_tests::{list_names, test_config};
use tokio_util::sync::CancellationToken;

async fn start(data: &Path) -> (MasterHandle, CancellationToken, FileSystem, SiteConfig) {
    start_with(data, None, None).await
}

/// A master on `data`, with `ufs` mounted at the root when given.
async fn start_with(
    data: &Path,
    ufs: Option<&Path>,
    pause: Option<Arc<PausePoint>>,
) -> (MasterHandle, CancellationToken, FileSystem, SiteConfig) {
    let root_ufs = ufs.map_or(String::new(), |u| format!("file://{}", u.display()));
    let mut config = test_config(data, &[("master.root_ufs", format!("{root_ufs:?}"))]);
    let stop = CancellationToken::new();
    let master = strata_master::start(MasterDeps {
        config: config.clone(),
        shutdown: stop.clone(),
        pause_after_under_store: pause,
    })
    .await
    .expect("master starts");
    config.master_addresses = vec![master.addr.to_string()];
    let fs = FileSystem::connect(&config).await.expect("client");
    (master, stop, fs, config)
}

/// Replaces inode `id`'s record in a stopped master's metastore; returns the old one.
fn overwrite_inode(meta: &Path, id: u64, bytes: &[u8]) -> Vec<u8> {
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, meta).unwrap();
    let db = rocksdb::DB::open_cf(&opts, meta, cfs).unwrap();
    let cf = db.cf_handle("inodes").unwrap();
    let old = db.get_cf(cf, id.to_be_bytes()).unwrap().unwrap();
    db.put_cf(cf, id.to_be_bytes(), bytes).unwrap();
    old
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_replays_what_a_metastore_lost_and_a_failing_replay_refuses_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, stop, fs, config) = start(dir.path()).await;
    let folder = fs.mkdir("/d", false).await.unwrap().id.0;
    stop.cancel();
    master.wait().await.unwrap();
    drop(fs);
    let meta = config.metastore_dir();
    let early = dir.path().join("metastore-copy");
    copy_dir(&meta, &early);

    let (mut master, stop, fs, _) = start(dir.path()).await;
    fs.mkdir("/d/inner", false).await.unwrap();
    fs.mkdir("/e", false).await.unwrap();
    stop.cancel();
    master.wait().await.unwrap();
    drop(fs);

    // The metastore loses its latest writes (it is not fsynced; a power loss can
    // do this), and what it still has of /d is damaged: replaying the log fails,
    // and the master refuses to start rather than serve a state missing entries
    // it acknowledged.
    std::fs::remove_dir_all(&meta).unwrap();
    copy_dir(&early, &meta);
    let good = overwrite_inode(&meta, folder, b"\xff\xff\xff damaged");
    let refused = strata_master::start(MasterDeps {
        config: test_config(dir.path(), &[("master.root_ufs", "\"\"".to_string())]),
        shutdown: CancellationToken::new(),
        pause_after_under_store: None,
    })
    .await
    .err()
    .expect("a master that cannot replay its log does not start");
    assert!(refused.to_string().contains("corrupt inode"), "{refused}");

    // Repaired, the master replays the log: both acknowledged changes are back.
    overwrite_inode(&meta, folder, &good);
    let (mut master, stop, fs, _) = start(dir.path()).await;
    assert_eq!(list_names(&fs, "/d").await, vec!["inner"]);
    assert_eq!(list_names(&fs, "/").await, vec!["d", "e"]);
    stop.cancel();
    master.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_cut_off_from_its_caller_finishes_before_the_master_stops() {
    let dir = tempfile::tempdir().unwrap();
    let ufs = dir.path().join("ufs");
    std::fs::create_dir_all(&ufs).unwrap();
    let pause = Arc::new(PausePoint::default());
    let (mut master, stop, fs, _) = start_with(dir.path(), Some(&ufs), Some(pause.clone())).await;
    let id = fs.mkdir("/a", false).await.unwrap().id;
    pause.arm();
    let mut client = FileSystemMasterClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    let mut req = tonic::Request::new(proto::RenameRequest {
        src: "/a".into(),
        dst: "/b".into(),
        request: None,
    });
    req.set_timeout(Duration::from_millis(300));
    let call = tokio::spawn(async move { client.rename(req).await });
    pause.reached().await;
    assert!(call.await.unwrap().is_err(), "the caller gave up");
    assert!(ufs.join("b").exists(), "the under-store has moved");
    // The master is asked to stop while the rename is held between its two steps.
    stop.cancel();
    let stopping = tokio::spawn(async move { master.wait().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopping.is_finished(), "the master waits for the mutation");
    pause.release();
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("then stops")
        .unwrap()
        .unwrap();
    drop(fs);

    // Its entry was committed: the same folder is at the new name.
    let (mut master, stop, fs, _) = start_with(dir.path(), Some(&ufs), None).await;
    assert_eq!(fs.get_status("/b").await.unwrap().id, id);
    assert!(!fs.exists("/a").await.unwrap());
    stop.cancel();
    master.wait().await.unwrap();
}
