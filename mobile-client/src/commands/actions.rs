//! `flag`, `unflag`, `annotate`: sent to the server when one answers (after the actions still
//! queued, which keeps their order), recorded in the replica if there is one; queued in the
//! replica for the next `sync` when no server answers.

use super::Ctx;
use crate::client::{check_id, Client};
use crate::error::CliError;
use crate::{device, output, sync};

pub enum Action {
    Flag,
    Unflag,
    Annotate { text: String, author: String },
}

impl Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::Flag => "flag",
            Action::Unflag => "unflag",
            Action::Annotate { .. } => "annotate",
        }
    }
}

/// `docfed flag|unflag|annotate`.
pub async fn run(ctx: &Ctx, action: Action, id: &str) -> Result<(), CliError> {
    check_id(id)?;
    let body = match &action {
        Action::Annotate { text, author } => {
            serde_json::json!({ "text": text, "author": author })
        }
        _ => serde_json::json!({}),
    };
    let sent = match ctx.online().await {
        Ok(client) => send(ctx, &client, &action, id, &body).await,
        Err(e) => Err(e),
    };
    let v = match sent {
        Ok(v) => v,
        Err(CliError::Network(reason)) => return queue(ctx, &action, id, &body, &reason).await,
        Err(e) => return Err(e),
    };
    let human = match &action {
        Action::Flag => format!(
            "flagged {id} for device {}",
            v["device"].as_str().unwrap_or("?")
        ),
        Action::Unflag => format!(
            "unflagged {id} for device {}",
            v["device"].as_str().unwrap_or("?")
        ),
        Action::Annotate { .. } => format!(
            "annotation {} sent to the author of {id}",
            v["id"].as_str().unwrap_or("?")
        ),
    };
    output::value(&v, ctx.json, &human)
}

/// No server answered: the action waits in the replica for the next `sync`.
async fn queue(
    ctx: &Ctx,
    action: &Action,
    id: &str,
    body: &serde_json::Value,
    reason: &str,
) -> Result<(), CliError> {
    let replica = ctx.replica().await?;
    let oid = replica.queue(action.kind(), id, &body.to_string()).await?;
    eprintln!(
        "docfed: {}; queued in {} for the next `docfed sync`",
        ctx.why_offline(reason),
        ctx.home.display()
    );
    let v = serde_json::json!({
        "queued": true, "id": oid, "kind": action.kind(), "doc_id": id,
    });
    output::value(
        &v,
        ctx.json,
        &format!(
            "{} of {id} queued; `docfed sync` delivers it",
            action.kind()
        ),
    )
}

async fn send(
    ctx: &Ctx,
    client: &Client,
    action: &Action,
    id: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, CliError> {
    let replica = ctx.existing_replica().await?;
    if let Some(r) = &replica {
        // Earlier offline actions go first, so a later unflag is not overtaken by an older flag.
        let mut report = sync::Report::default();
        sync::flush_outbox(client, r, &mut report).await?;
    }
    let mut v = match action {
        Action::Flag | Action::Unflag => {
            let reg = device::require(&client.base)?;
            let url = client.url(&format!("/v1/devices/{}/flags/{id}", reg.device));
            let req = if matches!(action, Action::Flag) {
                client.http.put(url)
            } else {
                client.http.delete(url)
            };
            let mut v = client
                .send_json(req.bearer_auth(&reg.secret))
                .await
                .map_err(|e| super::register::revoked_hint(e, &client.base))?;
            if v.get("device").is_none() {
                v["device"] = reg.device.clone().into();
            }
            v
        }
        Action::Annotate { .. } => {
            // A client-chosen id: a retry after a lost answer is not a second annotation.
            let mut body = body.clone();
            body["id"] = docfed_shared::DocId::new().to_string().into();
            client
                .send_json(
                    client
                        .http
                        .post(client.url(&format!("/v1/documents/{id}/annotations")))
                        .json(&body),
                )
                .await?
        }
    };
    if let Some(r) = &replica {
        match action {
            Action::Flag => r.set_flag(id, true).await?,
            Action::Unflag => r.set_flag(id, false).await?,
            Action::Annotate { .. } => {}
        }
    }
    if v.is_null() {
        v = serde_json::json!({});
    }
    Ok(v)
}
