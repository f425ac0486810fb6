//! `docfed-portal`: the authors' web portal (publish, versions, delete/reactivate, annotations, propagation status).
//!
//! Not built yet: this binary exists so the workspace has its final shape. It says so and exits
//! with status 2 instead of pretending to work.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "docfed-portal",
    version,
    about = "docfed: the authors' web portal (publish, versions, delete/reactivate, annotations, propagation status) (not implemented yet)"
)]
struct Args {
    /// Arguments of the future command line.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    rest: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let _ = Args::parse();
    eprintln!("docfed-portal: not implemented yet (tracked in issue 4); see README.md");
    std::process::ExitCode::from(2)
}
