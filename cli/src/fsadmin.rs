//! `strata fsadmin`: the state of the cluster's masters.

use clap::{Args, Subcommand};
use strata_client::admin::{checkpoint, journal_reports};
use strata_client::SiteConfig;
use strata_common::types::{JournalReport, JournalRole};
use strata_common::units::format_bytes;

/// Flags of `strata fsadmin`.
#[derive(Debug, Args)]
pub struct FsadminArgs {
    /// Master address `host:port` (default: `master_addresses` of the configuration).
    #[arg(long, global = true)]
    pub master: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: FsadminCommand,
}

impl FsadminArgs {
    pub(crate) fn overrides(&self) -> Vec<(String, String)> {
        crate::daemons::master_override(self.master.as_deref())
    }
}

/// `strata fsadmin` commands.
#[derive(Debug, Subcommand)]
pub enum FsadminCommand {
    /// Each master's address, role, term, commit and applied index, log, and the
    /// leader. Exits 1 if a master does not answer.
    Report {
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The journal.
    Journal {
        /// The command.
        #[command(subcommand)]
        command: JournalCommand,
    },
}

/// `strata fsadmin journal` commands.
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Takes a snapshot of the leading master's state machine now (of the master
    /// named by `--master`, if given) and compacts its log behind it.
    Checkpoint {
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an fsadmin command; the exit code is the result.
pub async fn run(cfg: SiteConfig, cmd: &FsadminCommand) -> anyhow::Result<i32> {
    match cmd {
        FsadminCommand::Report { json } => report(&cfg, *json).await,
        FsadminCommand::Journal {
            command: JournalCommand::Checkpoint { json },
        } => journal_checkpoint(&cfg, *json).await,
    }
}

async fn journal_checkpoint(cfg: &SiteConfig, json: bool) -> anyhow::Result<i32> {
    let addr = if cfg.master_addresses.len() == 1 {
        cfg.master_addresses[0].clone()
    } else {
        let reports = journal_reports(cfg).await;
        match reports
            .into_iter()
            .find(|(_, r)| matches!(r, Ok(r) if r.role == JournalRole::Leader))
        {
            Some((addr, _)) => addr,
            None => anyhow::bail!(
                "no master leads the journal now; try again, or name one with --master"
            ),
        }
    };
    let (index, term) = checkpoint(cfg, &addr)
        .await
        .map_err(|e| anyhow::anyhow!("{addr}: cannot take a checkpoint: {e}"))?;
    if json {
        let out = serde_json::json!({ "address": addr, "index": index, "term": term });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("Checkpoint of {addr}: snapshot at entry {index} (term {term}); log compacted behind it");
    }
    Ok(0)
}

async fn report(cfg: &SiteConfig, json: bool) -> anyhow::Result<i32> {
    let reports = journal_reports(cfg).await;
    let leader = reports
        .iter()
        .find(|(_, r)| matches!(r, Ok(r) if r.role == JournalRole::Leader))
        .map(|(addr, _)| addr.clone());
    let all_answered = reports.iter().all(|(_, r)| r.is_ok());
    if json {
        let masters: Vec<serde_json::Value> = reports
            .iter()
            .map(|(addr, r)| match r {
                Ok(r) => serde_json::json!({ "address": addr, "journal": r }),
                Err(e) => serde_json::json!({ "address": addr, "error": e.to_string() }),
            })
            .collect();
        let out = serde_json::json!({ "masters": masters, "leader": leader });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("Masters: {}", reports.len());
        println!(
            "  {:<22} {:>3} {:<9} {:>6} {:>10} {:>10} {:>23} {:>9}",
            "ADDRESS", "ID", "ROLE", "TERM", "COMMIT", "APPLIED", "LOG (first..last)", "LOG SIZE"
        );
        for (addr, r) in &reports {
            match r {
                Ok(r) => println!("  {}", line(addr, r)),
                Err(e) => println!("  {addr:<22} does not answer: {e}"),
            }
        }
        match &leader {
            Some(addr) => println!("Leader: {addr}"),
            None => println!("Leader: none known"),
        }
    }
    Ok(if all_answered { 0 } else { 1 })
}

fn line(addr: &str, r: &JournalReport) -> String {
    format!(
        "{addr:<22} {:>3} {:<9} {:>6} {:>10} {:>10} {:>23} {:>9}",
        r.id,
        r.role.to_string(),
        r.term,
        r.commit_index,
        r.applied_index,
        format!("{}..{}", r.first_index, r.last_index),
        format_bytes(r.log_bytes)
    )
}
