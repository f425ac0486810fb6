//! Real nodes for the command line to talk to: a federation started by `topology::launch` on the
//! broker at DOCFED_AMQP_URL (node ids unique per test), or a single standalone node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use docfed_shared::ready::Ready;
use docfed_test_kit::process::await_ready;
use topology::launch::{find_program, BrokerChoice, Federation, UpOptions};

pub use docfed_test_kit::content::pattern;
pub use docfed_test_kit::{amqp_url, TestResult};

pub struct Fed {
    pub fed: Federation,
    pub prefix: String,
    _tmp: tempfile::TempDir,
}

impl Drop for Fed {
    fn drop(&mut self) {
        self.fed.discard();
    }
}

impl Fed {
    /// The demo shape with ids `<prefix>-<role>`.
    pub async fn start() -> TestResult<Self> {
        let tmp = tempfile::tempdir()?;
        let prefix = format!("c{:08x}", unique_u32());
        let t = topology::demo::toml(&prefix, &topology::demo::free_ports()?, None, |_| None);
        let file = tmp.path().join("topology.toml");
        std::fs::write(&file, t)?;
        let mut opts = UpOptions::new(&file, tmp.path().join("run"));
        // Plain HTTP: this harness's clients do not load the federation CA (TLS: topology tests `tls`).
        opts.insecure = true;
        opts.broker = BrokerChoice::External(amqp_url());
        opts.start_portal = false;
        opts.verbose = false;
        let fed = Federation::up(opts).await.map_err(|e| format!("{e:#}"))?;
        Ok(Fed {
            fed,
            prefix,
            _tmp: tmp,
        })
    }

    pub fn url(&self, role: &str) -> String {
        self.fed
            .node(&topology::demo::node_id(&self.prefix, role))
            .expect("node")
            .url()
    }

    pub fn token(&self) -> String {
        self.fed.token().to_owned()
    }
}

/// A standalone node on a data dir that survives restarts.
pub struct Standalone {
    pub dir: PathBuf,
    child: Option<Child>,
    pub url: String,
    extra: Vec<String>,
}

pub const TOKEN: &str = "cli-test-token-0123456789";

impl Standalone {
    pub async fn start(dir: &Path) -> TestResult<Self> {
        Self::start_with(dir, &[]).await
    }

