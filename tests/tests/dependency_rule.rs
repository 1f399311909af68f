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
