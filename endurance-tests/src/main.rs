//! `docfed-endurance`: measurements of whole federations (`bench`), and — still to come —
//! fault-injecting endurance runs (`run`).

mod bench;
mod fedgen;

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
        /// Only this scenario: large, fanout, memory or broker.
        #[arg(long)]
        only: Option<String>,
        /// Smaller sizes and counts (minutes instead of tens of minutes).
        #[arg(long)]
        quick: bool,
        /// Working directory for the federations' data.
        #[arg(long, default_value = "run/bench")]
        dir: PathBuf,
    },
    /// Fault-injecting endurance run (not implemented yet: issue 6).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
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
        Command::Run { .. } => {
            eprintln!("docfed-endurance run: not implemented yet (tracked in issue 6)");
            ExitCode::from(2)
        }
    }
}