    /// With more flags for `docfed-node`.
    pub async fn start_with(dir: &Path, extra: &[&str]) -> TestResult<Self> {
        let mut s = Standalone {
            dir: dir.to_owned(),
            child: None,
            url: String::new(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> TestResult {
        let bin = find_program("docfed-node").ok_or("docfed-node is not built: run `cargo test --workspace` (or `cargo build -p docfed-node`)")?;
        std::fs::create_dir_all(&self.dir)?;
        Ready::remove(&self.dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))?;
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(&self.dir)
            .args([
                "--http",
                "127.0.0.1:0",
                "--token",
                TOKEN,
                "--reserved-space",
                "0",
            ])
            .args(&self.extra)
            .env_remove("DOCFED_AMQP_URL")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        let child = self.child.insert(child);
        let log = self.dir.join("node.log");
        self.url = await_ready(&self.dir, pid, &log, || child.try_wait())
            .await?
            .http;
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) -> TestResult {
        self.kill();
        self.spawn().await
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn publish(url: &str, token: &str, query: &str, body: Vec<u8>) -> TestResult<String> {
    let resp = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client")
        .post(format!("{url}/v1/documents?{query}"))
        .bearer_auth(token)
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status(), 201, "{}", resp.text().await?);
    Ok(resp.json::<serde_json::Value>().await?["id"]
        .as_str()
        .unwrap()
        .to_owned())
}

/// The configuration directory of commands that register nothing: never the user's (where
/// `docfed register` would keep device secrets), and not created unless something registers.
fn shared_config() -> PathBuf {
    std::env::temp_dir().join(format!("docfed-cli-tests-{}", std::process::id()))
}

/// Runs `docfed` with `args` (no mDNS wait when --server is given).
pub fn docfed(args: &[&str]) -> Output {
    let config = shared_config();
    docfed_at(&config, &config.join("data").join("docfed"), args)
}

/// Runs `docfed` with `args` and `config` as its configuration directory (XDG_CONFIG_HOME),
/// where registrations are kept: one per test that registers, so tests do not share devices.
pub fn docfed_with_config(config: &Path, args: &[&str]) -> Output {
    docfed_at(config, &config.join("data"), args)
}

/// `docfed` with its own configuration directory and its own replica home (DOCFED_HOME).
fn command(config: &Path, home: &Path, args: &[&str]) -> Command {
    wrapped_command(&[], config, home, args)
}

/// The same, run by `wrapper` (a program and its arguments, e.g. `ip netns exec NS`), which
/// is given the `docfed` binary and `args` and keeps the environment.
fn wrapped_command(wrapper: &[&str], config: &Path, home: &Path, args: &[&str]) -> Command {
    let bin = env!("CARGO_BIN_EXE_docfed");
    let mut c = match wrapper {
        [] => Command::new(bin),
        [program, rest @ ..] => {
            let mut c = Command::new(program);
            c.args(rest).arg(bin);
            c
        }
    };
    c.args(args)
        .env_remove("DOCFED_SERVER")
        .env_remove("DOCFED_TOKEN")
        .env("XDG_CONFIG_HOME", config)
        // Never the user's replica (~/.local/share/docfed).
        .env("XDG_DATA_HOME", config.join("data"))
        .env("DOCFED_HOME", home)
        // Other tests' federations advertise on the same network: only the nodes named.
        .env("DOCFED_NO_MDNS", "true")
        .stdin(Stdio::null());
    c
}

/// Runs `docfed` with `args` and more environment variables (e.g. DOCFED_TOKEN).
pub fn docfed_with_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    let config = shared_config();
    command(&config, &config.join("data").join("docfed"), args)
        .envs(env.iter().copied())
        .output()
        .expect("run docfed")
}

/// Runs `docfed` with `args`, `config` as XDG_CONFIG_HOME and `home` as its replica.
pub fn docfed_at(config: &Path, home: &Path, args: &[&str]) -> Output {
    command(config, home, args).output().expect("run docfed")
}

/// Starts `docfed` with `config` and `home` (see [`docfed_at`]), output piped.
pub fn docfed_at_child(config: &Path, home: &Path, args: &[&str]) -> Child {
    command(config, home, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docfed")
}

/// Starts `docfed` as [`docfed_at_child`] does, run by `wrapper` (e.g. `ip netns exec NS`).
pub fn docfed_at_child_via(wrapper: &[&str], config: &Path, home: &Path, args: &[&str]) -> Child {
    wrapped_command(wrapper, config, home, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docfed")
}

pub fn docfed_child(args: &[&str]) -> Child {
    let config = shared_config();
    docfed_at_child(&config, &config.join("data").join("docfed"), args)
}

pub use docfed_test_kit::unique_u32;

pub fn stdout_json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The JSON a `docfed --json` run printed; the run must have succeeded.
pub fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "docfed failed ({:?}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    stdout_json(out)
}

/// Sends `req`, which must succeed; its JSON answer.
pub async fn send(req: reqwest::RequestBuilder) -> TestResult<serde_json::Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        return Err(format!("{status}: {text}").into());
    }
    Ok(serde_json::from_str(&text)?)
}

/// Polls `url` until `pred` holds for its JSON answer, at most `limit`.
pub async fn await_json(
    url: &str,
    what: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> TestResult<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(r) = docfed_http::tls::get(url).await {
            if r.status().is_success() {
                let v: serde_json::Value = r.json().await?;
                if pred(&v) {
                    return Ok(v);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what} at {url}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
