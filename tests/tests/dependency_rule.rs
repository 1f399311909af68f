//! The one-way dependency rule: the client library and `strata-common` pull in no
//! RocksDB, no raft and no cloud SDK, so embedding the client stays light.

use std::process::Command;

const FORBIDDEN: [&str; 6] = [
    "rocksdb",
    "librocksdb-sys",
    "raft",
    "aws-sdk-s3",
    "hdrs",
    "strata-master",
];

fn normal_deps(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn client_and_common_stay_light() {
    for package in ["strata-client", "strata-common"] {
        let deps = normal_deps(package);
        assert!(
            deps.iter().any(|d| d == "tonic"),
            "{package}: cargo tree output looks wrong: {deps:?}"
        );
        for bad in FORBIDDEN {
            assert!(!deps.iter().any(|d| d == bad), "{package} depends on {bad}");
        }
        if package == "strata-client" {
            assert!(
                !deps.iter().any(|d| d == "strata-worker"),
                "client depends on the worker"
            );
        }
    }
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `scripts/dev test` runs the doc tests of `strata-client` and `strata-common`
/// only (a workspace-wide doc-test build would compile RocksDB a second time). So
/// a doc example anywhere else would never run: keep them out.
#[test]
fn doc_examples_live_only_where_doc_tests_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    for krate in ["ufs", "master", "worker", "cli", "tests", "bench"] {
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            if text.lines().any(|l| {
                l.trim_start().starts_with("/// ```") || l.trim_start().starts_with("//! ```")
            }) {
                offenders.push(f.display().to_string());
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "doc examples outside strata-client and strata-common never run: {offenders:?}"
    );
}
