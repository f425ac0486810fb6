//! Awaiting a started `docfed-node` or `docfed-portal`: it writes `ready.json` (see
//! `docfed_shared::ready`) once it listens. A file left by an earlier process on the same data
//! directory is told apart by its pid; a process that exits first fails the wait at once, with
//! its log.

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use docfed_shared::ready::Ready;

use crate::Error;

/// How long a process may take to listen, including a debug build's start-up under load.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the process `pid` writes `data_dir/ready.json`. `exited` reports whether it has
/// exited (e.g. `|| child.try_wait()`); `log` is included in every error.
pub async fn await_ready<F>(
    data_dir: &Path,
    pid: u32,
    log: &Path,
    mut exited: F,
) -> Result<Ready, Error>
where
    F: FnMut() -> std::io::Result<Option<ExitStatus>>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Some(ready) = Ready::read(data_dir).filter(|r| r.pid == pid) {
            return Ok(ready);
        }
        if let Some(status) = exited()? {
            return Err(format!(
                "{} exited with {status} before it was ready; log:\n{}",
                program_name(log),
                log_text()
            )
            .into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} not ready after {READY_TIMEOUT:?}; log:\n{}",
                program_name(log),
                log_text()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// "node" for `node.log`: the errors name what failed to start.
fn program_name(log: &Path) -> String {
    log.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "the process".into())
}
