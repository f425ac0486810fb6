//! `docfed-topology`: reads topology files; `up` starts a whole federation locally.
//!
//! Not built yet: this binary exists so the workspace has its final shape. It says so and exits
//! with status 2 instead of pretending to work.

use clap::Parser;

#[derive(Parser)]
#[command(name = "docfed-topology", version, about = "docfed: reads topology files; `up` starts a whole federation locally (not implemented yet)")]
struct Args {
    /// Arguments of the future command line.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let _ = Args::parse();
    eprintln!("docfed-topology: not implemented yet (tracked in issue 3); see README.md");
    std::process::ExitCode::from(2)
}
