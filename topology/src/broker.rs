//! Brokers for local federations and tests: probing whether an AMQP broker answers at a URL, and
//! running a private `rabbitmq-server` instance with its own port and data directory.
//!
//! A private instance is what a test needs when it must kill or restart "the" broker without
//! disturbing anything else on the machine. It follows the recipe of INFRA.md: run the real
//! server script (the `/usr/sbin` wrappers switch user and `HOME`, which breaks the Erlang cookie),
//! in its own process group so that `kill -9` of the group takes the whole Erlang VM down at once,
//! with every path (mnesia, logs, cookie `HOME`, pid file) under one directory.
//!
//! Readiness is "the AMQP port answers the protocol header with a Connection.Start frame", polled
//! every 50 ms: an open TCP port alone is not enough, because the listener is up a moment before
//! the broker accepts connections.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};

use crate::certs::CertDir;
use docfed_shared::topology::Topology;

/// Directory of the RabbitMQ server scripts on Debian; `DOCFED_RABBITMQ_DIR` overrides it.
pub const DEFAULT_RABBITMQ_DIR: &str = "/usr/lib/rabbitmq/bin";

/// RabbitMQ needs 6-10 s to start on these machines (INFRA.md); the deadline leaves room for a
/// machine busy compiling.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How often readiness is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The Erlang distribution port is the AMQP port plus this offset (INFRA.md), so both must fit
/// in a `u16`.
const DIST_PORT_OFFSET: u16 = 20000;

/// AMQP 0-9-1 protocol header a client sends first.
const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\0\0\x09\x01";

/// Host and port of an `amqp://` or `amqps://` URL (default ports 5672 and 5671), or `None` if
/// the URL is not one.
pub fn amqp_host_port(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("amqp://") {
        (r, 5672)
    } else if let Some(r) = url.strip_prefix("amqps://") {
        (r, 5671)
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    // IPv6 literals are bracketed: `[::1]:5672`.
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let host = if host.is_empty() { "localhost" } else { host };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p.parse().ok()?,
    };
    Some((host.to_owned(), port))
}

pub use docfed_shared::secrets::redact_url;

/// Whether an AMQP 0-9-1 broker answers at `url`: connects, sends the protocol header and
/// expects a Connection.Start method frame back. For `amqps://` URLs a TCP connection is all that
/// can be checked without a TLS stack.
pub async fn amqp_answers(url: &str, within: Duration) -> bool {
    let Some((host, port)) = amqp_host_port(url) else {
        return false;
    };
    let probe = async {
        let mut stream = TcpStream::connect((host.as_str(), port)).await.ok()?;
        if url.starts_with("amqps://") {
            return Some(true);
        }
        starts_connection(&mut stream).await
    };
    matches!(timeout(within, probe).await, Ok(Some(true)))
}

/// Sends the protocol header on `stream` and reads whether a Connection.Start comes back.
async fn starts_connection<S>(stream: &mut S) -> Option<bool>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(PROTOCOL_HEADER).await.ok()?;
    // Frame header (type 1 = method, channel 0, size) then class 10 / method 10.
    let mut frame = [0u8; 11];
    stream.read_exact(&mut frame).await.ok()?;
    Some(frame[0] == 1 && frame[1..3] == [0, 0] && frame[7..11] == [0, 10, 0, 10])
}

/// Whether the TLS listener on `127.0.0.1:port` completes a handshake with `tls` and answers
/// the protocol header with Connection.Start.
async fn amqps_answers(port: u16, tls: Arc<rustls::ClientConfig>, within: Duration) -> bool {
    let probe = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
        let mut stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .ok()?;
        starts_connection(&mut stream).await
    };
    matches!(timeout(within, probe).await, Ok(Some(true)))
}

/// A port for a private broker on 127.0.0.1 whose distribution port (`port + 20000`) is free as
/// well, random so concurrent tests rarely pick the same one; the check is inherently racy,
/// which is why [`PrivateBroker::start`] checks again and fails clearly.
///
/// Both ports lie below the kernel's ephemeral range when it allows (10000-12767 for the usual
/// 32768-60999): while a killed broker is down, clients reconnecting to its port can be handed
/// that very port as their own ephemeral port, and a TCP self-connection then holds it so the
/// broker cannot restart.
pub fn free_broker_port() -> Result<u16> {
    use rand::Rng;
    let (lo, hi) = broker_port_range();
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port: u16 = rng.random_range(lo..=hi);
        if port_is_free(port) && port_is_free(port + DIST_PORT_OFFSET) {
            return Ok(port);
        }
    }
    bail!("no free port pair (P, P+{DIST_PORT_OFFSET}) found for a private broker in {lo}-{hi}")
}

