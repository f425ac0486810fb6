//! Starting a federation's processes: the broker chosen (or a private one started), each node
//! spawned with its environment, health awaited (an impostor at a node's address is an error),
//! the portal started when its program is there.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use docfed_shared::topology::{NodeSpec, AMQP_URL_ENV};
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

use crate::broker::{self, PrivateBroker};

use super::*;

impl Federation {
    pub(super) fn index_of(&self, id: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.spec.id == id)
            .ok_or_else(|| anyhow!("no node `{id}` in {}", self.topology_file.display()))
    }

    pub(super) fn note(&self, msg: impl AsRef<str>) {
        if self.opts.verbose {
            eprintln!("docfed-topology: {}", msg.as_ref());
        }
    }

    pub(super) async fn choose_broker(&mut self) -> Result<()> {
        let url = match self.opts.broker.clone() {
            BrokerChoice::AsWritten => {
                self.note("using the brokers named in the topology file");
                self.amqp_url = None;
                return Ok(());
            }
            BrokerChoice::External(url) => url,
            // With TLS the federation gets a broker of its own, set up like an operator's
            // should be (TLS only, a user per node, no guest): a machine's shared broker in
            // clear would carry every notification readable and forgeable by anyone there.
            BrokerChoice::Auto(url)
                if self.topology.tls.is_none()
                    && broker::amqp_answers(&url, Duration::from_secs(2)).await =>
            {
                self.note(format!("using the broker at {}", broker::redact_url(&url)));
                url
            }
            choice => {
                if let (BrokerChoice::Auto(url), None) = (&choice, &self.topology.tls) {
                    self.note(format!(
                        "no AMQP broker answers at {}; starting a private rabbitmq-server (≈ 10 s)",
                        broker::redact_url(url)
                    ));
                }
                let port = broker::free_broker_port()?;
                let name = format!("docfed-{}", short_hash(&self.run_dir));
                let b = match &self.topology.tls {
                    Some(tls) => {
                        let certs = crate::certs::CertDir::of(tls)?;
                        self.note(
                            "starting the federation's broker (rabbitmq-server, ≈ 10 s): TLS only, \
                             a user per node",
                        );
                        PrivateBroker::start_secure(
                            &self.run_dir,
                            &name,
                            port,
                            &certs,
                            &self.topology,
                        )
                        .await
                    }
                    None => PrivateBroker::start(&self.run_dir, &name, port).await,
                }
                .context("cannot start a private broker")?;
                self.note(format!(
                    "private broker {} ready on port {port} (files in {})",
                    b.node_name(),
                    b.dir().display()
                ));
                let url = b.url();
                self.broker = Some(b);
                url
            }
        };
        self.amqp_url = Some(url);
        Ok(())
    }

    pub(super) fn spawn_node(&mut self, i: usize) -> Result<()> {
        if self.amqp_url.is_none() && self.opts.broker != BrokerChoice::AsWritten {
            bail!("no broker chosen yet");
        }
        let amqp = self.amqp_url.clone();
        let n = &self.nodes[i];
        let id = n.spec.id.clone();
        std::fs::create_dir_all(&n.data_dir)
            .with_context(|| format!("cannot create {}", n.data_dir.display()))?;
        let (out, err) = open_log(&n.log, &format!("node {id}"))?;
        let mut cmd = Command::new(&self.node_binary);
        cmd.arg("--topology")
            .arg(&self.topology_file)
            .arg("--id")
            .arg(&id)
            .arg("--data-dir")
            .arg(&n.data_dir)
            .args(&self.opts.node_args)
            .args(self.opts.node_args_by_id.get(&id).into_iter().flatten())
            .stdout(out)
            .stderr(err);
        let own_key = self
            .opts
            .node_args
            .iter()
            .chain(self.opts.node_args_by_id.get(&id).into_iter().flatten())
            .any(|a| a == "--content-key-file" || a.starts_with("--content-key-file="));
        if self.opts.content_keys && !own_key {
            cmd.arg("--content-key-file")
                .arg(super::federation::content_key_file(&self.run_dir, &id));
        }
        self.child_env(&mut cmd, amqp.as_deref());
        let child = spawn_supervised(&mut cmd).with_context(|| {
            format!(
                "cannot start {} for node `{id}`",
                self.node_binary.display()
            )
        })?;
        self.nodes[i].child = Some(child);
        self.nodes[i].started = Some(Instant::now());
        Ok(())
    }

    /// Settings shared by every child: a clean `DOCFED_*` environment (so a variable left in
    /// the operator's shell, such as `DOCFED_HTTP`, cannot override the topology) plus the
    /// broker and the token. The token goes in the environment rather than on the command line,
    /// where every user of the machine could read it in `ps`.
    pub(super) fn child_env(&self, cmd: &mut Command, amqp: Option<&str>) {
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str() {
                if k.starts_with("DOCFED_") && k != "DOCFED_LOG" {
                    cmd.env_remove(k);
                }
            }
        }
        if let Some(amqp) = amqp {
            cmd.env(AMQP_URL_ENV, amqp);
        }
        cmd.env("DOCFED_TOKEN", &self.token);
    }

    /// Polls `GET /v1/health` of the given nodes until each answers 200 as itself. Fails at once
    /// when one of them exits, and at the deadline, with the end of each failing node's log.
    pub(super) async fn wait_healthy(&mut self, which: &[usize]) -> Result<()> {
        let deadline = Instant::now() + self.opts.health_timeout;
        let mut pending: Vec<usize> = which.to_vec();
        let mut last_problem: Vec<Option<String>> = vec![None; self.nodes.len()];
        loop {
            for &i in &pending {
                if let Some(status) = reap(&mut self.nodes[i].child) {
                    let n = &self.nodes[i];
                    bail!(
                        "node `{}` exited with {status} before it was healthy; last lines of {}:\n{}",
                        n.spec.id,
                        n.log.display(),
                        indent(&broker::log_tail(&n.log, TAIL_LINES))
                    );
                }
            }
            let mut probes = JoinSet::new();
            for &i in &pending {
                let client = self.http.clone();
                let spec = self.nodes[i].spec.clone();
                let url = self.nodes[i].url();
                probes.spawn(async move { (i, probe_health(&client, &spec, &url).await) });
            }
            while let Some(joined) = probes.join_next().await {
                let (i, outcome) = joined.context("health probe task failed")?;
                match outcome {
                    Health::Healthy => pending.retain(|&p| p != i),
                    Health::NotYet(why) => last_problem[i] = Some(why),
                    Health::Impostor(why) => bail!("{why}"),
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let reports: Vec<String> = pending
                    .iter()
                    .map(|&i| {
                        let n = &self.nodes[i];
                        format!(
                            "node `{}` not healthy at {}/v1/health ({}); last lines of {}:\n{}",
                            n.spec.id,
                            n.url(),
                            last_problem[i].as_deref().unwrap_or("no answer"),
                            n.log.display(),
                            indent(&broker::log_tail(&n.log, TAIL_LINES))
                        )
                    })
                    .collect();
                bail!(
                    "not every node became healthy within {:?}:\n{}",
                    self.opts.health_timeout,
                    reports.join("\n")
                );
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts `docfed-portal` if the binary exists and stays up; otherwise records why not. The
    /// portal is not needed for the federation to work, so nothing here is fatal.
    pub(super) async fn start_portal(&mut self) {
        let binary = match &self.opts.portal_binary {
            Some(p) => p.clone(),
            None => match find_program(PORTAL_PROGRAM) {
                Some(p) => p,
                None => {
                    self.portal_note = Some(format!(
                        "portal: not started ({PORTAL_PROGRAM} not found next to {} or on PATH; \
                         `cargo build -p {PORTAL_PACKAGE}` builds it)",
                        exe_dir_display()
                    ));
                    return;
                }
            },
        };
        let addr = self.opts.portal_http;
        if let Err(e) = TcpListener::bind(addr) {
            self.portal_note = Some(format!(
                "portal: not started (cannot listen on {addr}: {e})"
            ));
            return;
        }
        match self.spawn_portal(&binary, addr).await {
            Ok(()) => {}
            Err(why) => self.portal_note = Some(format!("portal: {why}")),
        }
    }

    pub(super) async fn spawn_portal(
        &mut self,
        binary: &Path,
        addr: SocketAddr,
    ) -> Result<(), String> {
        let data_dir = self.run_dir.join("portal");
        let log = data_dir.join("portal.log");
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("not started (cannot create {}: {e})", data_dir.display()))?;
        let (out, err) = open_log(&log, "portal").map_err(|e| format!("not started ({e:#})"))?;
        let amqp = self.amqp_url.clone();
        let mut cmd = Command::new(binary);
        cmd.arg("--topology")
            .arg(&self.topology_file)
            .arg("--http")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(out)
            .stderr(err);
        // With TLS, the portal serves HTTPS with the certificate `certs` made beside the CA.
        let portal_tls = self.topology.tls.as_ref().and_then(|tls| {
            let dir = crate::certs::CertDir(tls.ca.parent()?.to_owned());
            let (cert, key) = dir.portal();
            (cert.exists() && key.exists()).then_some((cert, key))
        });
        if let Some((cert, key)) = &portal_tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        self.child_env(&mut cmd, amqp.as_deref());
        let child = spawn_supervised(&mut cmd)
            .map_err(|e| format!("not started (cannot run {}: {e})", binary.display()))?;
        let scheme = if portal_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut portal = PortalProcess {
            url: format!("{scheme}://{addr}"),
            log,
            child: Some(child),
        };
        // A portal that cannot serve (a bad flag, a data directory it cannot open) exits
        // quickly; one that works starts listening.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = reap(&mut portal.child) {
                return Err(format!(
                    "not started ({PORTAL_PROGRAM} exited with {status}; see {})",
                    portal.log.display()
                ));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                self.portal = Some(portal);
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(c) = portal.child.as_mut() {
                    let _ = wait_or_kill(c, Instant::now()).await;
                }
                return Err(format!(
                    "not available ({PORTAL_PROGRAM} did not listen on {addr} within 30 s; see {})",
                    portal.log.display()
                ));
            }
            sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What a health probe found.
pub(super) enum Health {
    Healthy,
    NotYet(String),
    /// Something else answers at the node's address: waiting will not help.
    Impostor(String),
}

pub(super) async fn probe_health(client: &reqwest::Client, spec: &NodeSpec, base: &str) -> Health {
    let url = format!("{base}/v1/health");
    let resp = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return Health::NotYet(format!("{e}")),
    };
    let status = resp.status();
    if !status.is_success() {
        return Health::NotYet(format!("HTTP {status}"));
    }
    // A node left over from another run on the same address would answer 200 too.
    match resp.json::<serde_json::Value>().await {
        Ok(body) => match body.get("node").and_then(|v| v.as_str()) {
            Some(node) if node != spec.id => Health::Impostor(format!(
                "{url} answers as node `{node}`, not `{}`: another process owns that address",
                spec.id
            )),
            _ => Health::Healthy,
        },
        Err(e) => Health::NotYet(format!("unreadable health answer: {e}")),
    }
}
