//! `docfed`: the mobile client and command line (search, fetch, flag, annotate, sync, daemon).
//!
//! Not built yet: this binary exists so the workspace has its final shape. It says so and exits
//! with status 2 instead of pretending to work.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "docfed",
    version,
    about = "docfed: the mobile client and command line (search, fetch, flag, annotate, sync, daemon) (not implemented yet)"
)]
struct Args {
    /// Arguments of the future command line.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let _ = Args::parse();
    eprintln!("docfed: not implemented yet (tracked in issue 5); see README.md");
    std::process::ExitCode::from(2)
}
