//! The commands that read: search, info and versions (from the replica when no server
//! answers), fetch, flags, annotations and peers.

use docfed_shared::wire::devices::FlaggedDocuments;
use docfed_shared::wire::{DocumentList, DocumentMeta};

use super::Ctx;
use crate::client::Client;
use crate::error::CliError;
use crate::replica::SearchQuery;
use crate::{device, fetch, output, FetchArgs, SearchArgs};

/// `docfed search`.
pub async fn search(ctx: &Ctx, a: SearchArgs) -> Result<(), CliError> {
    let text = a.query.join(" ");
    let mut q: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
    if !text.trim().is_empty() {
        q.push(("q", text.clone()));
    }
    for (k, v) in [
        ("region", &a.region),
        ("tag", &a.tag),
        ("source", &a.source),
        ("author", &a.author),
        ("cursor", &a.cursor),
    ] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    if a.deleted {
        q.push(("deleted", "any".into()));
    }
    let local = SearchQuery {
        text,
        scope: a.region.map(|r| format!("region:{r}")),
        tag: a.tag,
        source: a.source,
        author: a.author,
        deleted: a.deleted,
        limit: a.limit,
        cursor: a.cursor,
    };
    let list = ctx
        .ask(
            async |client| client.search(&q).await,
            async |replica| replica.search(&local).await,
        )
        .await?;
    output::search(&list, ctx.json)
}

/// `docfed info`: with where the replica keeps the content, if it does.
pub async fn info(ctx: &Ctx, id: &str) -> Result<(), CliError> {
    let (meta, replica) = ctx
        .ask(
            async |client| Ok((client.info(id).await?, ctx.existing_replica().await?)),
            async |replica| {
                let meta = replica
                    .document(id)
                    .await?
                    .ok_or_else(|| not_in_replica(id))?;
                Ok((meta, Some(replica)))
            },
        )
        .await?;
    let local = match &replica {
        Some(r) => output::LocalContent {
            path: r.local_path(id).await?,
            deferred: r.deferred(id).await?,
        },
        None => output::LocalContent::default(),
    };
    output::info(&meta, &local, ctx.json)
}

/// `docfed versions`.
pub async fn versions(ctx: &Ctx, id: &str) -> Result<(), CliError> {
    let list = ctx
        .ask(
            async |client| client.versions(id).await,
            async |replica| {
                replica
                    .versions(id)
                    .await?
                    .ok_or_else(|| not_in_replica(id))
            },
        )
        .await?;
    output::versions(&list, ctx.json)
}

/// `docfed fetch`: from a server only (the replica's files are in --home/files/ already).
pub async fn fetch(ctx: &Ctx, a: FetchArgs) -> Result<(), CliError> {
    let client = ctx.online().await?;
    let id = &a.id;
    let mut meta = client.info(id).await?;
    if let Some(n) = a.version {
        let list = client.versions(id).await?;
        // Concurrent edits can leave two versions with one number: the current one wins, as it
        // does everywhere.
        let entry = list
            .versions
            .iter()
            .filter(|e| e.version.version == n)
            .max_by_key(|e| e.current)
            .ok_or_else(|| CliError::NotFound(format!("document {id} has no version {n}")))?;
        meta.current = entry.version.clone();
    }
    // A name the server chose never replaces a file unless asked: a hostile (or merely
    // unlucky) file name must not overwrite the user's own.
    let overwrite = a.output.is_some() || a.force;
    let dest = a.output.unwrap_or_else(|| fetch::default_path(&meta));
    if !overwrite && dest.symlink_metadata().is_ok() {
        return Err(fetch::exists(&dest));
    }
    let done = fetch::fetch(
        &client,
        &meta,
        &dest,
        a.retries,
        ctx.progress(a.quiet),
        overwrite,
    )
    .await?;
    output::fetched(&done, ctx.json)
}

/// `docfed flags`: the server's list for this device, else the replica's (naming the flags
/// whose documents the replica does not know yet).
pub async fn flags(ctx: &Ctx) -> Result<(), CliError> {
    let documents = ctx
        .ask(flags_online, async |replica| {
            let (docs, unknown) = replica.flagged().await?;
            if !unknown.is_empty() {
                eprintln!(
                    "docfed: also flagged, not in the replica's directory yet: {}",
                    unknown.join(", ")
                );
            }
            Ok(docs)
        })
        .await?;
    output::search(
        &DocumentList {
            documents,
            next_cursor: None,
        },
        ctx.json,
    )
}

async fn flags_online(client: &Client) -> Result<Vec<DocumentMeta>, CliError> {
    let reg = device::require(&client.base)?;
    let flagged: FlaggedDocuments = client
        .send_json(
            client
                .http
                .get(client.url(&format!("/v1/devices/{}/flags", reg.device)))
                .bearer_auth(&reg.secret),
        )
        .await
        .map_err(|e| super::register::revoked_hint(e, &client.base))?;
    Ok(flagged.documents)
}

/// `docfed annotations ID`: an annotation's state, else (ID is a document's) the annotations
/// its author accepted.
pub async fn annotations(ctx: &Ctx, id: &str) -> Result<(), CliError> {
    let client = ctx.online().await?;
    let one: Result<serde_json::Value, CliError> =
        client.get_json(&format!("/v1/annotations/{id}"), &[]).await;
    match one {
        Ok(a) => output::annotation(&a, ctx.json),
        Err(CliError::NotFound(_)) => {
            let list: serde_json::Value = client
                .get_json(&format!("/v1/documents/{id}/annotations"), &[])
                .await?;
            output::annotations(&list, ctx.json)
        }
        Err(e) => Err(e),
    }
}

/// `docfed peers`.
pub async fn peers(ctx: &Ctx) -> Result<(), CliError> {
    let v: serde_json::Value = ctx.online().await?.get_json("/v1/peers", &[]).await?;
    output::peers(&v, ctx.json)
}

fn not_in_replica(id: &str) -> CliError {
    CliError::NotFound(format!("document {id} is not in the replica"))
}
