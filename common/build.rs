//! Compiles Strata's protocol with `protox` (a pure-Rust protobuf compiler), so a
//! build needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/strata/v1/common.proto",
        "proto/strata/v1/master.proto",
        "proto/strata/v1/worker.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Data chunks travel as `Bytes`, so a chunk is never copied on its way through.
        .bytes(".")
        // Mount options in key order: the same options always encode the same.
        .btree_map(".strata.v1.MountPointInfo.options")
        .btree_map(".strata.v1.MountRequest.options")
        .compile_fds(fds)?;
    Ok(())
}
