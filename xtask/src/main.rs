//! `cargo xtask` — the project's two set-up commands and their prerequisites.
//!
//! * `cargo xtask up`   — build and run the demo federation (`topology/demo.toml`: two
//!   primaries, two intermediates, three regional nodes) and print its URLs and token; Ctrl-C
//!   stops it cleanly.
//! * `cargo xtask test` — install what a fresh Debian/Ubuntu machine lacks, run every test,
//!   then the endurance harness's CI profile (`docfed-endurance run --profile ci`).
//!
//! Anything missing is installed with apt when we are root, or reported with the exact command
//! to run.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  up [FILE] [--run-dir DIR] [...]     run the federation of FILE (default topology/demo.toml)
                                      with docfed-topology up; prints URLs; Ctrl-C stops it
  test [-- CARGO_TEST_ARGS...]        install missing prerequisites, run all tests, then the
                                      endurance CI profile
  deps                                only install missing prerequisites";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("deps") => deps(),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` (a relative one from the current
/// directory, as cargo reads it) or the workspace's `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or_else(|_| PathBuf::from(dir)),
        _ => root().join("target"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs Debian packages that provide missing commands.
fn apt_install(missing: &[(&str, &str)]) -> Result<()> {
    let packages: Vec<&str> = missing
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if packages.is_empty() {
        return Ok(());
    }
    let cmd = format!(
        "apt-get update && apt-get install -y {}",
        packages.join(" ")
    );
    if !is_root() || !have("apt-get") {
        bail!(
            "missing {}; install with:\n  sudo sh -c '{cmd}'",
            packages.join(", ")
        );
    }
    eprintln!("xtask: installing {}", packages.join(", "));
    let ok = Command::new("sh")
        .args(["-c", &cmd])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?
        .success();
    if !ok {
        bail!("`{cmd}` failed");
    }
    Ok(())
}

fn amqp_answers(addr: &str) -> bool {
    TcpStream::connect_timeout(&addr.parse().expect("valid"), Duration::from_millis(500)).is_ok()
}

/// The broker at DOCFED_AMQP_URL's default address must answer; start the system one if it is
/// installed but stopped.
fn ensure_broker() -> Result<()> {
    const ADDR: &str = "127.0.0.1:5672";
    if std::env::var("DOCFED_AMQP_URL").is_ok() || amqp_answers(ADDR) {
        return Ok(());
    }
    eprintln!("xtask: no RabbitMQ at {ADDR}; starting rabbitmq-server -detached");
    let _ = Command::new("rabbitmq-server").arg("-detached").status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !amqp_answers(ADDR) {
        if Instant::now() > deadline {
            bail!("RabbitMQ did not come up at {ADDR}; start it with `rabbitmq-server -detached` or set DOCFED_AMQP_URL");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn deps() -> Result<()> {
    // mount/umount: the full-disk test mounts a small tmpfs. rabbitmq-server: the federation's
    // broker, and private brokers in fault tests. chromium + chromedriver: the portal's browser
    // test. curl: benchmarks compare pulls with it. python3: the example reachback plug-in.
    // syncthing: the peer `docfed-endurance bench --only peers` measures docfed against.
    apt_install(&[
        ("mount", "mount"),
        ("rabbitmq-server", "rabbitmq-server"),
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
        ("curl", "curl"),
        ("python3", "python3"),
        ("syncthing", "syncthing"),
    ])?;
    ensure_broker()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn test(extra: &[String]) -> Result<()> {
    deps()?;
    let extra: Vec<&String> = extra.iter().skip_while(|a| *a == "--").collect();
    let ok = cargo()
        .args(["test", "--workspace", "--all-targets", "--"])
        .args(extra)
        .status()
        .context("running cargo test")?
        .success();
    if !ok {
        bail!("tests failed");
    }
    endurance_ci()
}

/// The endurance harness's CI profile: a federation under faults, then the invariant check.
fn endurance_ci() -> Result<()> {
    let ok = cargo()
        .args(["build", "-p", "docfed-node", "-p", "endurance-tests"])
        .status()
        .context("building the endurance harness")?
        .success();
    if !ok {
        bail!("building the endurance harness failed");
    }
    let target = target_dir();
    let dir = target.join("endurance-ci");
    eprintln!(
        "xtask: endurance run, CI profile (report in {})",
        dir.join("report").display()
    );
    let mut run = Command::new(target.join("debug").join("docfed-endurance"));
    run.current_dir(root())
        .args(["run", "--profile", "ci", "--dir"])
        .arg(&dir);
    // Replays a CI run's seed (every run prints it) through the same command CI runs.
    if let Some(seed) = std::env::var_os("DOCFED_ENDURANCE_SEED") {
        run.arg("--seed").arg(seed);
    }
    let ok = run.status().context("running docfed-endurance")?.success();
    if !ok {
        bail!(
            "the endurance run failed; see its summary above and {}",
            dir.join("report").display()
        );
    }
    Ok(())
}

fn up(args: &[String]) -> Result<()> {
    // rabbitmq-server: the federation's own broker (TLS only, a user per node), started in the
    // run directory; with --insecure, used when no broker answers at DOCFED_AMQP_URL.
    apt_install(&[("rabbitmq-server", "rabbitmq-server")])?;
    let ok = cargo()
        .args([
            "build",
            "--release",
            "-p",
            "docfed-node",
            "-p",
            "topology",
            "-p",
            "publisher-portal",
            "-p",
            "mobile-client",
        ])
        .status()?
        .success();
    if !ok {
        bail!("build failed");
    }
    let bin = target_dir().join("release");
    println!(
        "xtask: programs in {}: docfed (command line), docfed-node, docfed-portal, docfed-topology\n\
         xtask: to use them from another shell: export PATH=\"{}:$PATH\"",
        bin.display(),
        bin.display()
    );
    let mut cmd = Command::new(bin.join("docfed-topology"));
    cmd.current_dir(root()).arg("up").args(args);
    // Ctrl-C reaches docfed-topology too (same process group); it stops every node cleanly.
    let status = cmd.status().context("starting docfed-topology")?;
    if !status.success() && status.code().is_some() {
        bail!("docfed-topology exited with {status}");
    }
    Ok(())
}
