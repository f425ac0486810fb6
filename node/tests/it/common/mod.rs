//! A real `docfed-node` process on an ephemeral port with its own temporary data dir.

pub mod federation;
pub mod relay;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use docfed_test_kit::content::pattern;
pub use docfed_test_kit::wait::{eventually, wait_until};
pub use docfed_test_kit::{md5_hex, TestResult};
use docfed_test_kit::{process::await_ready, procfs};

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub struct TestNode {
    pub dir: PathBuf,
    /// The node's stdout and stderr; beside the data dir, or elsewhere when the data dir is on a
    /// file system a test fills (lines written to a full disk are lost).
    log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: Option<Child>,
    pub url: String,
    pub extra_args: Vec<String>,
    federated: bool,
}

impl TestNode {
    pub async fn start() -> TestResult<Self> {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra_args: &[&str]) -> TestResult<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("data");
        Self::launch(&dir, Some(tmp), None, extra_args, false).await
    }

    /// A node on a data dir the caller owns (e.g. a size-limited mount), with its log outside it.
    pub async fn start_in(dir: &Path, extra_args: &[&str]) -> TestResult<Self> {
        let log_dir = tempfile::tempdir()?;
        let log_path = log_dir.path().join("node.log");
        Self::launch(dir, Some(log_dir), Some(log_path), extra_args, false).await
    }

    /// A member of a federation: its address comes from the topology, not port 0.
    pub async fn start_federated(dir: &Path, args: &[&str]) -> TestResult<Self> {
        Self::launch(dir, None, None, args, true).await
    }

    async fn launch(
        dir: &Path,
        tmp: Option<tempfile::TempDir>,
        log_path: Option<PathBuf>,
        args: &[&str],
        federated: bool,
    ) -> TestResult<Self> {
        let mut node = TestNode {
            dir: dir.to_owned(),
            log_path: log_path.unwrap_or_else(|| dir.join("node.log")),
            _tmp: tmp,
            child: None,
            url: String::new(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            federated,
        };
        node.spawn().await?;
        Ok(node)
    }

    async fn spawn(&mut self) -> TestResult {
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(env!("CARGO_BIN_EXE_docfed-node"))
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--token", TOKEN, "--reserved-space", "0"])
            .args(if self.federated {
                &[][..]
            } else {
                &["--http", "127.0.0.1:0"][..]
            })
            .args(&self.extra_args)
            // Brokers come from the topology file (or tests pass --amqp-url).
            .env_remove("DOCFED_AMQP_URL")
            .env("DOCFED_LOG", "info,tower_http=debug,docfed_node=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        let child = self.child.insert(child);
        let ready = await_ready(&self.dir, pid, &self.log_path, || child.try_wait()).await?;
        self.url = ready.http;
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: no clean shutdown at all.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn start_again(&mut self) -> TestResult {
        self.spawn().await
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(&mut self) -> TestResult {
        let mut child = self.child.take().ok_or("not running")?;
        nix_kill(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    return Err(format!("node exited with {status}; log:\n{}", self.log()).into());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("node did not stop within 30 s of SIGTERM".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn restart(&mut self) -> TestResult {
        self.stop().await?;
        self.spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Peak resident memory of the node process so far, in bytes.
    pub fn peak_rss(&self) -> u64 {
        procfs::peak_rss(self.pid()).unwrap_or(0)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn nix_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// For conditions polled until they hold: a request's JSON body, or `None` on any failure.
pub trait JsonOrNone {
    fn json_or_none(self) -> impl std::future::Future<Output = Option<serde_json::Value>> + Send;
}

impl JsonOrNone for reqwest::RequestBuilder {
    async fn json_or_none(self) -> Option<serde_json::Value> {
        self.send().await.ok()?.json().await.ok()
    }
}

pub fn client() -> reqwest::Client {
    docfed_http::tls::client_builder()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client")
}

pub fn auth(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    rb.bearer_auth(TOKEN)
}

/// The content addresses a node's data directory `dir` holds in its small-object store (the
/// database, `small_objects`), read while the node runs.
pub fn small_objects(dir: &Path) -> Vec<String> {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        dir.join("node.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    let Ok(mut q) = db.prepare("SELECT md5 FROM small_objects ORDER BY md5") else {
        return Vec::new();
    };
    q.query_map([], |r| r.get(0))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
    }
    out
}
