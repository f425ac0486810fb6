//! Child processes: spawned in their own process group and SIGTERMed by the kernel should the
//! launcher die; reaped, terminated with a grace period, their logs opened; programs found next to
//! the launcher or on `PATH`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use docfed_shared::topology::NodeSpec;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::{timeout, timeout_at, Instant};

use super::*;

/// A supervised process (node or portal) that exited on its own.
#[derive(Debug)]
pub struct ProcessExit {
    /// `node `ID`` or `portal`.
    pub what: String,
    /// The node's id, when a node exited.
    pub node: Option<String>,
    pub status: ExitStatus,
    pub log: PathBuf,
    /// The last lines of its log.
    pub log_tail: String,
}

impl std::fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited with {}; last lines of {}:\n{}",
            self.what,
            self.status,
            self.log.display(),
            indent(&self.log_tail)
        )
    }
}

/// One node of a running federation.
#[derive(Debug)]
pub struct NodeProcess {
    pub(super) spec: NodeSpec,
    /// Base URL, `https://ADDR` (`http://` without TLS).
    pub(super) url: String,
    pub(super) data_dir: PathBuf,
    pub(super) log: PathBuf,
    pub(super) child: Option<Child>,
    /// When the current process was spawned.
    pub(super) started: Option<Instant>,
}

impl NodeProcess {
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }
    pub fn id(&self) -> &str {
        &self.spec.id
    }
    /// Base URL, `https://ADDR` (`http://` without TLS).
    pub fn url(&self) -> String {
        self.url.clone()
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// Process id while the node runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

#[derive(Debug)]
pub(super) struct PortalProcess {
    pub(super) url: String,
    pub(super) log: PathBuf,
    pub(super) child: Option<Child>,
}

/// Spawns a child in its own process group, SIGTERMed by the kernel if the launcher dies.
pub(super) fn spawn_supervised(cmd: &mut Command) -> std::io::Result<Child> {
    let launcher = nix::unistd::getpid();
    cmd.stdin(Stdio::null()).process_group(0).kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec and only makes two system calls (prctl,
    // getppid) and builds an error without allocating: all async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            // The launcher may have died before prctl took effect; then nobody would stop us.
            if nix::unistd::getppid() != launcher {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Takes the exit status of a child that has exited, leaving `None` in its place.
pub(super) fn reap(child: &mut Option<Child>) -> Option<ExitStatus> {
    let status = child.as_mut()?.try_wait().ok()??;
    *child = None;
    Some(status)
}

pub(super) fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
}

/// Waits for `child` until `deadline`, then SIGKILLs its process group and waits again.
/// Returns the exit status and whether SIGKILL was needed.
pub(super) async fn wait_or_kill(
    child: &mut Child,
    deadline: Instant,
) -> Result<(ExitStatus, bool)> {
    if let Ok(status) = timeout_at(deadline, child.wait()).await {
        return Ok((status?, false));
    }
    if let Some(pid) = child.id() {
        // Every child leads its own process group (see spawn_supervised).
        match killpg(Pid::from_raw(pid as i32), Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => bail!("cannot kill process {pid}: {e}"),
        }
    }
    let status = timeout(Duration::from_secs(10), child.wait())
        .await
        .context("process did not exit after SIGKILL")??;
    Ok((status, true))
}

/// Opens a log for appending (earlier runs stay above a separator line) and returns two handles
/// for stdout and stderr.
pub(super) fn open_log(path: &Path, what: &str) -> Result<(File, File)> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(
        f,
        "=== docfed-topology: starting {what} at {} ===",
        docfed_shared::wire::Timestamp::now()
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    let err = f.try_clone()?;
    Ok((f, err))
}

pub(super) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Finds a program next to the current executable (also one level up from `deps/`, where test
/// binaries live), then on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(up) = dir.parent() {
                dirs.push(up.to_owned());
            }
        }
        dirs.insert(0, dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

pub(super) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub(super) fn exe_dir_display() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.display().to_string()))
        .unwrap_or_else(|| "the current executable".to_owned())
}
