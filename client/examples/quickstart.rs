//! Writes a file into Strata, reads it back, lists its folder and cleans up.
//!
//! Run it against a local cluster (`scripts/dev local` in another terminal):
//!
//! ```sh
//! cargo run -p strata-client --example quickstart
//! ```
//!
//! It talks to the master at `127.0.0.1:19998`, or to the first address in
//! `$STRATA_MASTER_ADDRESSES`.

use strata_client::{CreateOptions, FileSystem, OpenOptions, SiteConfig, WriteType};
use strata_common::config::LoadOptions;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conf = SiteConfig::load(&LoadOptions {
        use_env: true,
        ..Default::default()
    })?;
    let fs = FileSystem::connect(&conf).await?;

    fs.mkdir("/examples", true).await?;
    let path = "/examples/quickstart.txt";
    if fs.exists(path).await? {
        fs.delete(path, false).await?;
    }
    let mut writer = fs
        .create(
            path,
            CreateOptions {
                write_type: Some(WriteType::CacheThrough),
                ..Default::default()
            },
        )
        .await?;
    for i in 0..1000 {
        writer.write(format!("line {i}\n").as_bytes()).await?;
    }
    let info = writer.close().await?;
    println!(
        "wrote {} ({} bytes, persisted: {})",
        info.path, info.length, info.persisted
    );

    // Sequential read of the whole file.
    let mut reader = fs.open(path, OpenOptions::default()).await?;
    let mut text = String::new();
    reader.read_to_string(&mut text).await?;
    println!(
        "read {} lines; the last is {:?}",
        text.lines().count(),
        text.lines().last()
    );

    // Positioned reads: seek, or read at an offset without moving.
    reader.seek(std::io::SeekFrom::Start(7)).await?;
    let mut word = [0u8; 6];
    reader.read_exact(&mut word).await?;
    let at = reader.read_at(info.length - 9, 9).await?;
    println!(
        "bytes 7..13: {:?}, last 9: {:?}",
        String::from_utf8_lossy(&word),
        String::from_utf8_lossy(&at)
    );

    for entry in fs.list("/examples").await? {
        println!(
            "{}  {} bytes  {}% cached",
            entry.path, entry.length, entry.cached_percent
        );
    }
    fs.delete("/examples", true).await?;
    Ok(())
}
