//! One behaviour suite for every under-store backend: each test runs the same
//! checks against a local folder and against a real S3-compatible server
//! (`moto_server` on loopback), through the `UnderStore` trait only. What one
//! backend cannot do the same way (S3 folders are prefixes) is said where it
//! differs.

use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use strata_common::types::UfsFingerprint;
use strata_common::Error;
use strata_tests::moto::Moto;
use strata_ufs::{UfsPath, UfsStatus, UnderStore};
use tokio::io::AsyncReadExt;

/// One backend under test, and a way to write to it as another program would.
struct Backend {
    name: &'static str,
    store: Arc<dyn UnderStore>,
    foreign: Foreign,
}

enum Foreign {
    Local(tempfile::TempDir),
    S3 {
        /// Kept so the server runs as long as the backend.
        _moto: Moto,
        client: aws_sdk_s3::Client,
        bucket: String,
    },
}

impl Backend {
    /// Writes `data` at `path` without Strata (creating folders as needed).
    async fn put(&self, path: &str, data: &[u8]) {
        match &self.foreign {
            Foreign::Local(dir) => {
                let p = dir.path().join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, data).unwrap();
            }
            Foreign::S3 { client, bucket, .. } => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(format!("{PREFIX}/{path}"))
                    .body(data.to_vec().into())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

/// The S3 store is mounted at this key prefix of its bucket; objects beside it
/// (`pre`, `prefix2/...`) must never show through.
const PREFIX: &str = "pre";

/// The part size S3 writers use here: S3's smallest, so a 12 MiB file takes three
/// parts.
const PART: u64 = 5 << 20;

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let local = Backend {
        name: "local",
        store: strata_ufs::open(&format!("file://{}", dir.path().display())).unwrap(),
        foreign: Foreign::Local(dir),
    };
    let moto = Moto::start();
    let bucket = "behaviour".to_string();
    moto.bucket(&bucket).await;
    let mut opts = strata_ufs::s3::S3Options::parse(&moto.options()).unwrap();
    opts.part_size = PART;
    // Copies above 6 MiB go in parts, so the large-file check covers them too.
    opts.max_single_copy = 6 << 20;
    opts.credentials = Some(aws_sdk_s3::config::Credentials::new(
        "test", "test", None, None, "tests",
    ));
    let store = strata_ufs::s3::S3Store::open(&format!("s3://{bucket}/{PREFIX}"), opts).unwrap();
    store.check().await.unwrap();
    let client = moto.client().await;
    for neighbour in [
        PREFIX.to_string(),
        format!("{PREFIX}2/x"),
        format!("{PREFIX}x"),
    ] {
        client
            .put_object()
            .bucket(&bucket)
            .key(neighbour)
            .body(b"outside".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let s3 = Backend {
        name: "s3",
        store: Arc::new(store),
        foreign: Foreign::S3 {
            _moto: moto,
            client,
            bucket,
        },
    };
    vec![local, s3]
}

fn p(s: &str) -> UfsPath {
    UfsPath::parse(s).unwrap()
}

async fn write(store: &dyn UnderStore, path: &str, key: u64, data: &[u8]) -> UfsStatus {
    let path = p(path);
    let mut w = store.create(&path, key).await.unwrap();
    for chunk in data.chunks(1 << 20) {
        w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let finished = w.finish().await.unwrap();
    let published = store.publish(&path, key).await.unwrap();
    assert_eq!(
        finished.fingerprint().mismatch(&published.fingerprint()),
        None,
        "what the writer finished is what was published"
    );
    published
}

async fn read(store: &dyn UnderStore, path: &str, offset: u64, length: u64) -> Vec<u8> {
    let st = store.status(&p(path)).await.unwrap().unwrap();
    let mut r = store
        .open_range(&p(path), offset, length, &st.fingerprint())
        .await
        .unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

async fn names(store: &dyn UnderStore, path: &str) -> Vec<String> {
    let l = store.list(&p(path)).await.unwrap();
    l.entries.into_iter().map(|e| e.name).collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_ranges_overwrite_and_empty_files() {
    for b in backends().await {
        let s = b.store.as_ref();
        let n = b.name;
        // Nothing beside the mount shows through.
        assert!(names(s, "").await.is_empty(), "{n}");
        s.mkdirs(&p("d")).await.unwrap();
        let data = pattern(100_000, 1);
        let st = write(s, "d/f", 1, &data).await;
        assert_eq!(st.length, 100_000, "{n}");
        assert_eq!(read(s, "d/f", 0, 100_000).await, data, "{n}");
        assert_eq!(read(s, "d/f", 99_990, 10).await, &data[99_990..], "{n}");
        assert_eq!(
            read(s, "d/f", 12_345, 1).await,
            &data[12_345..12_346],
            "{n}"
        );
        // A range past the end is refused (at the open or at the read), never
        // served short.
        let fp = st.fingerprint();
        let past = match s.open_range(&p("d/f"), 99_999, 2, &fp).await {
            Ok(mut r) => r
                .read_to_end(&mut Vec::new())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        assert!(past.is_err(), "{n}");

        // Overwritten through Strata: the new bytes, and a reader of the old
        // fingerprint is refused.
        let new = pattern(50_000, 2);
        let st2 = write(s, "d/f", 2, &new).await;
        assert_eq!(read(s, "d/f", 0, 50_000).await, new, "{n}");
        let old = s.open_range(&p("d/f"), 0, 10, &fp).await;
        assert!(matches!(old, Err(Error::UfsChanged { .. })), "{n}");

        // Changed by another program, to the same length: refused too.
        b.put("d/f", &pattern(50_000, 3)).await;
        let changed = s.open_range(&p("d/f"), 0, 10, &st2.fingerprint()).await;
        assert!(
            matches!(changed, Err(Error::UfsChanged { .. })),
            "{n}: {changed:?}",
            changed = changed.err()
        );

        // A read into no room reads nothing and ends nothing.
        let mut r = s
            .open_range(
                &p("d/f"),
                0,
                50_000,
                &s.status(&p("d/f")).await.unwrap().unwrap().fingerprint(),
            )
            .await
            .unwrap();
        assert_eq!(r.read(&mut []).await.unwrap(), 0, "{n}");
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 50_000, "{n}");

        let empty = write(s, "d/empty", 3, b"").await;
        assert_eq!(empty.length, 0, "{n}");
        assert_eq!(read(s, "d/empty", 0, 0).await, b"", "{n}");
        assert_eq!(names(s, "d").await, ["empty", "f"], "{n}");
        // Missing things.
        assert!(s.status(&p("d/nope")).await.unwrap().is_none(), "{n}");
        assert!(
            matches!(s.list(&p("nope")).await, Err(Error::NotFound { .. })),
            "{n}"
        );
        assert!(
            matches!(s.list(&p("d/f")).await, Err(Error::NotADirectory { .. })),
            "{n}"
        );
        let missing = UfsFingerprint {
            length: 1,
            version: String::new(),
        };
        assert!(
            s.open_range(&p("d/nope"), 0, 1, &missing).await.is_err(),
            "{n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_writes_are_invisible_until_published_and_leave_nothing_when_dropped() {
    for b in backends().await {
        let s = b.store.as_ref();
        let n = b.name;
        // The parent folder must exist.
        assert!(
            matches!(s.create(&p("no/f"), 1).await, Err(Error::NotFound { .. })),
            "{n}"
        );
        s.mkdirs(&p("w")).await.unwrap();
        let mut w = s.create(&p("w/f"), 7).await.unwrap();
        // One writer per key.
        w.write(Bytes::from_static(b"staged")).await.unwrap();
        w.finish().await.unwrap();
        assert!(s.create(&p("w/f"), 7).await.is_err(), "{n}");
        assert!(s.status(&p("w/f")).await.unwrap().is_none(), "{n}");
        let l = s.list(&p("w")).await.unwrap();
        assert!(l.entries.is_empty(), "{n}: {l:?}");
        assert_eq!(l.staged, [7], "{n}");
        // Discarded: gone, and publishing finds nothing.
        s.discard(&p("w/f"), 7).await.unwrap();
        s.discard(&p("w/f"), 7).await.unwrap();
        assert!(
            matches!(s.publish(&p("w/f"), 7).await, Err(Error::NotFound { .. })),
            "{n}"
        );
        // Aborted, and dropped, writers (a large one mid-upload too) leave nothing.
        let mut w = s.create(&p("w/g"), 8).await.unwrap();
        w.write(Bytes::from(pattern(PART as usize + 10, 4)))
            .await
            .unwrap();
        w.abort().await.unwrap();
        let mut w = s.create(&p("w/h"), 9).await.unwrap();
        w.write(Bytes::from(pattern(PART as usize + 10, 5)))
            .await
            .unwrap();
        drop(w);
        s.discard(&p("w/h"), 9).await.unwrap();
        let l = s.list(&p("w")).await.unwrap();
        assert!(l.entries.is_empty() && l.staged.is_empty(), "{n}: {l:?}");
        if let Foreign::S3 { client, bucket, .. } = &b.foreign {
            let ups = client
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
            assert!(ups.uploads().is_empty(), "s3: unfinished uploads left");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_goes_in_parts_and_reads_back_exactly() {
    for b in backends().await {
        let s = b.store.as_ref();
        let n = b.name;
        let data = pattern(12 << 20, 6);
        let st = write(s, "big", 1, &data).await;
        assert_eq!(st.length, 12 << 20, "{n}");
        assert_eq!(read(s, "big", 0, 12 << 20).await, data, "{n}");
        let mid = (5 << 20) - 3;
        assert_eq!(
            read(s, "big", mid, 7).await,
            &data[mid as usize..mid as usize + 7],
            "{n}"
        );
        // Renamed (on S3, a copy in parts and a delete): same bytes.
        s.rename(&p("big"), &p("big2")).await.unwrap();
        assert!(s.status(&p("big")).await.unwrap().is_none(), "{n}");
        assert_eq!(read(s, "big2", 0, 12 << 20).await, data, "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_rename_and_delete() {
    for b in backends().await {
        let s = b.store.as_ref();
        let n = b.name;
        s.mkdirs(&p("a/b/c/d/e")).await.unwrap();
        s.mkdirs(&p("a/b/c/d/e")).await.unwrap();
        write(s, "a/b/c/d/e/leaf", 1, b"deep").await;
        write(s, "a/b/x", 2, b"x").await;
        assert!(s.status(&p("a/b/c")).await.unwrap().unwrap().is_dir, "{n}");
        // No folder where a file is.
        assert!(s.mkdirs(&p("a/b/x/y")).await.is_err(), "{n}");

        // A file renamed; never onto an existing name.
        s.rename(&p("a/b/x"), &p("a/x2")).await.unwrap();
        assert_eq!(read(s, "a/x2", 0, 1).await, b"x", "{n}");
        write(s, "a/y", 3, b"y").await;
        assert!(
            matches!(
                s.rename(&p("a/y"), &p("a/x2")).await,
                Err(Error::AlreadyExists { .. })
            ),
            "{n}"
        );
        // A folder renamed with everything below it.
        s.rename(&p("a/b"), &p("a/moved")).await.unwrap();
        assert!(s.status(&p("a/b")).await.unwrap().is_none(), "{n}");
        assert_eq!(read(s, "a/moved/c/d/e/leaf", 0, 4).await, b"deep", "{n}");
        assert_eq!(names(s, "a").await, ["moved", "x2", "y"], "{n}");
        assert!(
            s.rename(&p("a/moved"), &p("a/moved/in")).await.is_err(),
            "{n}"
        );

        assert!(
            matches!(
                s.delete(&p("a/moved"), false).await,
                Err(Error::DirectoryNotEmpty { .. })
            ),
            "{n}"
        );
        s.delete(&p("a/x2"), false).await.unwrap();
        s.delete(&p("a/moved"), true).await.unwrap();
        assert!(s.status(&p("a/moved/c")).await.unwrap().is_none(), "{n}");
        assert_eq!(names(s, "a").await, ["y"], "{n}");
        // Deleting what is not there is fine.
        s.delete(&p("a/none"), true).await.unwrap();
        // An empty folder stays a folder.
        s.mkdirs(&p("empty")).await.unwrap();
        assert!(s.status(&p("empty")).await.unwrap().unwrap().is_dir, "{n}");
        assert!(names(s, "empty").await.is_empty(), "{n}");
        s.delete(&p("empty"), false).await.unwrap();
        assert!(s.status(&p("empty")).await.unwrap().is_none(), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_and_spaces_in_names() {
    for b in backends().await {
        let s = b.store.as_ref();
        let n = b.name;
        let names_in = ["a b", "ünï cødé", "日本語", "plus+and%percent", "tab\there"];
        s.mkdirs(&p("u dir/é")).await.unwrap();
        for (i, name) in names_in.iter().enumerate() {
            write(s, &format!("u dir/é/{name}"), i as u64 + 1, name.as_bytes()).await;
        }
        let mut want: Vec<String> = names_in.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(names(s, "u dir/é").await, want, "{n}");
        for name in names_in {
            let path = format!("u dir/é/{name}");
            assert_eq!(
                read(s, &path, 0, name.len() as u64).await,
                name.as_bytes(),
                "{n}"
            );
        }
        s.rename(&p("u dir/é/a b"), &p("u dir/é/c d"))
            .await
            .unwrap();
        assert_eq!(read(s, "u dir/é/c d", 0, 3).await, b"a b", "{n}");
    }
}

/// 10,000 files written by another program: listed whole and in name order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_ten_thousand_files_lists_whole() {
    for b in backends().await {
        let n = b.name;
        let files = 10_000;
        let names_want: Vec<String> = (0..files).map(|i| format!("f{i:05}")).collect();
        futures::stream::iter(names_want.iter())
            .for_each_concurrent(32, |name| {
                let b = &b;
                async move { b.put(&format!("wide/{name}"), name.as_bytes()).await }
            })
            .await;
        let l = b.store.list(&p("wide")).await.unwrap();
        let got: Vec<String> = l.entries.iter().map(|e| e.name.clone()).collect();
        assert_eq!(got.len(), files, "{n}");
        assert_eq!(got, names_want, "{n}");
        assert!(l.entries.iter().all(|e| !e.is_dir && e.length == 6), "{n}");

        // Page by page: the same entries, each page in name order. S3 pages (a
        // thousand keys a request); a local folder answers in one page and
        // refuses a page token.
        let (mut paged, mut pages, mut token) = (Vec::new(), 0, None::<String>);
        loop {
            let page = b
                .store
                .list_page(&p("wide"), token.as_deref())
                .await
                .unwrap();
            assert!(page.entries.is_sorted_by(|a, b| a.name < b.name), "{n}");
            paged.extend(page.entries);
            pages += 1;
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(paged, l.entries, "{n}");
        match n {
            "local" => {
                assert_eq!(pages, 1);
                assert!(matches!(
                    b.store.list_page(&p("wide"), Some("x")).await,
                    Err(Error::InvalidArgument { .. })
                ));
            }
            _ => assert!(pages >= 10, "{n}: {pages} pages"),
        }
    }
}

/// A name that is both a file and a folder (possible on S3 only): the file is
/// listed, whole or by pages, and a page never names one kind twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_both_file_and_folder_lists_as_the_file() {
    for b in backends().await {
        if b.name == "local" {
            continue; // a folder cannot hold a file and a folder of one name
        }
        let n = b.name;
        b.put("both/x", b"file").await;
        b.put("both/x/inner", b"inner").await;
        b.put("both/y", b"y").await;
        let l = b.store.list(&p("both")).await.unwrap();
        let kinds: Vec<(String, bool)> = l
            .entries
            .iter()
            .map(|e| (e.name.clone(), e.is_dir))
            .collect();
        assert_eq!(kinds, [("x".into(), false), ("y".into(), false)], "{n}");
        let page = b.store.list_page(&p("both"), None).await.unwrap();
        assert_eq!(page.entries, l.entries, "{n}");
    }
}

/// Names with control characters (valid names, which XML cannot carry), and
/// names that look like staged copies written by another program.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_names_list_and_delete() {
    for b in backends().await {
        let s = b.store.as_ref();
        let n = b.name;
        s.mkdirs(&p("c/d\u{1}")).await.unwrap();
        write(s, "c/ctl\u{1}x", 1, b"x").await;
        write(s, "c/d\u{1}/in", 2, b"in").await;
        assert_eq!(names(s, "c").await, ["ctl\u{1}x", "d\u{1}"], "{n}");
        assert_eq!(read(s, "c/ctl\u{1}x", 0, 1).await, b"x", "{n}");
        s.delete(&p("c"), true).await.unwrap();
        assert!(s.status(&p("c")).await.unwrap().is_none(), "{n}");

        s.mkdirs(&p("t")).await.unwrap();
        for odd in [".FF.strata-tmp", ".0ff.strata-tmp", ".x.strata-tmp"] {
            b.put(&format!("t/{odd}"), b"foreign").await;
        }
        let l = s.list(&p("t")).await.unwrap();
        assert!(l.entries.is_empty(), "{n}: {l:?}");
        assert!(l.staged.is_empty(), "{n}: {l:?}");
    }
}

/// A folder renamed or deleted while a file in it is being written: nothing the
/// writer wrote is lost or lands in the wrong place, and a deleted folder does
/// not come back. (A local folder moves with the writer; an S3 folder is not
/// renamed until the write ends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_folder_changes() {
    for b in backends().await {
        let s = b.store.as_ref();
        let n = b.name;
        s.mkdirs(&p("src")).await.unwrap();
        let mut w = s.create(&p("src/f"), 9).await.unwrap();
        // One writer per key, from the start.
        assert!(s.create(&p("src/f"), 9).await.is_err(), "{n}");
        w.write(Bytes::from_static(b"hello")).await.unwrap();
        let at = match s.rename(&p("src"), &p("dst")).await {
            Ok(()) => "dst/f",
            Err(Error::NotPermitted { .. }) => "src/f",
            Err(e) => panic!("{n}: {e}"),
        };
        w.finish().await.unwrap();
        assert_eq!(s.publish(&p(at), 9).await.unwrap().length, 5, "{n}");
        assert_eq!(read(s, at, 0, 5).await, b"hello", "{n}");
        if at == "dst/f" {
            assert!(s.status(&p("src")).await.unwrap().is_none(), "{n}");
        }

        s.mkdirs(&p("gone")).await.unwrap();
        let mut w = s.create(&p("gone/f"), 10).await.unwrap();
        w.write(Bytes::from(pattern(PART as usize + 100, 8)))
            .await
            .unwrap();
        s.delete(&p("gone"), true).await.unwrap();
        // The writer goes on (or fails); either way the folder stays gone, and
        // discarding the copy leaves nothing.
        let _ = w.write(Bytes::from_static(b"more")).await;
        let _ = w.finish().await;
        assert!(s.status(&p("gone")).await.unwrap().is_none(), "{n}");
        s.discard(&p("gone/f"), 10).await.unwrap();
        assert!(s.status(&p("gone")).await.unwrap().is_none(), "{n}");
        assert!(s.list(&p("gone")).await.is_err(), "{n}");
    }
}

/// Each backend's capabilities say what it does: a folder that exists only
/// because of a file in it (made by another program) outlives the file only where
/// folders are real; S3 reports non-atomic renames and no appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_describe_each_backend() {
    for b in backends().await {
        let s = b.store.as_ref();
        let caps = s.capabilities();
        let n = b.name;
        b.put("implied/f", b"f").await;
        s.delete(&p("implied/f"), false).await.unwrap();
        let folder = s.status(&p("implied")).await.unwrap();
        assert_eq!(
            folder.is_some_and(|st| st.is_dir),
            caps.real_directories,
            "{n}: {caps:?}"
        );
        assert!(caps.ranged_reads, "{n}");
        let (atomic, append) = match n {
            "local" => (true, true),
            _ => (false, false),
        };
        assert_eq!((caps.atomic_rename, caps.append), (atomic, append), "{n}");
    }
}
