//! `docfed`: search, fetch, flag and annotate documents of a docfed federation from the command
//! line, against a regional node (given, or discovered over mDNS).

mod client;
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
    /// This device's id for flags (default: one generated once and kept in ~/.config/docfed).
    #[arg(long, global = true, env = "DOCFED_DEVICE")]
    device: Option<String>,
    #[command(subcommand)]
    command: Command,
}

const fn const_format_help() -> &'static str {
    "Examples:
  docfed --server http://127.0.0.1:7121 search 'annual report'
  docfed search tides --region eu --tag maritime --limit 5
  docfed info 01890a5d-ac96-774b-bcce-b302099a8057
  docfed fetch 01890a5d-ac96-774b-bcce-b302099a8057 -o report.pdf
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
  6  refused by the server (invalid request, deleted document)"
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
    /// Keep a document on this device's regional node and push its updates here.
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
        Command::Flag { id } => {
            let device = device_id(cli.device)?;
            let v = client
                .send_json(
                    client
                        .http
                        .put(client.url(&format!("/v1/devices/{device}/flags/{}", check_id(&id)?))),
                )
                .await?;
            output::value(&v, json, &format!("flagged {id} for device {device}"));
        }
        Command::Unflag { id } => {
            let device = device_id(cli.device)?;
            let v =
                client
                    .send_json(client.http.delete(
                        client.url(&format!("/v1/devices/{device}/flags/{}", check_id(&id)?)),
                    ))
                    .await?;
            output::value(&v, json, &format!("unflagged {id} for device {device}"));
        }
        Command::Flags => {
            let device = device_id(cli.device)?;
            let v: serde_json::Value = client
                .get_json(&format!("/v1/devices/{device}/flags"), &[])
                .await?;
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

/// The device id: given, or generated once and kept in the user's config directory.
fn device_id(given: Option<String>) -> Result<String, CliError> {
    if let Some(d) = given {
        return Ok(d);
    }
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| CliError::Local("no HOME to keep the device id in; pass --device".into()))?
        .join("docfed");
    let path = dir.join("device-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_owned());
    }
    std::fs::create_dir_all(&dir)?;
    let id = format!("dev-{:016x}", rand::random::<u64>());
    std::fs::write(&path, &id)?;
    Ok(id)
}
