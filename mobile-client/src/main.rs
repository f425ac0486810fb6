//! `docfed`: search, fetch, flag and annotate documents of a docfed federation from the command
//! line, against a regional node (given, or discovered over mDNS).
//!
//! This file is the command line's definition (clap) and `run`, which hands each command to its
//! function in `commands/`; the modules beside it do the work.

mod client;
mod commands;
mod daemon;
mod device;
mod discover;
mod error;
mod fetch;
mod output;
mod replica;
mod sync;
mod transport;
mod trust;
mod walk;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::commands::{actions::Action, Ctx};
use crate::error::CliError;

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
    /// The federation's topology file with its keys (`docfed-topology up` writes
    /// RUN_DIR/topology.toml): every version a server sends must carry the signature of one
    /// of its primaries, else it is refused and recorded nowhere. `register` pins them like
    /// the CA.
    #[arg(long, global = true, env = "DOCFED_PRIMARY_KEYS", value_name = "FILE")]
    primary_keys: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

const fn const_format_help() -> &'static str {
    "Examples:
  docfed --server https://127.0.0.1:7121 search 'annual report'
  docfed search tides --region eu --tag maritime --limit 5
  docfed info 01890a5d-ac96-774b-bcce-b302099a8057
  docfed fetch 01890a5d-ac96-774b-bcce-b302099a8057 -o report.pdf
  docfed --server https://127.0.0.1:7121 --ca ca.pem --primary-keys topology.toml register --name 'my laptop' --token \"$OPERATOR_TOKEN\"
  docfed --server https://primary.example:7121 publish --token \"$OPERATOR_TOKEN\" --tags launch ./materials
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
  5  verification failure: the downloaded bytes do not match the document's MD5, or a
     version is not signed by a primary of the pinned federation
  6  refused by the server (invalid request, deleted document, device not registered
     with that node or revoked, over the node's flag quota, a file `publish` sent)

`publish` exits with the worst of its files: 4 if a request failed, else 6 if the node refused
a file, else 1 if a file could not be read.

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
    Search(SearchArgs),
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
    Fetch(FetchArgs),
    /// Register this device with the node (once per node), so it may flag documents there.
    Register {
        /// A name for the node's operator to tell devices apart, e.g. "Ana's phone".
        #[arg(long)]
        name: Option<String>,
        /// The node's operator token, needed unless the node has open enrollment. Sent only
        /// to a node named with --server (or DOCFED_SERVER), never to one found over mDNS or
        /// among the fallbacks.
        #[arg(long, env = "DOCFED_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Publish files and folders (folders recursively) on a primary, through its bulk API,
    /// with the node's operator token: one line per file, published or why not, and a summary.
    /// Exits 0 only if every file was published.
    Publish(PublishArgs),
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
    Sync(SyncArgs),
    /// Stay running and keep the replica caught up (as `sync` does) whenever the node says
    /// something changed (`GET /v1/events`), at start, every --catch-up-interval and when a
    /// network interface comes up; one line per catch-up on stdout. Stops on SIGINT/SIGTERM.
    /// Needs `register` first. A systemd user unit: mobile-client/docfed.service.
    Daemon(DaemonArgs),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Args)]
struct SearchArgs {
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
}

#[derive(Args)]
struct FetchArgs {
    #[arg(value_parser = doc_id)]
    id: String,
    /// An earlier version (see `versions`) instead of the current one.
    #[arg(long, value_name = "N")]
    version: Option<i64>,
    /// Output file (default: the document's file name in the current directory, which is
    /// never overwritten without --force).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Overwrite an existing file of the document's name (without -o).
    #[arg(long)]
    force: bool,
    /// Retries (with resume) after a network failure.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct PublishArgs {
    /// Files and folders. Folders are published recursively; symbolic links inside them are
    /// not followed (each is reported as not published), nor is anything skipped silently.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The node's operator token. Sent only to a node named with --server (or
    /// DOCFED_SERVER).
    #[arg(long, env = "DOCFED_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Scope of every document: `global` (the default) or `region:R`, e.g. `region:eu`.
    #[arg(long)]
    scope: Option<String>,
    /// Comma-separated tags of every document.
    #[arg(long)]
    tags: Option<String>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct SyncArgs {
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
}

#[derive(Args)]
struct DaemonArgs {
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`docfed info ID | head`): it wanted no more, as
        // for `rg`, which is no failure.
        Err(CliError::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("docfed: {e}");
            e.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    use crate::commands::{actions, publish, read, register, replica};
    if let Command::Completions { shell } = cli.command {
        return commands::completions(shell);
    }
    let registering = matches!(cli.command, Command::Register { .. });
    let ctx = Ctx::new(&cli, registering)?;
    match cli.command {
        Command::Search(a) => read::search(&ctx, a).await,
        Command::Info { id } => read::info(&ctx, &id).await,
        Command::Versions { id } => read::versions(&ctx, &id).await,
        Command::Fetch(a) => read::fetch(&ctx, a).await,
        Command::Register { name, token } => register::run(&ctx, name, token).await,
        Command::Publish(a) => publish::run(&ctx, a).await,
        Command::Flag { id } => actions::run(&ctx, Action::Flag, &id).await,
        Command::Unflag { id } => actions::run(&ctx, Action::Unflag, &id).await,
        Command::Annotate { id, text, author } => {
            actions::run(&ctx, Action::Annotate { text, author }, &id).await
        }
        Command::Flags => read::flags(&ctx).await,
        Command::Annotations { id } => read::annotations(&ctx, &id).await,
        Command::Peers => read::peers(&ctx).await,
        Command::Sync(a) => replica::sync(&ctx, a).await,
        Command::Daemon(a) => replica::daemon(&ctx, a).await,
        Command::Completions { .. } => unreachable!("handled above"),
    }
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
