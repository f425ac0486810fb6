//! `docfed-portal`: parses the command line, sets up logging and runs the portal or one of its
//! administration commands.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use docfed_portal::config::{Args, Command, Config};
use docfed_portal::db::{Db, DbError};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("DOCFED_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A log on a full disk must not take the portal down (see docfed-node's main).
        .log_internal_errors(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("docfed-portal: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command {
        Some(Command::AddAuthor { name, reset }) => {
            runtime.block_on(add_author(&args.data_dir, &name, reset))
        }
        None => match Config::from_args(args.data_dir, args.serve) {
            Ok(config) => runtime.block_on(serve(Arc::new(config))),
            Err(e) => {
                eprintln!("docfed-portal: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("docfed-portal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Arc<Config>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot listen on {}", config.http))?;
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));
    docfed_portal::run(config, listener, cancel).await
}

async fn stop_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot handle SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
    cancel.cancel();
}

/// `docfed-portal add-author NAME [--reset]`.
async fn add_author(data_dir: &Path, name: &str, reset: bool) -> anyhow::Result<()> {
    if !docfed_portal::auth::valid_author_name(name) {
        bail!("invalid author name {name:?}: use 1-64 letters, digits, `.`, `_` or `-`");
    }
    let password = read_password(name)?;
    let hash = docfed_portal::auth::hash_password(&password)?;
    let db = Db::open(data_dir).await?;
    let outcome = if reset {
        db.set_password(name, &hash).await
    } else {
        db.add_author(name, &hash).await.map(|_| ())
    };
    db.close().await;
    match outcome {
        Ok(()) if reset => eprintln!("password of author {name} replaced; their sessions ended"),
        Ok(()) => eprintln!(
            "author {name} created in {}",
            data_dir.join(docfed_portal::db::DB_FILE).display()
        ),
        Err(DbError::DuplicateAuthor(n)) => {
            bail!("an author named {n:?} exists already (use --reset to replace the password)")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// One line from standard input when it is not a terminal (scripts, tests); otherwise a prompt
/// without echo, twice.
fn read_password(name: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let p = line.trim_end_matches(['\n', '\r']).to_owned();
        if p.is_empty() {
            bail!("no password on standard input (one line expected)");
        }
        return Ok(p);
    }
    let first = rpassword::prompt_password(format!("Password for {name}: "))
        .context("cannot read the password")?;
    let second =
        rpassword::prompt_password("Same password again: ").context("cannot read the password")?;
    if first != second {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}
