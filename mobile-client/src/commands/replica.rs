//! `docfed sync` (one catch-up of the replica, then exit) and `docfed daemon` (catch-ups for as
//! long as it runs).

use std::time::Duration;

use super::Ctx;
use crate::error::CliError;
use crate::{daemon, device, discover, output, sync, DaemonArgs, StorageBudget, SyncArgs};

/// `docfed sync`.
pub async fn sync(ctx: &Ctx, a: SyncArgs) -> Result<(), CliError> {
    let client = ctx.online().await?;
    let replica = ctx.replica().await?;
    if let Some(StorageBudget(b)) = a.max_storage {
        replica.set_storage_budget(b).await?;
    }
    let opts = sync::Options {
        progress: ctx.progress(a.quiet),
        limit_rate: a.limit_rate.map(|r| r.as_u64()),
        page: a.page,
        retries: a.retries,
    };
    let report = sync::sync(&client, &replica, &opts).await?;
    replica.close().await;
    output::synced(&report, ctx.json)?;
    // The rest was applied; what was refused makes the run fail (exit 5), so that a script
    // notices a server sending forgeries.
    match report.refused.as_slice() {
        [] => Ok(()),
        refused => Err(CliError::Verification(format!(
            "{} refused {} from {} (not signed by a primary of the pinned federation): {}",
            refused.len(),
            if refused.len() == 1 {
                "version"
            } else {
                "versions"
            },
            report.server,
            refused.join("; ")
        ))),
    }
}

/// `docfed daemon`.
pub async fn daemon(ctx: &Ctx, a: DaemonArgs) -> Result<(), CliError> {
    let client = ctx.online().await?;
    device::require(&client.base)?;
    let replica = ctx.replica().await?;
    if let Some(StorageBudget(b)) = a.max_storage {
        replica.set_storage_budget(b).await?;
    }
    let opts = daemon::Options {
        catch_up_interval: a.catch_up_interval.max(Duration::from_secs(1)),
        sync: sync::Options {
            progress: false,
            limit_rate: a.limit_rate.map(|r| r.as_u64()),
            page: 2000,
            retries: a.retries,
        },
        json: ctx.json,
        fallbacks: discover::split_urls(&ctx.fallbacks),
        mdns: ctx.mdns,
    };
    daemon::run(client, replica, opts).await
}
