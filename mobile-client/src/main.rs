//! `docfed`: search, fetch, flag and annotate documents of a docfed federation from the command
//! line, against a regional node (given, or discovered over mDNS).

mod client;
mod device;
mod discover;
mod error;
mod fetch;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::client::{check_id, Client};
use crate::error::CliError;

#[derive(Parser)]
#[command(
    name = "docfed",
    version,
    about = "Search and fetch documents of a docfed federation",
    after_help = const_format_help()
)]
struct Cli {
    /// Base URL of a docfed node, e.g. http://127.0.0.1:7121. Without it: mDNS, then fallbacks.
    #[arg(long, global = true, env = "DOCFED_SERVER")]
    server: Option<String>,
    /// Comma-separated URLs tried when mDNS finds no regional node.
    #[arg(long, global = true, env = "DOCFED_FALLBACK_SERVERS", default_value = discover::DEFAULT_FALLBACKS)]
    fallbacks: String,
    /// Machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

const fn const_format_help() -> &'static str {
    "Examples:
  docfed --server http://127.0.0.1:7121 search 'annual report'
  docfed search tides --region eu --tag maritime --limit 5
  docfed info 01890a5d-ac96-774b-bcce-b302099a8057
  docfed fetch 01890a5d-ac96-774b-bcce-b302099a8057 -o report.pdf
  docfed --server http://127.0.0.1:7121 register --name 'my laptop' --token \"$OPERATOR_TOKEN\"
  docfed flag 01890a5d-ac96-774b-bcce-b302099a8057
  docfed annotate 01890a5d-ac96-774b-bcce-b302099a8057 --text 'Page 3: typo'
  docfed --json search finance | jq '.documents[].id'
  docfed completions bash > /etc/bash_completion.d/docfed

Exit codes:
  0  success
  1  local error (file system, bad output path)
  2  usage error
  3  not found (unknown document id or version, nothing flagged)
  4  network: server unreachable, transfer interrupted, server unavailable
  5  verification failure: the downloaded bytes do not match the document's MD5
  6  refused by the server (invalid request, deleted document, device not registered
     with that node or revoked, over the node's flag quota)

Flags belong to a device registered with the node: `docfed register` once per node (the node's
operator token unless it has open enrollment); the device id and its secret are kept in
$XDG_CONFIG_HOME/docfed/devices.json (default ~/.config/docfed/devices.json, mode 0600)."
}

#[derive(Subcommand)]
enum Command {
    /// Full-text search of the complete directory (title, description, tags, file name, source).
    Search {
        /// Words to look for; FTS operators are taken literally, a trailing * matches prefixes.
        query: Vec<String>,
        /// Only documents of this region's scope.
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        author: Option<String>,
        /// Include deleted documents.
        #[arg(long)]
        deleted: bool,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue from a previous page's cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Metadata of a document.
    Info {
        #[arg(value_parser = doc_id)]
        id: String,
    },
    /// Version history of a document.
    Versions {
        #[arg(value_parser = doc_id)]
        id: String,
    },
    /// Download a document (resumable, MD5-verified).
    Fetch {
        #[arg(value_parser = doc_id)]
        id: String,
        /// An earlier version (see `versions`) instead of the current one.
        #[arg(long, value_name = "N")]
        version: Option<i64>,
        /// Output file (default: the document's file name in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Retries (with resume) after a network failure.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        /// No progress bar.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Register this device with the node (once per node), so it may flag documents there.
    Register {
        /// A name for the node's operator to tell devices apart, e.g. "Ana's phone".
        #[arg(long)]
        name: Option<String>,
        /// The node's operator token, needed unless the node has open enrollment.
        #[arg(long, env = "DOCFED_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Keep a document on this device's regional node and push its updates here (after
    /// `register`).
    Flag {
        #[arg(value_parser = doc_id)]
        id: String,
    },
    /// Stop pushing a document.
    Unflag {
        #[arg(value_parser = doc_id)]
        id: String,
    },
    /// Documents flagged by this device.
    Flags,
    /// Send a note on a document to its author.
    Annotate {
        #[arg(value_parser = doc_id)]
        id: String,
        /// The note to the author (1-20,000 characters).
        #[arg(long)]
        text: String,
        /// Your name as the author sees it (default: $USER).
        #[arg(long, env = "USER", default_value = "")]
        author: String,
    },
    /// The node's presence table and queue depths.
    Peers,
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("docfed: {e}");
            e.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "docfed", &mut std::io::stdout());
        return Ok(());
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| CliError::Local(e.to_string()))?;
    let resolved = discover::resolve(
        cli.server.as_deref(),
        &cli.fallbacks,
        Duration::from_millis(1500),
        &http,
    )
    .await?;
    let client = Client::new(resolved.url, http, resolved.tried.join("; "));
    let json = cli.json;
    match cli.command {
        Command::Search {
            query,
            region,
            tag,
            source,
            author,
            deleted,
            limit,
            cursor,
        } => {
            let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            let text = query.join(" ");
            if !text.trim().is_empty() {
                q.push(("q", text));
            }
            for (k, v) in [
                ("region", region),
                ("tag", tag),
                ("source", source),
                ("author", author),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            if deleted {
                q.push(("deleted", "any".into()));
            }
            let list = client.search(&q).await?;
            output::search(&list, json);
        }
        Command::Info { id } => output::info(&client.info(&id).await?, json),
        Command::Versions { id } => output::versions(&client.versions(&id).await?, json),
        Command::Fetch {
            id,
            version,
            output: out,
            retries,
            quiet,
        } => {
            let mut meta = client.info(&id).await?;
            if let Some(n) = version {
                let list = client.versions(&id).await?;
                // Concurrent edits can leave two versions with one number: the current one
                // wins, as it does everywhere.
                let entry = list
                    .versions
                    .iter()
                    .filter(|e| e.version.version == n)
                    .max_by_key(|e| e.current)
                    .ok_or_else(|| {
                        CliError::NotFound(format!("document {id} has no version {n}"))
                    })?;
                meta.current = entry.version.clone();
            }
            let dest = out.unwrap_or_else(|| fetch::default_path(&meta));
            let progress = !quiet && !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let done = fetch::fetch(&client, &meta, &dest, retries, progress).await?;
            output::fetched(&done, json);
        }
        Command::Register { name, token } => register(&client, name, token, json).await?,
        Command::Flag { id } => {
            let reg = device::require(&client.base)?;
            let v = client
                .send_json(
                    client
                        .http
                        .put(client.url(&format!(
                            "/v1/devices/{}/flags/{}",
                            reg.device,
                            check_id(&id)?
                        )))
                        .bearer_auth(&reg.secret),
                )
                .await
                .map_err(|e| revoked_hint(e, &client.base))?;
            output::value(&v, json, &format!("flagged {id} for device {}", reg.device));
        }
        Command::Unflag { id } => {
            let reg = device::require(&client.base)?;
            let v = client
                .send_json(
                    client
                        .http
                        .delete(client.url(&format!(
                            "/v1/devices/{}/flags/{}",
                            reg.device,
                            check_id(&id)?
                        )))
                        .bearer_auth(&reg.secret),
                )
                .await
                .map_err(|e| revoked_hint(e, &client.base))?;
            output::value(
                &v,
                json,
                &format!("unflagged {id} for device {}", reg.device),
            );
        }
        Command::Flags => {
            let reg = device::require(&client.base)?;
            let v = client
                .send_json(
                    client
                        .http
                        .get(client.url(&format!("/v1/devices/{}/flags", reg.device)))
                        .bearer_auth(&reg.secret),
                )
                .await
                .map_err(|e| revoked_hint(e, &client.base))?;
            let docs: Vec<docfed_shared::wire::DocumentMeta> =
                serde_json::from_value(v["documents"].clone())
                    .map_err(|e| CliError::Network(e.to_string()))?;
            output::search(
                &docfed_shared::wire::DocumentList {
                    documents: docs,
                    next_cursor: None,
                },
                json,
            );
        }
        Command::Annotate { id, text, author } => {
            let v = client
                .send_json(
                    client
                        .http
                        .post(client.url(&format!("/v1/documents/{}/annotations", check_id(&id)?)))
                        .json(&serde_json::json!({ "text": text, "author": author })),
                )
                .await?;
            output::value(
                &v,
                json,
                &format!(
                    "annotation {} sent to the author of {id}",
                    v["id"].as_str().unwrap_or("?")
                ),
            );
        }
        Command::Peers => {
            let v: serde_json::Value = client.get_json("/v1/peers", &[]).await?;
            output::peers(&v, json);
        }
        Command::Completions { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// A document id argument: anything else is a usage error (exit 2) before any request.
fn doc_id(s: &str) -> Result<String, String> {
    s.parse::<docfed_shared::DocId>()
        .map(|_| s.to_owned())
        .map_err(|_| {
            format!(
                "{s:?} is not a document id (a UUID such as 01890a5d-ac96-774b-bcce-b302099a8057)"
            )
        })
}

/// `docfed register`: registers this device with the node, unless it is registered there
/// already (and the node still accepts its secret), and keeps the id and secret.
async fn register(
    client: &Client,
    name: Option<String>,
    token: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let server = client.base.clone();
    if let Some(reg) = device::load(&server)? {
        let resp = client
            .http
            .get(client.url(&format!("/v1/devices/{}/flags", reg.device)))
            .bearer_auth(&reg.secret)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| client.network(e))?;
        if resp.status().is_success() {
            let v = serde_json::json!({
                "device": reg.device, "server": server, "name": reg.name, "new": false,
                "credentials": device::path()?,
            });
            output::value(
                &v,
                json,
                &format!("already registered with {server} as device {}", reg.device),
            );
            return Ok(());
        }
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            client.check(resp).await?;
        }
        // Revoked, or the node lost its database: register anew.
    }
    let mut req = client
        .http
        .post(client.url("/v1/devices"))
        .json(&docfed_shared::wire::RegisterDevice { name });
    if let Some(t) = token.as_deref().filter(|t| !t.is_empty()) {
        req = req.bearer_auth(t);
    }
    let v = client.send_json(req).await.map_err(|e| match e {
        CliError::Unauthorized(m) => CliError::Unauthorized(format!(
            "{m}; pass the node's operator token with --token (or DOCFED_TOKEN)"
        )),
        e => e,
    })?;
    let got: docfed_shared::wire::DeviceRegistration = serde_json::from_value(v)
        .map_err(|e| CliError::Network(format!("{server}: unexpected answer: {e}")))?;
    let path = device::save(
        &server,
        &device::Registration {
            device: got.device.clone(),
            secret: got.secret,
            name: got.name.clone(),
        },
    )?;
    // The secret stays in the file: never printed.
    let v = serde_json::json!({
        "device": got.device, "server": server, "name": got.name, "new": true,
        "credentials": path,
    });
    output::value(
        &v,
        json,
        &format!(
            "registered with {server} as device {}; its secret is kept in {}",
            got.device,
            path.display()
        ),
    );
    Ok(())
}

/// A 401 on a device's request: its secret no longer works there.
fn revoked_hint(e: CliError, server: &str) -> CliError {
    match e {
        CliError::Unauthorized(m) => CliError::Unauthorized(format!(
            "{m}. If an operator revoked this device, register it again: docfed --server {server} register"
        )),
        e => e,
    }
}
