//! `docfed`: search, fetch, flag and annotate documents of a docfed federation from the command
//! line, against a regional node (given, or discovered over mDNS).
//!
//! Over 600 lines on purpose: the command line's definition (clap) and one short function per
//! command, each calling into the modules that do the work.

mod client;
mod daemon;
mod device;
mod discover;
mod error;
mod fetch;
mod output;
mod replica;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use docfed_shared::wire::Timestamp;

use crate::client::{check_id, Client};
use crate::error::CliError;
use crate::replica::{Replica, SearchQuery};

#[derive(Parser)]
#[command(
    name = "docfed",
    version,
    about = "Search and fetch documents of a docfed federation",
    after_help = const_format_help()
)]
struct Cli {
    /// Base URL of a docfed node, e.g. https://127.0.0.1:7121. Without it: mDNS, then fallbacks.
    #[arg(long, global = true, env = "DOCFED_SERVER")]
    server: Option<String>,
    /// Comma-separated URLs tried when mDNS finds no regional node.
    #[arg(long, global = true, env = "DOCFED_FALLBACK_SERVERS", default_value = discover::DEFAULT_FALLBACKS)]
    fallbacks: String,
    /// Do not look for nodes over mDNS (only --server and the fallbacks), e.g. where several
    /// federations share a network.
    #[arg(long, global = true, env = "DOCFED_NO_MDNS")]
    no_mdns: bool,
    /// Machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Directory of this device's replica (directory, flags, offline outbox, flagged content in
    /// DIR/files/). Default: $XDG_DATA_HOME/docfed, i.e. ~/.local/share/docfed.
    #[arg(long, global = true, env = "DOCFED_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Ask no server: search, info, versions and flags answer from the replica; flag, unflag
    /// and annotate are queued for the next `sync`.
    #[arg(long, global = true)]
    offline: bool,
    /// The federation CA's certificate (PEM) to trust for https:// servers (`docfed-topology
    /// up` prints its path and writes it to federation.json as `ca`). `register` pins it:
    /// later commands trust it without --ca, and refuse another one.
    #[arg(long, global = true, env = "DOCFED_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

const fn const_format_help() -> &'static str {
    "Examples:
  docfed --server https://127.0.0.1:7121 search 'annual report'
  docfed search tides --region eu --tag maritime --limit 5
  docfed info 01890a5d-ac96-774b-bcce-b302099a8057
  docfed fetch 01890a5d-ac96-774b-bcce-b302099a8057 -o report.pdf
  docfed --server https://127.0.0.1:7121 register --name 'my laptop' --token \"$OPERATOR_TOKEN\"
  docfed flag 01890a5d-ac96-774b-bcce-b302099a8057
  docfed annotate 01890a5d-ac96-774b-bcce-b302099a8057 --text 'Page 3: typo'
  docfed --json search finance | jq '.documents[].id'
  docfed completions bash > /etc/bash_completion.d/docfed
  docfed --server https://127.0.0.1:7121 sync
  docfed --offline search tides
  docfed --server https://127.0.0.1:7121 daemon --catch-up-interval 15min

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
$XDG_CONFIG_HOME/docfed/devices.json (default ~/.config/docfed/devices.json, mode 0600).

Offline: `docfed sync` keeps a replica in --home (the complete directory, this device's flags and
the newest content of every flagged document in DIR/files/). When no server answers (or with
--offline), search, info, versions and flags answer from it, saying on stderr how old it is;
flag, unflag and annotate are queued there and delivered, each once, by the next `sync`."
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
    /// Read annotations: ID is an annotation's id (as `annotate` printed it: its text and
    /// whether the author accepted or rejected it) or a document's id (the annotations its
    /// author accepted). Any node answers: decisions reach every node.
    Annotations {
        #[arg(value_parser = doc_id)]
        id: String,
    },
    /// The node's presence table and queue depths.
    Peers,
    /// Catch the replica up with a node, then exit: deliver queued actions, apply the change
    /// feed, download the newest content of flagged documents into --home/files/.
    Sync {
        /// No progress bar.
        #[arg(short, long)]
        quiet: bool,
        /// Cap on the download speed, e.g. `2MB` (bytes per second).
        #[arg(long, value_name = "RATE")]
        limit_rate: Option<bytesize::ByteSize>,
        /// Retries (with resume) of a download after a network failure.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        /// Changes asked for per request and applied per transaction.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        page: u32,
        /// Room for flagged content in --home/files/, e.g. `2GB`, kept for later syncs and the
        /// daemon (`unlimited` lifts it). Documents flagged first are kept first; the others
        /// stay metadata only until room is made.
        #[arg(long, value_name = "SIZE", value_parser = parse_storage)]
        max_storage: Option<StorageBudget>,
    },
    /// Stay running and keep the replica caught up (as `sync` does) whenever the node says
    /// something changed (`GET /v1/events`), at start, every --catch-up-interval and when a
    /// network interface comes up; one line per catch-up on stdout. Stops on SIGINT/SIGTERM.
    /// Needs `register` first. A systemd user unit: mobile-client/docfed.service.
    Daemon {
        /// Catch up this often even without events, e.g. `15min`.
        #[arg(long, default_value = "15min", value_parser = humantime::parse_duration)]
        catch_up_interval: Duration,
        /// Cap on the download speed, e.g. `2MB` (bytes per second).
        #[arg(long, value_name = "RATE")]
        limit_rate: Option<bytesize::ByteSize>,
        /// Retries (with resume) of a download after a network failure, per catch-up.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        /// Room for flagged content in --home/files/ (as for `sync`).
        #[arg(long, value_name = "SIZE", value_parser = parse_storage)]
        max_storage: Option<StorageBudget>,
    },
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

/// What every command needs to reach a server or the replica.
struct Ctx {
    server: Option<String>,
    fallbacks: String,
    mdns: bool,
    json: bool,
    offline: bool,
    home: PathBuf,
    http: reqwest::Client,
}

impl Ctx {
    /// A server that answers (`--server`, mDNS, fallbacks); with `--offline`, none.
    async fn online(&self) -> Result<Client, CliError> {
        if self.offline {
            return Err(CliError::Network("--offline".into()));
        }
        let resolved = discover::resolve(
            self.server.as_deref(),
            &self.fallbacks,
            if self.mdns {
                Duration::from_millis(1500)
            } else {
                Duration::ZERO
            },
            &self.http,
        )
        .await?;
        if let Some(id) = &resolved.mdns_id {
            eprintln!(
                "docfed: using {id} at {} (found over mDNS; --server or --no-mdns to choose)",
                resolved.url
            );
        }
        Ok(Client::new(
            resolved.url,
            self.http.clone(),
            resolved.tried.join("; "),
        ))
    }

