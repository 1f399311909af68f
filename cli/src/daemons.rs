//! `strata master`, `strata worker`, `strata local` and `strata format`.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use strata_common::config::SiteConfig;
use tokio_util::sync::CancellationToken;

/// Flags of `strata master`.
#[derive(Debug, Args)]
pub struct MasterArgs {
    /// gRPC port (`master.rpc_port`); 0 picks a free one.
    #[arg(long)]
    pub port: Option<u16>,
    /// Data folder (`data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Under-store mounted at `/` on first start (`master.root_ufs`).
    #[arg(long, value_name = "URI")]
    pub root_ufs: Option<String>,
}

impl MasterArgs {
    pub(crate) fn overrides(&self) -> Vec<(String, String)> {
        let mut o = Vec::new();
        if let Some(p) = self.port {
            o.push(("master.rpc_port".into(), p.to_string()));
        }
        if let Some(d) = &self.data_dir {
            o.push(("data_dir".into(), toml_string(&d.display().to_string())));
        }
        if let Some(u) = &self.root_ufs {
            o.push(("master.root_ufs".into(), toml_string(u)));
        }
        o
    }
}

/// Flags of `strata worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// gRPC port (`worker.rpc_port`); 0 picks a free one.
    #[arg(long)]
    pub port: Option<u16>,
    /// Data folder (`data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Master address `host:port` (`master_addresses`).
    #[arg(long)]
    pub master: Option<String>,
    /// MEM tier quota, e.g. `4GiB` (`worker.mem_quota`).
    #[arg(long)]
    pub mem_quota: Option<String>,
}

impl WorkerArgs {
    pub(crate) fn overrides(&self) -> Vec<(String, String)> {
        let mut o = Vec::new();
        if let Some(p) = self.port {
            o.push(("worker.rpc_port".into(), p.to_string()));
        }
        if let Some(d) = &self.data_dir {
            o.push(("data_dir".into(), toml_string(&d.display().to_string())));
        }
        if let Some(m) = &self.master {
            o.push(("master_addresses".into(), toml_string(m)));
        }
        if let Some(q) = &self.mem_quota {
            o.push(("worker.mem_quota".into(), toml_string(q)));
        }
        o
    }
}

/// Flags of `strata local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Data folder: metastore, fallback MEM tier and the local under-store
    /// (`<DIR>/underfs`, mounted at `/`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Flags of `strata format`.
#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Data folder (`data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl FormatArgs {
    pub(crate) fn overrides(&self) -> Vec<(String, String)> {
        self.data_dir
            .iter()
            .map(|d| {
                (
                    "data_dir".to_string(),
                    toml_string(&d.display().to_string()),
                )
            })
            .collect()
    }
}

/// The `master_addresses` setting a `--master host:port` flag makes, if given.
pub(crate) fn master_override(master: Option<&str>) -> Vec<(String, String)> {
    master
        .map(|m| ("master_addresses".to_string(), toml_string(m)))
        .into_iter()
        .collect()
}

/// Quotes a value so the config layer reads it as a string, whatever it looks like.
pub(crate) fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs a master until SIGINT/SIGTERM.
pub async fn master(cfg: SiteConfig) -> anyhow::Result<i32> {
    let shutdown = strata_common::shutdown::on_signals();
    let mut m = strata_master::start(strata_master::MasterDeps {
        config: cfg,
        shutdown,
        pause_after_under_store: None,
    })
    .await?;
    println!("master listening on {}", m.addr);
    m.wait().await?;
    Ok(0)
}

/// Runs a worker until SIGINT/SIGTERM.
pub async fn worker(cfg: SiteConfig) -> anyhow::Result<i32> {
    let shutdown = strata_common::shutdown::on_signals();
    let mut w = strata_worker::start(strata_worker::WorkerDeps {
        config: cfg,
        shutdown,
    })
    .await?;
    println!(
        "worker listening on {} (MEM tier {})",
        w.addr,
        w.mem_dir.display()
    );
    w.wait().await?;
    Ok(0)
}

