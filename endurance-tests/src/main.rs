//! `docfed-endurance`: measurements of whole federations (`bench`) and fault-injecting
//! endurance runs with an invariant checker (`run`).

mod bench;
mod device;
mod fedgen;
mod run;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "docfed-endurance",
    version,
    about = "Benchmarks and endurance runs of a docfed federation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmarks against real federations on this machine and print their figures.
    Bench {
        /// Only this scenario: large, secure, deep, fanout, directory, memory, broker, device or
        /// peers (docfed against Syncthing).
        #[arg(long)]
        only: Option<String>,
        /// Smaller sizes and counts (minutes instead of tens of minutes).
        #[arg(long)]
        quick: bool,
        /// Working directory for the federations' data.
        #[arg(long, default_value = "run/bench")]
        dir: PathBuf,
    },
    /// Run a federation under a workload while injecting faults (node and broker kill -9,
    /// network cuts, bandwidth limits, corruption in flight, a full disk), then check that
    /// nothing was lost. Exit status 0 when every invariant held, 1 otherwise.
    Run(run::RunArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Bench { only, quick, dir } => {
            match bench::run(bench::Options { only, quick, dir }).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("docfed-endurance: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => match run::run(args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("docfed-endurance run: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}
