//! Errors of the command line and the exit code each maps to (documented in `--help`).

use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Verification(String),
    #[error("{0}")]
    Refused(String),
    /// The node wants a credential it did not get (401): refused, like `Refused`.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Local(String),
    /// A request the command line refuses to make as asked (exit 2, as clap's usage errors).
    #[error("{0}")]
    Usage(String),
    /// Whoever read our standard output stopped reading (`docfed info ID | head`): the command
    /// ends quietly, as `rg` does.
    #[error("standard output closed")]
    StdoutClosed,
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Local(_) => 1,
            CliError::Usage(_) => 2,
            CliError::StdoutClosed => 0,
            CliError::NotFound(_) => 3,
            CliError::Network(_) => 4,
            CliError::Verification(_) => 5,
            CliError::Refused(_) | CliError::Unauthorized(_) => 6,
        })
    }
}

impl CliError {
    /// A failed write to standard output: a reader that went away ends the command quietly
    /// (`StdoutClosed`); anything else (a full disk under `> file`) is a local error.
    pub fn stdout(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::StdoutClosed
        } else {
            CliError::Local(format!("standard output: {e}"))
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Local(e.to_string())
    }
}