/// Runs master + worker + a local under-store in this process until SIGINT/SIGTERM.
pub async fn local(cli: &crate::Cli, args: &LocalArgs) -> anyhow::Result<i32> {
    let mut flags = Vec::new();
    if let Some(d) = &args.data_dir {
        flags.push((
            "data_dir".to_string(),
            toml_string(&d.display().to_string()),
        ));
    }
    let mut cfg = crate::load_config(cli, flags)?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    cfg.data_dir = std::fs::canonicalize(&cfg.data_dir)?;
    let underfs = cfg.data_dir.join("underfs");
    std::fs::create_dir_all(&underfs)?;
    if cfg.master.root_ufs.is_empty() {
        cfg.master.root_ufs = format!("file://{}", underfs.display());
    }
    let shutdown = strata_common::shutdown::on_signals();
    let mut m = strata_master::start(strata_master::MasterDeps {
        config: cfg.clone(),
        shutdown: shutdown.child_token(),
        pause_after_under_store: None,
    })
    .await?;
    // The worker and the readiness check talk to this process's master.
    cfg.master_addresses = vec![m.addr.to_string()];
    let mut w = strata_worker::start(strata_worker::WorkerDeps {
        config: cfg.clone(),
        shutdown: shutdown.child_token(),
    })
    .await?;
    wait_for_worker(&cfg, &shutdown).await?;
    println!("Strata local cluster is up.");
    println!(
        "  master       {}   (metastore {})",
        m.addr,
        cfg.metastore_dir().display()
    );
    println!(
        "  worker       {}   (MEM tier {}, quota {})",
        w.addr,
        w.mem_dir.display(),
        cfg.worker.mem_quota
    );
    println!("  under-store  / -> {}", cfg.master.root_ufs);
    println!("Try:  strata fs ls /");
    println!("Stop: Ctrl-C, or kill -TERM {}", std::process::id());
    // Either daemon stopping (a failed journal, a lost tier) stops the other.
    let (a, b) = tokio::join!(
        async {
            let r = m.wait().await;
            shutdown.cancel();
            r
        },
        async {
            let r = w.wait().await;
            shutdown.cancel();
            r
        }
    );
    a?;
    b?;
    println!("Strata local cluster stopped.");
    Ok(0)
}

async fn wait_for_worker(cfg: &SiteConfig, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let fs = strata_client::FileSystem::connect(cfg).await?;
    for _ in 0..100 {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if let Ok(ws) = fs.workers().await {
            if !ws.is_empty() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the worker did not register with the master within 10s")
}

/// Erases the journal, the metastore and the worker's MEM tier.
pub fn format(cfg: SiteConfig) -> anyhow::Result<i32> {
    // The journal first: a format cut short leaves an old metastore without a
    // journal (it starts as it was, and the format is run again), never an old
    // journal replayed into an empty metastore.
    let journal = cfg.journal_dir();
    if strata_master::journal::log::LogStore::erase(&journal)
        .map_err(|e| anyhow::anyhow!("cannot format: {e}"))?
    {
        println!("Formatted journal {}", journal.display());
    }
    let snapshots = strata_master::journal::snapshot::folder_for(&cfg.metastore_dir());
    if snapshots.exists() {
        std::fs::remove_dir_all(&snapshots)?;
        println!("Formatted journal snapshots {}", snapshots.display());
    }
    let meta = cfg.metastore_dir();
    if meta.exists() {
        // Opening takes RocksDB's lock: this fails while a master runs on it.
        match strata_master::store::MetaStore::open(&meta, 1) {
            Ok(store) => drop(store),
            Err(e) => anyhow::bail!(
                "{}: cannot format, the metastore is in use or damaged: {e}",
                meta.display()
            ),
        }
        std::fs::remove_dir_all(&meta)?;
        println!("Formatted metastore {}", meta.display());
    }
    let tier = strata_worker::mem_tier_dir(&cfg)?;
    if tier.exists() {
        std::fs::remove_dir_all(&tier)?;
        println!("Formatted MEM tier {}", tier.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_read_back_as_strings() {
        for s in ["plain", "with \"quotes\"", "back\\slash", "1234", "true"] {
            let t: toml::Table = format!("v = {}", toml_string(s)).parse().unwrap();
            assert_eq!(t["v"].as_str(), Some(s));
        }
    }
}
