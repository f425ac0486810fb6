//! `flag`, `unflag`, `annotate`: sent to the server when one answers (after the actions still
//! queued, which keeps their order), recorded in the replica if there is one; queued in the
//! replica for the next `sync` when no server answers.

use docfed_shared::wire::annotations::{AnnotationCreated, NewAnnotation};
use docfed_shared::wire::devices::{Flagged, Unflagged};

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
    let sent = match ctx.online().await {
        Ok(client) => send(ctx, &client, &action, id).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok((v, human)) => output::value(&v, ctx.json, &human),
        Err(CliError::Network(reason)) => queue(ctx, &action, id, &reason).await,
        Err(e) => Err(e),
    }
}

impl Action {
    /// What the outbox keeps to send later: the annotation's body (its id is the outbox row's),
    /// nothing for a flag.
    fn queued_body(&self) -> String {
        match self {
            Action::Annotate { text, author } => serde_json::to_string(&NewAnnotation {
                text: text.clone(),
                author: Some(author.clone()),
                id: None,
            })
            .expect("serialisable"),
            Action::Flag | Action::Unflag => "{}".to_owned(),
        }
    }
}

/// No server answered: the action waits in the replica for the next `sync`.
async fn queue(ctx: &Ctx, action: &Action, id: &str, reason: &str) -> Result<(), CliError> {
    let replica = ctx.replica().await?;
    let oid = replica
        .queue(action.kind(), id, &action.queued_body())
        .await?;
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

/// Sends `action` to `client`'s node: its answer as the node sent it (what `--json` prints) and
/// for people.
async fn send(
    ctx: &Ctx,
    client: &Client,
    action: &Action,
    id: &str,
) -> Result<(serde_json::Value, String), CliError> {
    let replica = ctx.existing_replica().await?;
    if let Some(r) = &replica {
        // Earlier offline actions go first, so a later unflag is not overtaken by an older flag.
        let mut report = sync::Report::default();
        sync::flush_outbox(client, r, &mut report).await?;
    }
    let (v, human) = match action {
        Action::Flag | Action::Unflag => {
            let reg = device::require(&client.base)?;
            let url = client.url(&format!("/v1/devices/{}/flags/{id}", reg.device));
            let req = if matches!(action, Action::Flag) {
                client.http.put(url)
            } else {
                client.http.delete(url)
            };
            let v: serde_json::Value = client
                .send_json(req.bearer_auth(&reg.secret))
                .await
                .map_err(|e| super::register::revoked_hint(e, &client.base))?;
            // The node did it: an answer it words otherwise does not undo that (nor send it to
            // the outbox), and the device it names is the one asked.
            let human = if matches!(action, Action::Flag) {
                let device = answer::<Flagged>(&v).map_or(reg.device, |f| f.device);
                format!("flagged {id} for device {device}")
            } else {
                let device = answer::<Unflagged>(&v).map_or(reg.device, |u| u.device);
                format!("unflagged {id} for device {device}")
            };
            (v, human)
        }
        Action::Annotate { text, author } => {
            let body = NewAnnotation {
                text: text.clone(),
                author: Some(author.clone()),
                // A client-chosen id: a retry after a lost answer is not a second annotation.
                id: Some(docfed_shared::DocId::new().to_string()),
            };
            let v: serde_json::Value = client
                .send_json(
                    client
                        .http
                        .post(client.url(&format!("/v1/documents/{id}/annotations")))
                        .json(&body),
                )
                .await?;
            let aid = answer::<AnnotationCreated>(&v).map_or_else(|| "?".to_owned(), |a| a.id);
            let human = format!("annotation {aid} sent to the author of {id}");
            (v, human)
        }
    };
    if let Some(r) = &replica {
        match action {
            Action::Flag => r.set_flag(id, true).await?,
            Action::Unflag => r.set_flag(id, false).await?,
            Action::Annotate { .. } => {}
        }
    }
    Ok((v, human))
}

/// The node's answer read as its `shared::wire` body, if it is one.
fn answer<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Option<T> {
    T::deserialize(v).ok()
}
