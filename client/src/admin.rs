//! Administration: the state of each master, for `strata fsadmin`.

use crate::channel;
use strata_common::config::SiteConfig;
use strata_common::proto::{self, master_admin_client::MasterAdminClient};
use strata_common::types::JournalReport;
use strata_common::Result;

/// Asks every master in `conf.master_addresses` for its journal report, in that
/// order; a master that cannot be reached gives its error in its place.
pub async fn journal_reports(conf: &SiteConfig) -> Vec<(String, Result<JournalReport>)> {
    let asks = conf.master_addresses.iter().map(|addr| async move {
        let report = async {
            let mut client = MasterAdminClient::new(channel(
                addr,
                &conf.client,
                Some(conf.client.rpc_timeout.0),
            )?);
            let resp = client
                .get_journal_report(proto::GetJournalReportRequest {})
                .await?;
            JournalReport::try_from(resp.into_inner())
        }
        .await;
        (addr.clone(), report)
    });
    futures::future::join_all(asks).await
}

/// Has the master at `addr` take a snapshot of its state machine now and compact
/// its log behind it; the snapshot's last index and term.
pub async fn checkpoint(conf: &SiteConfig, addr: &str) -> Result<(u64, u64)> {
    let mut client = MasterAdminClient::new(channel(addr, &conf.client, None)?);
    let resp = client
        .checkpoint(proto::CheckpointRequest {})
        .await?
        .into_inner();
    Ok((resp.index, resp.term))
}
