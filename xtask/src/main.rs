//! `cargo xtask` — the project's two set-up commands and their prerequisites.
//!
//! * `cargo xtask up`   — build and run docfed locally (today: one standalone node) and print
//!   its URL and token; Ctrl-C stops it cleanly.
//! * `cargo xtask test` — install what a fresh Debian/Ubuntu machine lacks, then run every test.
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
  up [--data-dir DIR] [--http ADDR]   run docfed locally and print its URL (Ctrl-C stops it)
  test [-- CARGO_TEST_ARGS...]        install missing prerequisites, then run all tests
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
    // broker, and private brokers in fault tests.
    apt_install(&[("mount", "mount"), ("rabbitmq-server", "rabbitmq-server")])?;
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
    Ok(())
}

fn up(args: &[String]) -> Result<()> {
    let mut data_dir = root().join("run/standalone");
    let mut http = "127.0.0.1:7100".to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data-dir" => data_dir = it.next().context("--data-dir needs a value")?.into(),
            "--http" => http = it.next().context("--http needs a value")?.clone(),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let ok = cargo()
        .args(["build", "--release", "-p", "docfed-node"])
        .status()?
        .success();
    if !ok {
        bail!("build failed");
    }
    std::fs::create_dir_all(&data_dir)?;
    let ready = data_dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(root().join("target/release/docfed-node"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--http", &http])
        .spawn()
        .context("starting docfed-node")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            if let Some(url) = text
                .split("\"http\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
            {
                break url.to_owned();
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("docfed-node exited with {status}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("docfed-node did not become ready within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let token = std::fs::read_to_string(data_dir.join("token")).unwrap_or_default();
    println!();
    println!("docfed standalone node running");
    println!("  URL:      {url}");
    println!("  data dir: {}", data_dir.display());
    println!("  token:    {}", token.trim());
    println!();
    println!("  publish:  curl -H 'Authorization: Bearer {}' --data-binary @FILE '{url}/v1/documents?title=TITLE&filename=FILE'", token.trim());
    println!("  search:   curl '{url}/v1/documents?q=WORDS'");
    println!();
    println!("Ctrl-C stops it.");
    // Ctrl-C reaches the node too (same process group); wait for its clean exit.
    let status = child.wait()?;
    if !status.success() && status.code().is_some() {
        bail!("docfed-node exited with {status}");
    }
    Ok(())
}
