use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use docfed_node::config::{NodeConfig, Settings};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Settings::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("DOCFED_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log on a full disk must not take the node down: by default a failed write is
        // reported with `eprintln!`, which panics when stderr is on the same full disk.
        .log_internal_errors(false)
        .init();
    let config = match NodeConfig::load(args) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("docfed-node: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("docfed-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Arc<NodeConfig>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http))?;
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));
    docfed_node::run(config, listener, cancel).await
}

async fn stop_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
    cancel.cancel();
}