/// Ports to pick brokers from: below the ephemeral range if there is room, else 20000-45000.
fn broker_port_range() -> (u16, u16) {
    match ephemeral_low() {
        Some(low) if low > DIST_PORT_OFFSET + 10_500 => (10_000, low - DIST_PORT_OFFSET - 1),
        _ => (20_000, 45_000),
    }
}

/// Ports to pick the HTTP ports of generated federations from: below the ephemeral range (an
/// outgoing connection can be handed an ephemeral port between the pick and the node's bind;
/// with dozens of connections per second that happens), clear of the brokers' ports and of
/// their distribution ports. Without room below the ephemeral range: 10000-19999.
pub fn node_port_range() -> (u16, u16) {
    match ephemeral_low() {
        Some(low) if low > DIST_PORT_OFFSET + 10_500 => {
            (low - DIST_PORT_OFFSET, DIST_PORT_OFFSET + 10_000 - 1)
        }
        _ => (10_000, 19_999),
    }
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
}

/// Whether `port` can be bound on loopback and on every interface right now.
pub fn port_is_free(port: u16) -> bool {
    // The distribution port listens on all interfaces, so check the wildcard address too.
    TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// Where the RabbitMQ scripts live.
fn rabbitmq_dir() -> PathBuf {
    std::env::var_os("DOCFED_RABBITMQ_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RABBITMQ_DIR))
}

/// The last `n` lines of a log file (lossy UTF-8), or a note saying why there are none. Reads at
/// most the last 64 KiB so a huge log costs nothing.
pub fn log_tail(path: &Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(n)..].join("\n");
            if tail.trim().is_empty() {
                format!("({} is empty)", path.display())
            } else {
                tail
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A `rabbitmq-server` instance of our own: its own node name, AMQP port (distribution port =
/// port + 20000) and data directory `RUN_DIR/rmq-NAME`. Data survive [`kill`](Self::kill) and
/// [`stop`](Self::stop), so a [`restart`](Self::restart) finds its durable queues again.
///
/// Dropping it while running kills the process group with SIGKILL, so a failing test never
/// leaves a broker behind; call [`stop`](Self::stop) for a clean shutdown.
#[derive(Debug)]
pub struct PrivateBroker {
    name: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    secure: Option<Secure>,
}

/// A broker set up for one federation ([`PrivateBroker::start_secure`]).
#[derive(Debug)]
struct Secure {
    topology: Topology,
    /// Nodes whose broker user was deleted; kept out of the definitions a restart re-imports.
    revoked: BTreeSet<String>,
    /// TLS for the readiness probe: the administrator's certificate, the CA.
    probe: Arc<rustls::ClientConfig>,
}

impl PrivateBroker {
    /// Starts an instance named `name` (letters, digits, `-`, `_`) listening on
    /// `127.0.0.1:port`, with its files in `run_dir/rmq-NAME`, and waits until it answers AMQP.
    pub async fn start(run_dir: &Path, name: &str, port: u16) -> Result<PrivateBroker> {
        let mut broker = Self::prepare(run_dir, name, port, None)?;
        broker.write_files(&[
            ("enabled_plugins", "[].\n".to_owned()),
            // `guest` may only log in from loopback by default; tests in other network
            // namespaces need it too.
            ("rabbitmq.conf", "loopback_users = none\n".to_owned()),
        ])?;
        broker.spawn_and_wait().await?;
        Ok(broker)
    }

    /// Checks the name and port and makes the instance's directories; nothing runs yet.
    fn prepare(
        run_dir: &Path,
        name: &str,
        port: u16,
        secure: Option<Secure>,
    ) -> Result<PrivateBroker> {
        Self::validate(name, port)?;
        let dir = std::path::absolute(run_dir.join(format!("rmq-{name}")))
            .with_context(|| format!("cannot resolve {}", run_dir.display()))?;
        for sub in ["mnesia", "log", "home"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(PrivateBroker {
            name: name.to_owned(),
            port,
            dir,
            child: None,
            secure,
        })
    }

    /// Writes `(file, text)` pairs into the instance's directory.
    fn write_files(&self, files: &[(&str, String)]) -> Result<()> {
        for (file, text) in files {
            let path = self.dir.join(file);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    fn validate(name: &str, port: u16) -> Result<()> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("invalid broker name {name:?}: use letters, digits, `-` and `_`");
        }
        if port == 0 || port > u16::MAX - DIST_PORT_OFFSET {
            bail!(
                "broker port {port} out of range: it must be 1-{} so that the distribution port \
                 (port + {DIST_PORT_OFFSET}) is valid",
                u16::MAX - DIST_PORT_OFFSET
            );
        }
        Ok(())
    }

    /// Like [`start`](Self::start), set up for `topology`'s federation the way an operator's
    /// broker should be (README "Broker"): AMQP over TLS only (no plain listener), every client
    /// authenticated by a certificate of `certs`' CA and logged in as its common name (EXTERNAL),
    /// no password accounts (no `guest`), a user per node with the permissions of
    /// [`crate::broker_policy`], and every node's queues declared.
    pub async fn start_secure(
        run_dir: &Path,
        name: &str,
        port: u16,
        certs: &CertDir,
        topology: &Topology,
    ) -> Result<PrivateBroker> {
        let probe = {
            let trust = docfed_http::tls::Trust::load(&certs.ca(), Some(&certs.crl()))?;
            let (cert, key) = certs.admin();
            let mut config =
                trust.client_config_for(Some((&cert, &key)), docfed_http::tls::Expect::Broker)?;
            config.alpn_protocols.clear();
            Arc::new(config)
        };
        let secure = Secure {
            topology: topology.clone(),
            revoked: BTreeSet::new(),
            probe,
        };
        let mut broker = Self::prepare(run_dir, name, port, Some(secure))?;
        let (cert, key) = certs.broker();
        let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p).display().to_string();
        // A random default password that nobody learns: RabbitMQ creates the default user on a
        // fresh database, and the definitions then take its password away.
        let unknown = crate::launch::generate_token();
        let conf = format!(
            "listeners.tcp = none\n\
             listeners.ssl.default = 127.0.0.1:{port}\n\
             ssl_options.cacertfile = {ca}\n\
             ssl_options.certfile = {cert}\n\
             ssl_options.keyfile = {key}\n\
             ssl_options.verify = verify_peer\n\
             ssl_options.fail_if_no_peer_cert = true\n\
             auth_mechanisms.1 = EXTERNAL\n\
             ssl_cert_login_from = common_name\n\
             load_definitions = {defs}\n\
             default_user = {admin}\n\
             default_pass = {unknown}\n\
             loopback_users = none\n",
            ca = abs(certs.ca()),
            cert = abs(cert),
            key = abs(key),
            defs = broker.dir.join("definitions.json").display(),
            admin = crate::certs::BROKER_ADMIN,
        );
        broker.write_files(&[
            (
                "enabled_plugins",
                "[rabbitmq_auth_mechanism_ssl].\n".to_owned(),
            ),
            ("rabbitmq.conf", conf),
        ])?;
        broker.write_definitions()?;
        broker.spawn_and_wait().await?;
        Ok(broker)
    }

    fn write_definitions(&self) -> Result<()> {
        let Some(secure) = &self.secure else {
            return Ok(());
        };
        let defs = crate::broker_policy::definitions(&secure.topology, &secure.revoked)?;
        let path = self.dir.join("definitions.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&defs)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Locks node `id` out of this broker ([`start_secure`](Self::start_secure) only): deletes
    /// its user, closes its connections, and keeps it out of the definitions a restart loads.
    /// Its certificate is refused from then on, whatever the CRL says.
    pub async fn revoke(&mut self, id: &str) -> Result<()> {
        let Some(secure) = &mut self.secure else {
            bail!("broker {} has no per-node users to revoke", self.name);
        };
        secure.revoked.insert(id.to_owned());
        self.write_definitions()?;
        self.ctl(&["delete_user", id]).await?;
        // Deleting a user leaves its open connections; close them.
        self.ctl(&["close_all_user_connections", id, "certificate revoked"])
            .await
            .map(drop)
    }

    /// Runs `rabbitmqctl ARGS` against this broker.
    pub async fn ctl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(rabbitmq_dir().join("rabbitmqctl"))
            .env("HOME", self.dir.join("home"))
            .env("RABBITMQ_CONF_ENV_FILE", "/dev/null")
            .arg("-n")
            .arg(self.node_name())
            .args(args)
            .kill_on_drop(true)
            .output();
        let out = timeout(Duration::from_secs(60), out)
            .await
            .context("rabbitmqctl did not finish within 60 s")??;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// AMQP URL of this broker: the guest account on the default vhost, or for a
    /// [`start_secure`](Self::start_secure) broker `amqps://` with the EXTERNAL mechanism (the
    /// client's certificate says who it is).
    pub fn url(&self) -> String {
        if self.secure.is_some() {
            return format!(
                "amqps://localhost:{}/%2f?auth_mechanism=external",
                self.port
            );
        }
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// AMQP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Erlang node name, `NAME@localhost`.
    pub fn node_name(&self) -> String {
        format!("{}@localhost", self.name)
    }

    /// Directory holding the instance's data, logs and cookie.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the server process is still running (it may have crashed or been killed by
    /// someone else).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// If the server process has exited since the last call, its exit status.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// The last `n` lines of the server's console output.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.dir.join("stdout.log"), n)
    }

    /// Stops the broker cleanly (`rabbitmqctl stop`, ≈ 3 s) and waits for the process to exit;
    /// falls back to SIGKILL if that fails. Does nothing if it is not running.
    pub async fn stop(&mut self) -> Result<()> {
        if !self.is_running() {
            self.child = None;
            return Ok(());
        }
        let ctl = rabbitmq_dir().join("rabbitmqctl");
        let stopped = timeout(
            Duration::from_secs(60),
            Command::new(&ctl)
                .args(["-n", &self.node_name(), "stop"])
                .arg(self.dir.join("pid"))
                .env("HOME", self.dir.join("home"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status(),
        )
        .await;
        let clean = matches!(stopped, Ok(Ok(s)) if s.success());
        // rabbitmqctl returns once the VM is gone; the wrapper script exits right after.
        let pid = self.child.as_ref().and_then(Child::id);
        let exited = match &mut self.child {
            Some(child) if clean => timeout(Duration::from_secs(15), child.wait()).await.is_ok(),
            _ => false,
        };
        if let (true, Some(pid)) = (exited, pid) {
            wait_group_gone(pid).await;
        }
        if !exited {
            self.kill().await?;
        }
        self.child = None;
        if !clean {
            bail!(
                "rabbitmqctl stop failed for broker {} ({stopped:?}); killed it instead",
                self.node_name()
            );
        }
        Ok(())
    }

    /// Crashes the broker: SIGKILL to its whole process group, as a power cut would. Data on
    /// disk stay for [`restart`](Self::restart).
    pub async fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        if let Some(pid) = pid {
            // The server is its own process group leader (see spawn), so the group id is its pid.
            match killpg(Pid::from_raw(pid as i32), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => bail!("cannot kill broker {}: {e}", self.node_name()),
            }
        }
        timeout(Duration::from_secs(15), child.wait())
            .await
            .context("broker did not exit after SIGKILL")?
            .context("cannot wait for the broker")?;
        if let Some(pid) = pid {
            wait_group_gone(pid).await;
        }
        Ok(())
    }

    /// Starts the broker again on the same port and data directory (stopping it cleanly first if
    /// it is running) and waits until it answers AMQP.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn_and_wait().await
    }

    /// Stops the broker if it runs (SIGKILL: its data are about to go anyway) and deletes its
    /// directory.
    pub async fn remove(mut self) -> Result<()> {
        self.kill().await?;
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        // If something already listens on the port, the readiness probe would succeed against
        // the wrong broker: refuse instead.
        for p in [self.port, self.port + DIST_PORT_OFFSET] {
            if !port_is_free(p) {
                bail!(
                    "cannot start broker {}: port {p} is already in use",
                    self.node_name()
                );
            }
        }
        let server = rabbitmq_dir().join("rabbitmq-server");
        if !server.is_file() {
            bail!(
                "{} not found: install rabbitmq-server or set DOCFED_RABBITMQ_DIR to the directory \
                 holding rabbitmq-server and rabbitmqctl",
                server.display()
            );
        }
        let d = &self.dir;
        let log_path = d.join("stdout.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let log_err = log.try_clone()?;
        let mut cmd = Command::new(&server);
        if self.secure.is_none() {
            // These make a plain listener; a secure broker's listener is in its rabbitmq.conf.
            cmd.env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .env("RABBITMQ_NODE_PORT", self.port.to_string());
        }
        let child = cmd
            // Erlang writes crash dumps (MnesiaCore.*, erl_crash.dump) into its working
            // directory: keep them with the instance, not wherever the caller runs.
            .current_dir(d)
            .env("HOME", d.join("home"))
            .env("RABBITMQ_NODENAME", self.node_name())
            .env(
                "RABBITMQ_DIST_PORT",
                (self.port + DIST_PORT_OFFSET).to_string(),
            )
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_CONF_ENV_FILE", "/dev/null")
            // Own process group: kill() takes the whole VM down, and a terminal's Ctrl-C reaches
            // only the launcher, which then stops the broker in order.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("cannot start {}", server.display()))?;
        self.child = Some(child);
        self.wait_ready(READY_TIMEOUT).await
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let url = self.url();
        loop {
            let answers = match &self.secure {
                Some(s) => amqps_answers(self.port, s.probe.clone(), Duration::from_secs(1)).await,
                None => amqp_answers(&url, Duration::from_secs(1)).await,
            };
            if answers {
                return Ok(());
            }
            if let Some(status) = self.try_exited() {
                bail!(
                    "broker {} exited with {status} before answering on port {}; last lines of {}:\n{}",
                    self.node_name(),
                    self.port,
                    self.dir.join("stdout.log").display(),
                    self.log_tail(20)
                );
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail(20);
                self.kill().await?;
                bail!(
                    "broker {} did not answer AMQP on port {} within {within:?}; killed it. Last \
                     lines of {}:\n{tail}",
                    self.node_name(),
                    self.port,
                    self.dir.join("stdout.log").display(),
                );
            }
            sleep(POLL_INTERVAL).await;
        }
    }
}

/// Waits (up to 10 s) until no process of group `pgid` is left. The server script exits as soon
/// as it is signalled, but the Erlang VM in its group takes a moment longer to die and release
/// its ports, and a restart must not find them still bound.
async fn wait_group_gone(pgid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if killpg(Pid::from_raw(pgid as i32), None) == Err(nix::errno::Errno::ESRCH) {
            return;
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes the durable queues nodes `ids` declare (inbox and dead letters) on the broker at
/// `url`, waiting at most 10 s. For test kits only, once their nodes are stopped: a test
/// federation's queues would otherwise stay in a shared broker run after run (hundreds per test
/// run). Never for a real federation, whose queues hold messages still to be delivered.
/// Runs on a thread of its own, so it can be called from `Drop` inside an async test.
pub fn delete_node_queues(url: &str, ids: &[String]) {
    let url = url.to_owned();
    let names: Vec<String> = ids
        .iter()
        .flat_map(|id| {
            [
                docfed_shared::topology::inbox_queue(id),
                docfed_shared::topology::dead_letter_queue(id),
            ]
        })
        .collect();
    let worker = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let work = async {
                let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                    .await?;
                for name in &names {
                    // A failed delete (on old brokers, of a queue that is gone) closes its
                    // channel: one channel per queue.
                    let ch = conn.create_channel().await?;
                    let _ = ch
                        .queue_delete(name.as_str().into(), Default::default())
                        .await;
                    // Each queue's own exchange (the node's amqp::declare_bound).
                    let ch = conn.create_channel().await?;
                    let _ = ch
                        .exchange_delete(name.as_str().into(), Default::default())
                        .await;
                }
                let _ = conn.close(200, "test queues deleted".into()).await;
                Ok::<(), lapin::Error>(())
            };
            let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
        });
    });
    let _ = worker.join();
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            if let (Ok(None), Some(pid)) = (child.try_wait(), child.id()) {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_urls() {
        let hp = |u| amqp_host_port(u);
        assert_eq!(
            hp("amqp://guest:guest@127.0.0.1:5672/%2f"),
            Some(("127.0.0.1".into(), 5672))
        );
        assert_eq!(hp("amqp://broker"), Some(("broker".into(), 5672)));
        assert_eq!(hp("amqps://u:p@h/vh"), Some(("h".into(), 5671)));
        assert_eq!(hp("amqp://[::1]:5673/x"), Some(("::1".into(), 5673)));
        assert_eq!(hp("amqp://u:p@:5674"), Some(("localhost".into(), 5674)));
        assert_eq!(hp("amqp://h:notaport/"), None);
        assert_eq!(hp("http://h:80/"), None);
    }

    #[tokio::test]
    async fn nothing_listening_is_no_broker() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        assert!(!amqp_answers(&url, Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn a_non_amqp_server_is_no_broker() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let url = format!("amqp://127.0.0.1:{port}/");
        assert!(!amqp_answers(&url, Duration::from_secs(1)).await);
    }

    #[test]
    fn tail_of_missing_and_short_logs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        assert!(log_tail(&path, 3).starts_with("(cannot read"));
        std::fs::write(&path, "").unwrap();
        assert!(log_tail(&path, 3).contains("is empty"));
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(log_tail(&path, 3), "b\nc\nd");
        assert_eq!(log_tail(&path, 10), "a\nb\nc\nd");
    }
}
