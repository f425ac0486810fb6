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
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Local(_) => 1,
            CliError::NotFound(_) => 3,
            CliError::Network(_) => 4,
            CliError::Verification(_) => 5,
            CliError::Refused(_) | CliError::Unauthorized(_) => 6,
        })
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Local(e.to_string())
    }
}