    /// The replica, when `e` says no server answered (or `--offline`) and there is one; it
    /// says on stderr why it answers and how old it is. Any other error is returned.
    async fn fallback(&self, e: CliError) -> Result<Replica, CliError> {
        let CliError::Network(reason) = e else {
            return Err(e);
        };
        if !Replica::exists(&self.home) {
            return Err(if self.offline {
                CliError::NotFound(format!(
                    "--offline: there is no replica in {} yet; run `docfed sync` first",
                    self.home.display()
                ))
            } else {
                CliError::Network(reason)
            });
        }
        let replica = Replica::open(&self.home).await?;
        let age = match replica.last_sync().await? {
            Some((at, server)) => {
                let secs = (Timestamp::now().millis() - at.millis()).max(0) / 1000;
                format!(
                    "last synced {} ago ({at}, with {server})",
                    humantime::format_duration(Duration::from_secs(secs as u64))
                )
            }
            None => "never synced".into(),
        };
        let why = if self.offline {
            "offline".to_owned()
        } else {
            format!("no server answered ({reason})")
        };
        eprintln!(
            "docfed: {why}; answering from the replica in {}, {age}",
            self.home.display()
        );
        Ok(replica)
    }

    /// The replica if one exists (online commands keep it up to date).
    async fn existing_replica(&self) -> Result<Option<Replica>, CliError> {
        if Replica::exists(&self.home) {
            Ok(Some(Replica::open(&self.home).await?))
        } else {
            Ok(None)
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "docfed", &mut std::io::stdout());
        return Ok(());
    }
    let registering = matches!(cli.command, Command::Register { .. });
    let given_ca = cli.ca.clone();
    client::trust_ca(client::choose_ca(cli.ca.clone(), registering)?)?;
    let http = client::http_client()?;
    let home = match cli.home {
        Some(h) => h,
        None => replica::default_home()?,
    };
    let ctx = Ctx {
        server: cli.server,
        fallbacks: cli.fallbacks,
        mdns: !cli.no_mdns,
        json: cli.json,
        offline: cli.offline,
        home,
        http,
    };
    let json = ctx.json;
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
            let text = query.join(" ");
            let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            if !text.trim().is_empty() {
                q.push(("q", text.clone()));
            }
            for (k, v) in [
                ("region", &region),
                ("tag", &tag),
                ("source", &source),
                ("author", &author),
                ("cursor", &cursor),
            ] {
                if let Some(v) = v {
                    q.push((k, v.clone()));
                }
            }
            if deleted {
                q.push(("deleted", "any".into()));
            }
            let local = SearchQuery {
                text,
                scope: region.map(|r| format!("region:{r}")),
                tag,
                source,
                author,
                deleted,
                limit,
                cursor,
            };
            let online = match ctx.online().await {
                Ok(client) => client.search(&q).await,
                Err(e) => Err(e),
            };
            let list = match online {
                Ok(list) => list,
                Err(e) => ctx.fallback(e).await?.search(&local).await?,
            };
            output::search(&list, json);
        }
        Command::Info { id } => {
            let online = match ctx.online().await {
                Ok(client) => client.info(&id).await,
                Err(e) => Err(e),
            };
            let (meta, replica) = match online {
                Ok(m) => (m, ctx.existing_replica().await?),
                Err(e) => {
                    let r = ctx.fallback(e).await?;
                    let m = r.document(&id).await?.ok_or_else(|| not_in_replica(&id))?;
                    (m, Some(r))
                }
            };
            let local = match &replica {
                Some(r) => output::LocalContent {
                    path: r.local_path(&id).await?,
                    deferred: r.deferred(&id).await?,
                },
                None => output::LocalContent::default(),
            };
            output::info(&meta, &local, json);
        }
        Command::Versions { id } => {
            let online = match ctx.online().await {
                Ok(client) => client.versions(&id).await,
                Err(e) => Err(e),
            };
            let list = match online {
                Ok(l) => l,
                Err(e) => ctx
                    .fallback(e)
                    .await?
                    .versions(&id)
                    .await?
                    .ok_or_else(|| not_in_replica(&id))?,
            };
            output::versions(&list, json);
        }
        Command::Fetch {
            id,
            version,
            output: out,
            retries,
            quiet,
        } => {
            let client = ctx.online().await?;
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
        Command::Register { name, token } => {
            register(&ctx.online().await?, name, token, json).await?;
            // Enrolled through this CA: later commands trust it without --ca, and no other.
            if let Some(ca) = &given_ca {
                client::pin_ca(ca)?;
            }
        }
        Command::Flag { id } => action(&ctx, Action::Flag, &id).await?,
        Command::Unflag { id } => action(&ctx, Action::Unflag, &id).await?,
        Command::Annotate { id, text, author } => {
            action(&ctx, Action::Annotate { text, author }, &id).await?
        }
        Command::Flags => {
            let online = match ctx.online().await {
                Ok(client) => flags_online(&client).await,
                Err(e) => Err(e),
            };
            let docs = match online {
                Ok(docs) => docs,
                Err(e) => {
                    let (docs, unknown) = ctx.fallback(e).await?.flagged().await?;
                    if !unknown.is_empty() {
                        eprintln!(
                            "docfed: also flagged, not in the replica's directory yet: {}",
                            unknown.join(", ")
                        );
                    }
                    docs
                }
            };
            output::search(
                &docfed_shared::wire::DocumentList {
                    documents: docs,
                    next_cursor: None,
                },
                json,
            );
        }
        Command::Annotations { id } => {
            let client = ctx.online().await?;
            let one: Result<serde_json::Value, CliError> =
                client.get_json(&format!("/v1/annotations/{id}"), &[]).await;
            match one {
                Ok(a) => output::annotation(&a, json),
                Err(CliError::NotFound(_)) => {
                    let list: serde_json::Value = client
                        .get_json(&format!("/v1/documents/{id}/annotations"), &[])
                        .await?;
                    output::annotations(&list, json);
                }
                Err(e) => return Err(e),
            }
        }
        Command::Peers => {
            let v: serde_json::Value = ctx.online().await?.get_json("/v1/peers", &[]).await?;
            output::peers(&v, json);
        }
        Command::Sync {
            quiet,
            limit_rate,
            retries,
            page,
            max_storage,
        } => {
            let client = ctx.online().await?;
            let replica = Replica::open(&ctx.home).await?;
            if let Some(StorageBudget(b)) = max_storage {
                replica.set_storage_budget(b).await?;
            }
            let opts = sync::Options {
                progress: !quiet && !json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                limit_rate: limit_rate.map(|r| r.as_u64()),
                page,
                retries,
            };
            let report = sync::sync(&client, &replica, &opts).await?;
            replica.close().await;
            output::synced(&report, json);
        }
        Command::Daemon {
            catch_up_interval,
            limit_rate,
            retries,
            max_storage,
        } => {
            let client = ctx.online().await?;
            device::require(&client.base)?;
            let replica = Replica::open(&ctx.home).await?;
            if let Some(StorageBudget(b)) = max_storage {
                replica.set_storage_budget(b).await?;
            }
            let opts = daemon::Options {
                catch_up_interval: catch_up_interval.max(Duration::from_secs(1)),
                sync: sync::Options {
                    progress: false,
                    limit_rate: limit_rate.map(|r| r.as_u64()),
                    page: 2000,
                    retries,
                },
                json,
                fallbacks: discover::split_urls(&ctx.fallbacks),
                mdns: ctx.mdns,
            };
            daemon::run(client, replica, opts).await?;
        }
        Command::Completions { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// `--max-storage`: a size, or `unlimited` (`None`).
#[derive(Debug, Clone, Copy)]
struct StorageBudget(Option<u64>);

fn parse_storage(s: &str) -> Result<StorageBudget, String> {
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(StorageBudget(None));
    }
    s.parse::<bytesize::ByteSize>()
        .map(|b| StorageBudget(Some(b.as_u64())))
        .map_err(|e| format!("{s:?} is not a size like 500MB or 2GiB, nor `unlimited`: {e}"))
}

fn not_in_replica(id: &str) -> CliError {
    CliError::NotFound(format!("document {id} is not in the replica"))
}

async fn flags_online(client: &Client) -> Result<Vec<docfed_shared::wire::DocumentMeta>, CliError> {
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
    serde_json::from_value(v["documents"].clone()).map_err(|e| CliError::Network(e.to_string()))
}

enum Action {
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

/// `flag`, `unflag`, `annotate`: sent to the server when one answers (after the actions still
/// queued, which keeps their order), recorded in the replica if there is one; queued in the
/// replica for the next `sync` when no server answers.
async fn action(ctx: &Ctx, action: Action, id: &str) -> Result<(), CliError> {
    check_id(id)?;
    let body = match &action {
        Action::Annotate { text, author } => {
            serde_json::json!({ "text": text, "author": author })
        }
        _ => serde_json::json!({}),
    };
    let sent = match ctx.online().await {
        Ok(client) => send_action(ctx, &client, &action, id, &body).await,
        Err(e) => Err(e),
    };
    let v = match sent {
        Ok(v) => v,
        Err(CliError::Network(reason)) => {
            let replica = Replica::open(&ctx.home).await?;
            let oid = replica.queue(action.kind(), id, &body.to_string()).await?;
            let why = if ctx.offline {
                "offline".to_owned()
            } else {
                format!("no server answered ({reason})")
            };
            eprintln!(
                "docfed: {why}; queued in {} for the next `docfed sync`",
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
            );
            return Ok(());
        }
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
    output::value(&v, ctx.json, &human);
    Ok(())
}

async fn send_action(
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
                .map_err(|e| revoked_hint(e, &client.base))?;
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
