//! Power loss without a power cut: a master keeps its data folder on a lazy
//! filesystem (`strata_tests::lazyfs`) that forgets every byte not synced when
//! its power is cut. The master is killed while clients create files, the power
//! goes, and the master starts again on what the disk kept: every create it
//! acknowledged must be there.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_client::{CreateOptions, FileSystem, WriteType};
use strata_tests::lazyfs::LazyFs;
use strata_tests::{test_config, Daemon};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The harness itself: what was synced survives a power loss, what was not is
/// gone, and a file never synced comes back empty.
#[test]
fn a_power_loss_keeps_synced_bytes_and_drops_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut fs = LazyFs::mount(&mnt).unwrap();

    let kept = std::fs::File::create(mnt.join("kept")).unwrap();
    kept.write_all_at(b"synced", 0).unwrap();
    kept.sync_data().unwrap();
    kept.write_all_at(b"-and-not", 6).unwrap();
    kept.write_all_at(b"S", 0).unwrap();
    std::fs::write(mnt.join("never-synced"), b"gone").unwrap();
    std::fs::create_dir(mnt.join("d")).unwrap();
    std::fs::rename(mnt.join("never-synced"), mnt.join("d/moved")).unwrap();
    assert_eq!(std::fs::read(mnt.join("kept")).unwrap(), b"Synced-and-not");
    assert!(fs.unsynced_bytes() > 0);
    drop(kept);

    let dropped = fs.power_loss().unwrap();
    assert_eq!(dropped.files, 2, "{dropped:?}");
    assert_eq!(std::fs::read(mnt.join("kept")).unwrap(), b"synced");
    assert_eq!(std::fs::read(mnt.join("d/moved")).unwrap(), b"");
    assert_eq!(fs.unsynced_bytes(), 0);
}

fn start_master(data: &Path, ufs: &Path, port: u16) -> Daemon {
    let (port, ufs) = (port.to_string(), format!("file://{}", ufs.display()));
    let args = [
        "master",
        "--port",
        &port,
        "--data-dir",
        data.to_str().unwrap(),
        "--root-ufs",
        &ufs,
    ];
    Daemon::spawn(Path::new(BIN), &args, &[], "master listening on")
}

/// Makes files, one at a time, recording each acknowledged path, until aborted.
async fn create_forever(fs: FileSystem, client: usize, acked: Arc<Mutex<Vec<String>>>) {
    let opts = CreateOptions {
        // Kept in Strata only: the under-store cannot bring a lost file back.
        write_type: Some(WriteType::MustCache),
        ..Default::default()
    };
    for i in 0.. {
        let path = format!("/c{client}-{i}");
        let made = async { fs.create(&path, opts.clone()).await?.close().await };
        if made.await.is_ok() {
            acked.lock().unwrap().push(path);
        }
    }
}

/// A lone master on the lazy filesystem, killed with SIGKILL while 8 clients
/// create files, then the power cut: every acknowledged create is there, and
/// complete, after the restart. The metastore's own writes are not synced (the log is what is
/// durable), so the test also checks that the power loss really took bytes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_master_keeps_every_acknowledged_create_through_a_power_loss() {
    let root = tempfile::tempdir().unwrap();
    let (mnt, ufs) = (root.path().join("mnt"), root.path().join("ufs"));
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&ufs).unwrap();
    let mut disk = LazyFs::mount(&mnt).unwrap();
    let data = mnt.join("data");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut cfg = test_config(Path::new("/nonexistent"), &[]);
    cfg.master_addresses = vec![address.clone()];

    let mut all_acked = Vec::new();
    for round in 0..3 {
        let master = start_master(&data, &ufs, port);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let mut clients = Vec::new();
        for c in 0..8 {
            let fs = FileSystem::connect(&cfg).await.unwrap();
            clients.push(tokio::spawn(create_forever(
                fs,
                round * 8 + c,
                acked.clone(),
            )));
        }
        // A different moment in each round.
        tokio::time::sleep(Duration::from_millis(700 + 300 * round as u64)).await;
        master.kill();
        // Nothing is acknowledged after the kill; the clients would only retry.
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        for c in &clients {
            c.abort();
        }
        let unsynced = disk.unsynced_bytes();
        let dropped = disk.power_loss().unwrap();
        println!(
            "round {round}: {} creates acknowledged; at the power loss {unsynced} bytes were \
             unsynced; dropped {dropped:?}",
            acked.len()
        );
        assert!(!acked.is_empty(), "the master acknowledged no create");
        assert!(
            dropped.bytes > 0,
            "the power loss dropped nothing: the test would not see a missing sync"
        );

        let master = start_master(&data, &ufs, port);
        let fs = FileSystem::connect(&cfg).await.unwrap();
        let mut names = std::collections::HashSet::new();
        let mut after = String::new();
        loop {
            let page = fs.list_page("/", &after, 1000).await.unwrap();
            // Complete files only: an acknowledged close must have made it
            // complete durably, not only created it.
            names.extend(
                page.entries
                    .iter()
                    .filter(|e| e.complete)
                    .map(|e| e.path.to_string()),
            );
            if !page.more {
                break;
            }
            after = page.cursor;
        }
        // This round's creates and every earlier round's.
        all_acked.extend(acked);
        let lost: Vec<_> = all_acked.iter().filter(|p| !names.contains(*p)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged creates lost, first {:?}",
            lost.len(),
            all_acked.len(),
            lost.first()
        );
        let status = master.terminate();
        assert!(status.success(), "{status}");
    }

    // The tightest case: the master killed and the power cut the moment one
    // create is acknowledged, before anything else could sync it by the way.
    let opts = CreateOptions {
        write_type: Some(WriteType::MustCache),
        ..Default::default()
    };
    for i in 0..10 {
        let master = start_master(&data, &ufs, port);
        let fs = FileSystem::connect(&cfg).await.unwrap();
        let path = format!("/last-{i}");
        fs.create(&path, opts.clone())
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
        master.kill();
        disk.power_loss().unwrap();
        let master = start_master(&data, &ufs, port);
        let fs = FileSystem::connect(&cfg).await.unwrap();
        let st = fs.get_status(&path).await;
        assert!(
            st.as_ref().is_ok_and(|st| st.complete),
            "{path} was acknowledged, then lost or left incomplete: {st:?}"
        );
        let status = master.terminate();
        assert!(status.success(), "{status}");
    }
}
