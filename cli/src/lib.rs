//! The `strata` command: daemons (`master`, `worker`, `local`), `format`, and the
//! `fs` shell. `main.rs` only parses flags and calls [`run`].

pub mod daemons;
pub mod fs;
pub mod fsadmin;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use strata_common::config::{LoadOptions, SiteConfig};

/// Strata: a data-orchestration cache between compute and storage.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    /// Site configuration file (default: $STRATA_CONF, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub conf: Option<PathBuf>,
    /// Set any configuration key, e.g. `-D worker.mem_quota=2GiB`; repeatable.
    #[arg(short = 'D', global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a master in the foreground.
    Master(daemons::MasterArgs),
    /// Run a worker in the foreground.
    Worker(daemons::WorkerArgs),
    /// Run a master, a worker and a local under-store in one process.
    Local(daemons::LocalArgs),
    /// Erase the master's metastore and journal and the worker's cached blocks (never the
    /// under-store). Refuses while a master uses the metastore.
    Format(daemons::FormatArgs),
    /// File system shell (`strata fs ls /`, ...).
    Fs(fs::FsArgs),
    /// Administration (`strata fsadmin report`).
    Fsadmin(fsadmin::FsadminArgs),
}

/// Loads the configuration: file, then `STRATA_*` environment, then `-D` settings,
/// then the command's own flags.
pub fn load_config(cli: &Cli, flags: Vec<(String, String)>) -> anyhow::Result<SiteConfig> {
    let mut overrides = Vec::new();
    for kv in &cli.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("-D {kv:?}: expected KEY=VALUE"))?;
        overrides.push((k.trim().to_string(), v.to_string()));
    }
    overrides.extend(flags);
    Ok(SiteConfig::load(&LoadOptions {
        file: cli.conf.clone(),
        use_env: true,
        overrides,
    })?)
}

/// Runs the parsed command; the exit code is the result.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Master(a) => daemons::master(load_config(&cli, a.overrides())?).await,
        Command::Worker(a) => daemons::worker(load_config(&cli, a.overrides())?).await,
        Command::Local(a) => daemons::local(&cli, a).await,
        Command::Format(a) => daemons::format(load_config(&cli, a.overrides())?),
        Command::Fs(a) => fs::run(load_config(&cli, a.overrides())?, &a.command).await,
        Command::Fsadmin(a) => fsadmin::run(load_config(&cli, a.overrides())?, &a.command).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
