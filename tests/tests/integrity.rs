//! Integrity of the data path against races and hostile input: a block only ever
//! holds the bytes of the file version that produced it, nothing a writer sends is
//! visible before its end message, and absurd numbers from the wire are refused
//! without harming the worker.

use strata_client::{CreateOptions, Error, FileSystem, OpenOptions, ReadType, WriteType};
use strata_common::proto::{
    self, file_system_master_client::FileSystemMasterClient,
    worker_service_client::WorkerServiceClient, write_file_request::Msg,
};
use strata_tests::{list_names, pattern, ClusterOptions, MiniCluster};
use strata_worker::metrics::{BLOCKS_CACHED, BYTES_WRITTEN_CACHE};
use tokio::io::AsyncReadExt;

const BS: u64 = 64 * 1024;

async fn read_all(fs: &FileSystem, path: &str) -> Vec<u8> {
    let mut r = fs.open(path, OpenOptions::default()).await.unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

fn worker_client(c: &MiniCluster, i: usize) -> WorkerServiceClient<tonic::transport::Channel> {
    let ch =
        tonic::transport::Endpoint::from_shared(format!("http://{}", c.workers[i].handle.addr))
            .unwrap()
            .connect_lazy();
    WorkerServiceClient::new(ch)
}

/// The cluster's id, as a client learns it from the master.
async fn cluster_id(c: &MiniCluster) -> String {
    let mut w =
        c.fs.create("/.probe", CreateOptions::default())
            .await
            .unwrap();
    w.write(b"x").await.unwrap();
    w.close().await.unwrap();
    let id = c.fs.file_blocks("/.probe").await.unwrap().cluster_id;
    c.fs.delete("/.probe", false).await.unwrap();
    id
}

type WriteCall =
    tokio::task::JoinHandle<Result<tonic::Response<proto::WriteFileResponse>, tonic::Status>>;

/// A raw write stream to the first worker, fed message by message through the
/// sender; the call ends when the sender is dropped.
fn open_write_stream(
    c: &MiniCluster,
) -> (
    tokio::sync::mpsc::Sender<proto::WriteFileRequest>,
    WriteCall,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut client = worker_client(c, 0);
    let call = tokio::spawn(async move {
        client
            .write_file(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    (tx, call)
}

/// The first message of a raw write stream.
fn header(
    file_id: u64,
    block_size: u64,
    write_type: i32,
    ufs: Option<proto::UfsLocation>,
    cluster_id: String,
) -> proto::WriteFileRequest {
    proto::WriteFileRequest {
        msg: Some(Msg::Header(proto::WriteFileHeader {
            file_id,
            block_size,
            write_type,
            ufs,
            sync: false,
            cluster_id,
        })),
    }
}

fn master_client(c: &MiniCluster) -> FileSystemMasterClient<tonic::transport::Channel> {
    let ch =
        tonic::transport::Endpoint::from_shared(format!("http://{}", c.config.master_addresses[0]))
            .unwrap()
            .connect_lazy();
    FileSystemMasterClient::new(ch)
}

/// `/a` is looked up (cold), then renamed to `/b`, and a new `/a` of the same length
/// appears in the under-store before the first byte is read. The read-through must
/// not cache the new file's bytes as the old file's block: the old reader is refused,
/// `/b` reads its own bytes, and so does the new `/a`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_swapped_in_under_a_cold_reader_is_not_cached_as_the_old_one() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let ufs = c.underfs();
    let old = pattern((BS + 100) as usize, 1);
    let new = pattern((BS + 100) as usize, 2);
    std::fs::write(ufs.join("a"), &old).unwrap();
    // Opening looks the file up and takes its block list; no byte is read yet.
    let mut reader = c.fs.open("/a", OpenOptions::default()).await.unwrap();
    assert_eq!(reader.info().cached_percent, 0);
    c.fs.rename("/a", "/b").await.unwrap();
    std::fs::write(ufs.join("a"), &new).unwrap();

    let mut got = Vec::new();
    match reader.read_to_end(&mut got).await {
        Err(e) => {
            let inner = e.get_ref().and_then(|e| e.downcast_ref::<Error>()).cloned();
            assert!(
                matches!(inner, Some(Error::UfsChanged { .. })),
                "expected UfsChanged, got {e:?}"
            );
        }
        Ok(_) => panic!("the old reader read the swapped-in file's bytes"),
    }
    assert_eq!(read_all(&c.fs, "/b").await, old, "/b keeps its own bytes");
    assert_eq!(read_all(&c.fs, "/a").await, new);
    // Now cached: a second read of each is still its own.
    assert_eq!(read_all(&c.fs, "/b").await, old);
    assert_eq!(read_all(&c.fs, "/a").await, new);

    // A file changed in place outside Strata (same length) is refused the same way.
    std::fs::write(ufs.join("c"), &old).unwrap();
    let mut reader =
        c.fs.open(
            "/c",
            OpenOptions {
                read_type: Some(ReadType::NoCache),
            },
        )
        .await
        .unwrap();
    let before = std::fs::metadata(ufs.join("c"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::write(ufs.join("c"), &new).unwrap();
    // Same inode, same length: only the modification time tells. Set it apart
    // explicitly, so the test does not depend on the clock's granularity.
    std::fs::File::options()
        .write(true)
        .open(ufs.join("c"))
        .unwrap()
        .set_modified(before + std::time::Duration::from_secs(1))
        .unwrap();
    let mut got = Vec::new();
    assert!(reader.read_to_end(&mut got).await.is_err());
    c.stop().await;
}

/// A writer that sends whole blocks and then goes away without its end message
/// leaves nothing in the worker's storage and nothing the master would list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_cut_off_mid_stream_publishes_no_block() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let w =
        c.fs.create(
            "/cut",
            CreateOptions {
                write_type: Some(WriteType::MustCache),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let file_id = w.info().id.0;
    let cluster_id = cluster_id(&c).await;
    let written0 = c.worker_counter(BYTES_WRITTEN_CACHE).await;
    let cached0 = c.worker_counter(BLOCKS_CACHED).await;
    let (tx, call) = open_write_stream(&c);
    tx.send(header(
        file_id,
        BS,
        proto::WriteType::MustCache as i32,
        None,
        cluster_id,
    ))
    .await
    .unwrap();
    for i in 0..3 {
        tx.send(proto::WriteFileRequest {
            msg: Some(Msg::Data(pattern(BS as usize, i).into())),
        })
        .await
        .unwrap();
    }
    // Wait until the worker has taken all three blocks, then vanish.
    let mut written = 0;
    for _ in 0..200 {
        written = c.worker_counter(BYTES_WRITTEN_CACHE).await - written0;
        if written >= 3 * BS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(written, 3 * BS);
    assert_eq!(
        c.worker_counter(BLOCKS_CACHED).await,
        cached0,
        "nothing is published before the end message"
    );
    drop(tx);
    let answer = call.await.unwrap();
    assert!(answer.is_err(), "a stream without its end is aborted");
    assert_eq!(c.worker_counter(BLOCKS_CACHED).await, cached0);
    assert!(!c.fs.get_status("/cut").await.unwrap().complete);
    let known: u64 =
        c.fs.workers()
            .await
            .unwrap()
            .iter()
            .map(|w| w.block_count)
            .sum();
    assert_eq!(known, 0, "the master knows no block of the cut-off file");
    drop(w);
    c.stop().await;
}

/// Completing a file twice (a client retrying after a lost answer) answers the same
/// status; completing it with another length is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completing_a_file_is_idempotent() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let mut w =
        c.fs.create(
            "/twice",
            CreateOptions {
                write_type: Some(WriteType::MustCache),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(b"abc").await.unwrap();
    let id = w.info().id.0;
    let info = w.close().await.unwrap();
    let again = master_client(&c)
        .complete_file(proto::CompleteFileRequest {
            file_id: id,
            length: 3,
            persisted: false,
            ufs_fingerprint: None,
            ufs: None,
        })
        .await
        .expect("completing again is a no-op")
        .into_inner();
    assert_eq!(again.info.unwrap().length, info.length);
    let other = master_client(&c)
        .complete_file(proto::CompleteFileRequest {
            file_id: id,
            length: 4,
            persisted: false,
            ufs_fingerprint: None,
            ufs: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(Error::from(other), Error::NotPermitted { .. }));
    assert_eq!(read_all(&c.fs, "/twice").await, b"abc");
    c.stop().await;
}

fn is_invalid_argument(r: Result<impl std::fmt::Debug, tonic::Status>) -> bool {
    match r {
        Err(status) => matches!(Error::from(status), Error::InvalidArgument { .. }),
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

/// Sizes, offsets and lengths from the wire are bounded before they size anything:
/// each absurd value is an `InvalidArgument`, and the worker and master keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absurd_numbers_from_the_wire_are_invalid_arguments() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let mut master = master_client(&c);
    for block_size in [0, 1, 4095, u64::MAX, 8 << 30] {
        let r = master
            .create_file(proto::CreateFileRequest {
                path: format!("/bs-{block_size}"),
                block_size,
                recursive: false,
                write_type: proto::WriteType::MustCache as i32,
                request: None,
            })
            .await;
        assert!(is_invalid_argument(r), "block_size {block_size}");
    }

    let mut worker = worker_client(&c, 0);
    let cluster_id = cluster_id(&c).await;
    let source = |block_start: u64, block_length: u64, file_length: u64| proto::UfsBlockSource {
        location: Some(proto::UfsLocation {
            mount_uri: format!("file://{}", c.underfs().display()),
            path: "x".into(),
        }),
        block_start,
        block_length,
        fingerprint: Some(proto::UfsFingerprint {
            length: file_length,
            version: String::new(),
        }),
    };
    let reads = [
        // A block far larger than any block may be.
        (0, 1, source(0, u64::MAX, u64::MAX)),
        // A range whose end overflows.
        (u64::MAX, 2, source(0, BS, BS)),
        // A block that ends past the file.
        (0, 1, source(BS, BS, BS)),
        // A block start plus length that overflows.
        (0, 1, source(u64::MAX, 2, u64::MAX)),
        // Nothing wanted.
        (0, 0, source(0, BS, BS)),
    ];
    for (offset, length, src) in reads {
        let r = worker
            .read_block(proto::ReadBlockRequest {
                block_id: 1 << 24,
                offset,
                length,
                read_type: proto::ReadType::Cache as i32,
                source: Some(src.clone()),
                cluster_id: cluster_id.clone(),
            })
            .await;
        assert!(is_invalid_argument(r), "{offset}+{length} of {src:?}");
    }
    let mut no_fingerprint = source(0, BS, BS);
    no_fingerprint.fingerprint = None;
    let r = worker
        .read_block(proto::ReadBlockRequest {
            block_id: 1 << 24,
            offset: 0,
            length: 1,
            read_type: proto::ReadType::Cache as i32,
            source: Some(no_fingerprint),
            cluster_id: cluster_id.clone(),
        })
        .await;
    assert!(is_invalid_argument(r));
    // Another cluster's block: refused, never served from this storage.
    let r = worker
        .read_block(proto::ReadBlockRequest {
            block_id: 1 << 24,
            offset: 0,
            length: 1,
            read_type: proto::ReadType::Cache as i32,
            source: Some(source(0, BS, BS)),
            cluster_id: "another".into(),
        })
        .await;
    assert!(matches!(
        r.map(|_| ()).map_err(Error::from),
        Err(Error::Unavailable { .. })
    ));

    for block_size in [0, 1, u64::MAX] {
        let header = header(
            99,
            block_size,
            proto::WriteType::MustCache as i32,
            None,
            cluster_id.clone(),
        );
        let r = worker.write_file(futures::stream::iter(vec![header])).await;
        assert!(is_invalid_argument(r), "block_size {block_size}");
    }

    // Everything still works.
    let data = pattern(3 * BS as usize + 5, 9);
    let mut w = c.fs.create("/ok", CreateOptions::default()).await.unwrap();
    w.write(&data).await.unwrap();
    w.close().await.unwrap();
    assert_eq!(read_all(&c.fs, "/ok").await, data);
    c.stop().await;
}

/// A rename whose caller gives up (its deadline passes) after the under-store was
/// changed but before the namespace was: the mutation still completes, and the
/// namespace and the under-store agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_rename_leaves_namespace_and_under_store_agreeing() {
    let pause = std::sync::Arc::new(strata_master::oplock::PausePoint::default());
    let c = MiniCluster::start(ClusterOptions {
        master_pause: Some(pause.clone()),
        ..Default::default()
    })
    .await;
    let data = pattern(1000, 3);
    let mut w =
        c.fs.create(
            "/d/f",
            CreateOptions {
                recursive: true,
                write_type: Some(WriteType::CacheThrough),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(&data).await.unwrap();
    let id = w.close().await.unwrap().id;

    pause.arm();
    let mut master = master_client(&c);
    let mut req = tonic::Request::new(proto::RenameRequest {
        src: "/d/f".into(),
        dst: "/d/g".into(),
        request: None,
    });
    req.set_timeout(std::time::Duration::from_millis(300));
    let call = tokio::spawn(async move { master.rename(req).await });
    pause.reached().await;
    // The under-store has moved; the caller's deadline passes while the mutation
    // is held between its two steps.
    let answer = call.await.unwrap();
    assert!(answer.is_err(), "the caller gave up: {answer:?}");
    assert!(c.underfs().join("d/g").exists());
    pause.release();

    // The mutation goes on without its caller: the same inode moves (a load of the
    // under-store's new name by metadata sync would make a new one, and keep /d/f).
    // (Generous: the entry is fsynced, and other tests may be filling the disk.)
    let mut renamed = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if c.fs.get_status("/d/g").await.map(|f| f.id) == Ok(id) {
            renamed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(renamed, "the rename did not complete without its caller");
    assert!(!c.fs.exists("/d/f").await.unwrap());
    assert!(!c.underfs().join("d/f").exists());
    assert_eq!(read_all(&c.fs, "/d/g").await, data);
    c.stop().await;
}

/// Every file below `dir`, relative, temp files included.
fn under_store_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(
                under_store_files(&e.path())
                    .into_iter()
                    .map(|n| format!("{name}/{n}")),
            );
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// A file deleted while its `CACHE_THROUGH` writer is still streaming stays deleted:
/// the writer's close fails, and neither the namespace nor the under-store gets the
/// file back; no staged copy is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_during_a_write_stays_deleted() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    for wt in [WriteType::CacheThrough, WriteType::Through] {
        let path = format!("/del-{wt}");
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
        // Enough to open the stream and reach the worker.
        w.write(&pattern(3 * BS as usize, 4)).await.unwrap();
        c.fs.delete(&path, false).await.unwrap();
        w.write(&pattern(BS as usize, 5)).await.unwrap();
        let closed = w.close().await;
        assert!(closed.is_err(), "{wt}: close of a deleted file: {closed:?}");
        assert!(!c.fs.exists(&path).await.unwrap(), "{wt}");
        assert_eq!(
            under_store_files(&c.underfs()),
            Vec::<String>::new(),
            "{wt}"
        );
    }
    c.stop().await;
}

/// A folder renamed while a file in it is being written: the file completes in the
/// folder's new place, with its bytes, and no staged copy is left anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_folder_renamed_during_a_write_takes_the_file_along() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let data = pattern(2 * BS as usize + 7, 6);
    let mut w =
        c.fs.create(
            "/old/f",
            CreateOptions {
                recursive: true,
                write_type: Some(WriteType::CacheThrough),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(&data[..BS as usize]).await.unwrap();
    // Once the worker has staged the copy, the folder moves under it.
    let staged = |files: Vec<String>| files.iter().any(|f| f.ends_with(".strata-tmp"));
    for _ in 0..500 {
        if staged(under_store_files(&c.underfs())) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(staged(under_store_files(&c.underfs())));
    c.fs.rename("/old", "/new").await.unwrap();
    w.write(&data[BS as usize..]).await.unwrap();
    let info = w.close().await.unwrap();
    assert_eq!(info.path.as_str(), "/new/f");
    assert_eq!(read_all(&c.fs, "/new/f").await, data);
    assert_eq!(under_store_files(&c.underfs()), ["new/f"]);
    // The published copy is the one recorded: a cold read of it is accepted.
    c.fs.free("/new/f").await.unwrap();
    let mut r =
        c.fs.open(
            "/new/f",
            OpenOptions {
                read_type: Some(ReadType::NoCache),
            },
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, data);
    c.stop().await;
}

/// Writer A's file is deleted and another made at the same path by B while A still
/// streams. A's close fails and changes nothing: B's file keeps its bytes, in the
/// namespace and in the under-store, and A's failure does not remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_whose_file_was_replaced_leaves_the_new_file_alone() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let opts = || CreateOptions {
        write_type: Some(WriteType::CacheThrough),
        ..Default::default()
    };
    let mut a = c.fs.create("/m", opts()).await.unwrap();
    a.write(&pattern(2 * BS as usize, 10)).await.unwrap();
    c.fs.delete("/m", false).await.unwrap();
    let b_bytes = pattern(BS as usize + 3, 11);
    let mut b = c.fs.create("/m", opts()).await.unwrap();
    b.write(&b_bytes).await.unwrap();
    b.close().await.unwrap();
    a.write(&pattern(BS as usize, 12)).await.unwrap();
    assert!(a.close().await.is_err());
    assert_eq!(read_all(&c.fs, "/m").await, b_bytes);
    assert_eq!(std::fs::read(c.underfs().join("m")).unwrap(), b_bytes);
    assert_eq!(under_store_files(&c.underfs()), ["m"]);
    c.stop().await;
}

/// A read request cannot remove or evict what storage holds: a wrong block length
/// for a cached block is refused and the block stays; a request naming an
/// under-store file that is not the recorded one evicts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_request_cannot_remove_or_evict_blocks() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let data = pattern(BS as usize, 13);
    let mut w =
        c.fs.create(
            "/only",
            CreateOptions {
                write_type: Some(WriteType::MustCache),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(&data).await.unwrap();
    w.close().await.unwrap();
    let blocks = c.fs.file_blocks("/only").await.unwrap();
    std::fs::write(c.underfs().join("other"), b"other").unwrap();
    let mut worker = worker_client(&c, 0);
    let evicted0 = c
        .worker_counter(strata_worker::metrics::BLOCKS_EVICTED)
        .await;
    let src = |block_length: u64, version: &str| proto::UfsBlockSource {
        location: Some(proto::UfsLocation {
            mount_uri: format!("file://{}", c.underfs().display()),
            path: "other".into(),
        }),
        block_start: 0,
        block_length,
        fingerprint: Some(proto::UfsFingerprint {
            length: block_length,
            version: version.into(),
        }),
    };
    let r = worker
        .read_block(proto::ReadBlockRequest {
            block_id: blocks.blocks[0].block_id.0,
            offset: 0,
            length: 1,
            read_type: proto::ReadType::Cache as i32,
            source: Some(src(1, "")),
            cluster_id: blocks.cluster_id.clone(),
        })
        .await;
    assert!(is_invalid_argument(r));
    // A block id nobody holds, a block as large as the tier, a file that is not it.
    let mut r = worker
        .read_block(proto::ReadBlockRequest {
            block_id: 999 << 24,
            offset: 0,
            length: 1,
            read_type: proto::ReadType::Cache as i32,
            source: Some(src(64 << 20, "not-its-version")),
            cluster_id: blocks.cluster_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let refused = r.message().await;
    assert!(
        matches!(refused.map_err(Error::from), Err(Error::UfsChanged { .. })),
        "the file is not the one named"
    );
    assert_eq!(
        c.worker_counter(strata_worker::metrics::BLOCKS_EVICTED)
            .await,
        evicted0
    );
    assert_eq!(read_all(&c.fs, "/only").await, data);
    c.stop().await;
}

/// A write stream that cuts a file at another block size than the file's: blocks
/// of a fitting length but other bytes. The master refuses them and the worker
/// drops them, so none is ever served as the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocks_cut_at_another_block_size_are_refused() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let w =
        c.fs.create(
            "/cut-at-8k",
            CreateOptions {
                write_type: Some(WriteType::MustCache),
                block_size: Some(8192),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let file_id = w.info().id.0;
    let cluster_id = cluster_id(&c).await;
    let data = pattern(3 * 4096, 14);
    let msgs = vec![
        header(
            file_id,
            4096,
            proto::WriteType::MustCache as i32,
            None,
            cluster_id,
        ),
        proto::WriteFileRequest {
            msg: Some(Msg::Data(data.clone().into())),
        },
        proto::WriteFileRequest {
            msg: Some(Msg::End(proto::WriteFileEnd {
                length: data.len() as u64,
            })),
        },
    ];
    let answer = worker_client(&c, 0)
        .write_file(futures::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.cached_blocks.is_empty(), "{answer:?}");
    master_client(&c)
        .complete_file(proto::CompleteFileRequest {
            file_id,
            length: data.len() as u64,
            persisted: false,
            ufs_fingerprint: None,
            ufs: None,
        })
        .await
        .unwrap();
    assert_eq!(
        c.fs.get_status("/cut-at-8k").await.unwrap().cached_percent,
        0
    );
    drop(w);
    c.stop().await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A long write holds one open block file, not one per block written so far: its
/// full blocks are closed as they fill (the worker runs in this process, so its
/// descriptors are ours to count).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_write_holds_one_open_block_file() {
    const BLOCKS: u64 = 200;
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let w =
        c.fs.create(
            "/long",
            CreateOptions {
                write_type: Some(WriteType::MustCache),
                block_size: Some(4096),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let file_id = w.info().id.0;
    let cluster_id = cluster_id(&c).await;
    let written0 = c.worker_counter(BYTES_WRITTEN_CACHE).await;
    let (tx, call) = open_write_stream(&c);
    tx.send(header(
        file_id,
        4096,
        proto::WriteType::MustCache as i32,
        None,
        cluster_id,
    ))
    .await
    .unwrap();
    let before = open_fds();
    for i in 0..BLOCKS {
        tx.send(proto::WriteFileRequest {
            msg: Some(Msg::Data(pattern(4096, i).into())),
        })
        .await
        .unwrap();
    }
    for _ in 0..500 {
        if c.worker_counter(BYTES_WRITTEN_CACHE).await - written0 >= BLOCKS * 4096 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        c.worker_counter(BYTES_WRITTEN_CACHE).await - written0,
        BLOCKS * 4096
    );
    let during = open_fds();
    assert!(
        during < before + 20,
        "{} descriptors opened for {BLOCKS} blocks in flight",
        during.saturating_sub(before)
    );
    tx.send(proto::WriteFileRequest {
        msg: Some(Msg::End(proto::WriteFileEnd {
            length: BLOCKS * 4096,
        })),
    })
    .await
    .unwrap();
    drop(tx);
    let answer = call.await.unwrap().unwrap().into_inner();
    assert_eq!(answer.cached_blocks.len() as u64, BLOCKS);
    drop(w);
    c.stop().await;
}

/// A client that names an under-store folder nobody mounted cannot make a worker
/// write or read there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_touch_only_mounted_under_stores() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let elsewhere = c.new_folder("not-mounted");
    std::fs::write(elsewhere.join("secret"), b"secret").unwrap();
    let cluster_id = cluster_id(&c).await;
    let location = |path: &str| proto::UfsLocation {
        mount_uri: format!("file://{}", elsewhere.display()),
        path: path.into(),
    };
    let msgs = vec![
        header(
            4242,
            4096,
            proto::WriteType::Through as i32,
            Some(location("planted")),
            cluster_id.clone(),
        ),
        proto::WriteFileRequest {
            msg: Some(Msg::Data(bytes::Bytes::from_static(b"planted"))),
        },
        proto::WriteFileRequest {
            msg: Some(Msg::End(proto::WriteFileEnd { length: 7 })),
        },
    ];
    let mut worker = worker_client(&c, 0);
    let written = worker.write_file(futures::stream::iter(msgs)).await;
    assert!(
        matches!(
            written.map_err(Error::from),
            Err(Error::NotPermitted { .. })
        ),
        "a write to an unmounted folder"
    );
    let read = worker
        .read_block(proto::ReadBlockRequest {
            block_id: 4242 << 24,
            offset: 0,
            length: 6,
            read_type: proto::ReadType::NoCache as i32,
            source: Some(proto::UfsBlockSource {
                location: Some(location("secret")),
                block_start: 0,
                block_length: 6,
                fingerprint: Some(proto::UfsFingerprint {
                    length: 6,
                    version: String::new(),
                }),
            }),
            cluster_id,
        })
        .await;
    assert!(
        matches!(
            read.map(|_| ()).map_err(Error::from),
            Err(Error::NotPermitted { .. })
        ),
        "a read of an unmounted folder"
    );
    let mut names: Vec<_> = std::fs::read_dir(&elsewhere)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["secret"]);
    // Mounted afterwards, it is served.
    c.fs.mount(
        "/elsewhere",
        &format!("file://{}", elsewhere.display()),
        true,
    )
    .await
    .unwrap();
    assert_eq!(read_all(&c.fs, "/elsewhere/secret").await, b"secret");
    c.stop().await;
}

/// A cluster whose write leases last one second.
async fn short_lease_cluster() -> MiniCluster {
    MiniCluster::start(ClusterOptions {
        config: vec![("master.write_lease", "\"1s\"".to_string())],
        ..Default::default()
    })
    .await
}

/// Waits (up to 30 s) until `path` no longer exists.
async fn wait_until_gone(fs: &FileSystem, path: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fs.exists(path).await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "{path} outlived its write lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits (up to 10 s) until `dir` holds `n` files (a writer's stream starts on
/// the worker asynchronously).
async fn wait_for_files(dir: &std::path::Path, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while under_store_files(dir).len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} holds {:?}, not {n} files",
            dir.display(),
            under_store_files(dir)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A writer that vanishes part way (dropped without close: no end message, no more
/// lease renewals) leaves an incomplete file. Once its lease runs out the master
/// removes it: the inode, the staged under-store copy, and any block.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vanished_writer_is_cleaned_up_when_its_lease_expires() {
    let c = short_lease_cluster().await;
    for wt in [
        WriteType::CacheThrough,
        WriteType::Through,
        WriteType::MustCache,
    ] {
        let path = format!("/vanish-{wt}");
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
        w.write(&pattern(3 * BS as usize + 17, 8)).await.unwrap();
        assert!(!c.fs.get_status(&path).await.unwrap().complete);
        if wt.persists() {
            wait_for_files(&c.underfs(), 1).await;
            let staged = under_store_files(&c.underfs());
            assert!(
                staged.len() == 1 && staged[0].ends_with(".strata-tmp"),
                "{wt}: the writer stages its copy: {staged:?}"
            );
        }
        drop(w);
        wait_until_gone(&c.fs, &path).await;
        assert_eq!(
            under_store_files(&c.underfs()),
            Vec::<String>::new(),
            "{wt}: the staged copy goes with the file"
        );
        let known: u64 =
            c.fs.workers()
                .await
                .unwrap()
                .iter()
                .map(|w| w.block_count)
                .sum();
        assert_eq!(known, 0, "{wt}: no block of the vanished writer remains");
        assert!(c.fs.list("/").await.unwrap().is_empty(), "{wt}");
    }
    c.stop().await;
}

/// A live writer keeps its file however long it stays open: its lease is renewed
/// in the background while it sits idle for several lease lengths.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_writer_keeps_its_lease_while_idle() {
    let c = short_lease_cluster().await;
    let data = pattern(2 * BS as usize + 5, 9);
    let mut w =
        c.fs.create("/slow", CreateOptions::default())
            .await
            .unwrap();
    w.write(&data[..BS as usize]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    w.write(&data[BS as usize..]).await.unwrap();
    let info = w.close().await.unwrap();
    assert!(info.complete);
    assert_eq!(read_all(&c.fs, "/slow").await, data);
    c.stop().await;
}

/// At the RPC level: a file nobody renews is gone after its lease, so its
/// completion is refused; renewing a completed or unknown file reports it lost;
/// and a renewal naming absurdly many files is an invalid argument.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_at_the_rpc_level() {
    let c = short_lease_cluster().await;
    let mut m = master_client(&c);
    let created = m
        .create_file(proto::CreateFileRequest {
            path: "/unrenewed".into(),
            block_size: BS,
            recursive: false,
            write_type: proto::WriteType::MustCache as i32,
            request: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.lease_ms, 1000);
    let id = created.info.unwrap().id;
    let renewed = m
        .renew_lease(proto::RenewLeaseRequest {
            file_ids: vec![id, u64::MAX],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.lost, [u64::MAX]);
    wait_until_gone(&c.fs, "/unrenewed").await;
    let late = m
        .complete_file(proto::CompleteFileRequest {
            file_id: id,
            length: 0,
            persisted: false,
            ufs_fingerprint: None,
            ufs: None,
        })
        .await;
    assert!(matches!(
        late.map_err(Error::from),
        Err(Error::NotFound { .. })
    ));
    let renewed = m
        .renew_lease(proto::RenewLeaseRequest { file_ids: vec![id] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.lost, [id]);
    // A completed file has no lease to renew.
    let w =
        c.fs.create("/done", CreateOptions::default())
            .await
            .unwrap();
    let done = w.close().await.unwrap();
    let renewed = m
        .renew_lease(proto::RenewLeaseRequest {
            file_ids: vec![done.id.0],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.lost, [done.id.0]);
    assert!(is_invalid_argument(
        m.renew_lease(proto::RenewLeaseRequest {
            file_ids: vec![7; 10_001],
        })
        .await
    ));
    c.stop().await;
}

/// Staged copies no writer can publish any more (their file is gone, or lives in
/// another folder) are removed when their folder is listed; a live writer's copy
/// stays, and the file completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_staged_copies_are_swept_by_a_listing() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    c.fs.mkdir("/d", false).await.unwrap();
    let data = pattern(BS as usize + 3, 10);
    let mut live =
        c.fs.create("/d/live", CreateOptions::default())
            .await
            .unwrap();
    live.write(&data).await.unwrap();
    let elsewhere =
        c.fs.create("/other", CreateOptions::default())
            .await
            .unwrap();
    let d = c.underfs().join("d");
    // One for no file at all, one for a file of another folder.
    for key in [0xdead_beef_u64, elsewhere.info().id.0] {
        std::fs::write(d.join(format!(".{key:x}.strata-tmp")), b"stale").unwrap();
    }
    // The live writer's staged copy exists once its stream has started.
    wait_for_files(&d, 3).await;
    assert_eq!(list_names(&c.fs, "/d").await, ["live"]);
    let left = under_store_files(&d);
    assert_eq!(
        left,
        [format!(".{:x}.strata-tmp", live.info().id.0)],
        "only the live writer's copy stays"
    );
    live.close().await.unwrap();
    assert_eq!(read_all(&c.fs, "/d/live").await, data);
    assert_eq!(under_store_files(&d), ["live"]);
    elsewhere.close().await.unwrap();
    c.stop().await;
}

/// A folder of more inodes than one reclaim batch, some of its files cached and
/// one being written, is deleted: it is gone at once, its path can be used again
/// while its inodes are reclaimed, the cached blocks leave the workers, and the
/// writer inside cannot complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_big_folder_deleted_recursively_is_reclaimed_in_the_background() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let big = c.underfs().join("big");
    for d in 0..3 {
        let sub = big.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..2000 {
            std::fs::write(sub.join(format!("f{i:04}")), format!("{d}/{i}")).unwrap();
        }
    }
    for d in 0..3 {
        assert_eq!(c.fs.list(&format!("/big/d{d}")).await.unwrap().len(), 2000);
        assert_eq!(
            read_all(&c.fs, &format!("/big/d{d}/f0007")).await,
            format!("{d}/7").as_bytes()
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let blocks = || async {
        c.fs.workers()
            .await
            .unwrap()
            .iter()
            .map(|w| w.block_count)
            .sum::<u64>()
    };
    while blocks().await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "reads were not cached"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut writer =
        c.fs.create("/big/d0/new", CreateOptions::default())
            .await
            .unwrap();
    writer.write(b"late").await.unwrap();

    c.fs.delete("/big", true).await.unwrap();
    assert!(!c.fs.exists("/big").await.unwrap());
    assert!(!big.exists());
    c.fs.mkdir("/big/d0", true).await.unwrap();
    assert!(list_names(&c.fs, "/big/d0").await.is_empty());
    assert!(matches!(writer.close().await, Err(Error::NotFound { .. })));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while blocks().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted folder's cached blocks were not dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(under_store_files(&c.underfs()), Vec::<String>::new());
    c.stop().await;
}

/// A delete that names the file it meant (an abandoned writer removing its own
/// incomplete file) removes only that file: once the path names another file, the
/// delete is refused and the other file stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_naming_a_file_id_spares_a_newer_file_at_the_path() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let mut m = master_client(&c);
    let old =
        c.fs.create("/same", CreateOptions::default())
            .await
            .unwrap();
    let old_id = old.info().id.0;
    drop(old);
    c.fs.delete("/same", false).await.unwrap();
    let mut new =
        c.fs.create("/same", CreateOptions::default())
            .await
            .unwrap();
    new.write(b"newer").await.unwrap();
    let new = new.close().await.unwrap();
    let refused = m
        .delete(proto::DeleteRequest {
            path: "/same".into(),
            recursive: false,
            file_id: old_id,
            request: None,
        })
        .await;
    assert!(matches!(
        refused.map_err(Error::from),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(read_all(&c.fs, "/same").await, b"newer");
    m.delete(proto::DeleteRequest {
        path: "/same".into(),
        recursive: false,
        file_id: new.id.0,
        request: None,
    })
    .await
    .unwrap();
    assert!(!c.fs.exists("/same").await.unwrap());
    c.stop().await;
}

/// A folder is renamed while a file inside it is being completed: the rename holds
/// the folder between its under-store move and its journal entry while the writer
/// closes. The completion follows the file to its new path; the under-store copy
/// is published there and nothing is left under the old name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_completed_while_its_folder_is_renamed_lands_at_the_new_path() {
    let pause = std::sync::Arc::new(strata_master::oplock::PausePoint::default());
    let c = MiniCluster::start(ClusterOptions {
        master_pause: Some(pause.clone()),
        ..Default::default()
    })
    .await;
    let data = pattern(2 * BS as usize + 9, 12);
    let mut w =
        c.fs.create(
            "/d/f",
            CreateOptions {
                recursive: true,
                write_type: Some(WriteType::CacheThrough),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    w.write(&data).await.unwrap();
    let id = w.info().id;
    wait_for_files(&c.underfs().join("d"), 1).await;

    pause.arm();
    let fs = c.fs.clone();
    let rename = tokio::spawn(async move { fs.rename("/d", "/e").await });
    pause.reached().await;
    // The writer closes while the rename is held: it learns the file's path (still
    // /d/f) and waits for the path's lock, which the rename holds.
    let close = tokio::spawn(async move { w.close().await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    pause.release();
    rename.await.unwrap().unwrap();
    let info = close
        .await
        .unwrap()
        .expect("the file completes at its new path");
    assert_eq!(info.id, id);
    assert!(info.complete && info.persisted, "{info:?}");
    assert_eq!(info.path.to_string(), "/e/f");
    assert_eq!(read_all(&c.fs, "/e/f").await, data);
    assert!(!c.fs.exists("/d").await.unwrap());
    assert_eq!(under_store_files(&c.underfs()), ["e/f"]);
    assert_eq!(std::fs::read(c.underfs().join("e/f")).unwrap(), data);
    c.stop().await;
}

/// A writer whose folder was deleted (recursively, with more files than one
/// reclaim batch) is told at once that its file is lost, while the folder's
/// inodes are still being reclaimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewing_a_file_of_a_deleted_folder_reports_it_lost() {
    let c = MiniCluster::start(ClusterOptions::default()).await;
    let mut m = master_client(&c);
    c.fs.mkdir("/big", false).await.unwrap();
    let create = |path: String| proto::CreateFileRequest {
        path,
        block_size: BS,
        recursive: false,
        write_type: proto::WriteType::MustCache as i32,
        request: None,
    };
    for i in 0..3000 {
        m.create_file(create(format!("/big/f{i:05}")))
            .await
            .unwrap();
    }
    // Named to be reclaimed last.
    let id = m
        .create_file(create("/big/zzz".into()))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap()
        .id;
    c.fs.delete("/big", true).await.unwrap();
    let renewed = m
        .renew_lease(proto::RenewLeaseRequest { file_ids: vec![id] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.lost, [id], "a file of a deleted folder is lost");
    c.stop().await;
}

/// An abandoned writer's file expires while a file of the same name was put into
/// the under-store by someone else: the expiry removes only what the writer made
/// (its inode, its staged copy), never the outside file, which Strata then lists
/// and reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_write_spares_an_outside_file_of_the_same_name() {
    let c = short_lease_cluster().await;
    c.fs.mkdir("/out", false).await.unwrap();
    for (i, wt) in [WriteType::MustCache, WriteType::CacheThrough]
        .into_iter()
        .enumerate()
    {
        let path = format!("/out/p{i}");
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
        w.write(&pattern(BS as usize + 1, 13)).await.unwrap();
        if wt.persists() {
            wait_for_files(&c.underfs().join("out"), 2).await;
        }
        drop(w);
        let outside = format!("outside {i}").into_bytes();
        std::fs::write(c.underfs().join(format!("out/p{i}")), &outside).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match c.fs.get_status(&path).await {
                Ok(f) if f.complete => break,
                Ok(_) => {}
                Err(e) => panic!("{wt}: {path}: {e}"),
            }
            assert!(std::time::Instant::now() < deadline, "{wt}: never expired");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(read_all(&c.fs, &path).await, outside, "{wt}");
        assert_eq!(
            std::fs::read(c.underfs().join(format!("out/p{i}"))).unwrap(),
            outside
        );
        assert!(list_names(&c.fs, "/out").await.contains(&format!("p{i}")));
    }
    assert_eq!(under_store_files(&c.underfs().join("out")), ["p0", "p1"]);
    c.stop().await;
}

/// A lookup of a path a rename is moving a file to, while the rename is between
/// its under-store step and its journal entry, waits for the rename: it must
/// not load the under-store's new name as a second file (which would fail the
/// rename and lose the file's identity and cached blocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lookup_of_a_rename_in_flight_waits_for_it() {
    let (c, pause) = strata_tests::paused_cluster().await;
    let id = strata_tests::write_through(&c.fs, "/d/f", b"abc").await;
    pause.arm();
    let mut master = master_client(&c);
    let rename = tokio::spawn(async move {
        master
            .rename(proto::RenameRequest {
                src: "/d/f".into(),
                dst: "/d/g".into(),
                request: None,
            })
            .await
    });
    pause.reached().await;
    assert!(c.underfs().join("d/g").exists());
    let fs = c.fs.clone();
    let lookup = tokio::spawn(async move { fs.get_status("/d/g").await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    pause.release();
    rename.await.unwrap().expect("the rename completes");
    assert_eq!(lookup.await.unwrap().unwrap().id, id);
    assert_eq!(list_names(&c.fs, "/d").await, ["g"]);
    c.stop().await;
}
