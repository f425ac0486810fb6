//! A whole federation of real `docfed-node` processes for one test: the demo shape (2 primaries,
//! 2 intermediates, regional na/eu/asia) with ids unique to the test, so tests share the broker
//! at DOCFED_AMQP_URL without sharing queues.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{auth, client, TestNode, TestResult};

pub struct Federation {
    pub prefix: String,
    pub nodes: BTreeMap<String, TestNode>,
    /// The listening socket at the address of the role not started (see
    /// [`Federation::start_with_impostor`]), for the test to serve as that node.
    pub impostor: Option<tokio::net::TcpListener>,
    /// The broker the nodes' inboxes are on (unless a role has its own).
    broker: String,
    /// The federation's certificates, when its links use TLS ([`Federation::start_tls`]).
    pub certs: Option<topology::certs::CertDir>,
    /// The federation's own broker ([`Federation::start_secure`]); dropped (killed) after
    /// the nodes.
    pub private_broker: Option<topology::broker::PrivateBroker>,
    _tmp: tempfile::TempDir,
}

/// How a test federation's links are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Links {
    Clear,
    /// HTTPS between nodes; inboxes on the shared broker in clear.
    Tls,
    /// HTTPS, and the inboxes on a private broker reached over TLS, a user per node.
    TlsAndBroker,
}

impl Drop for Federation {
    fn drop(&mut self) {
        // Nodes first (killed and reaped), so none declares its queues again.
        self.nodes.clear();
        if self.private_broker.is_some() {
            return;
        }
        let ids: Vec<String> = ROLES.iter().map(|r| self.id(r)).collect();
        topology::broker::delete_node_queues(&self.broker, &ids);
    }
}

pub use topology::demo::ROLES;

pub use docfed_test_kit::amqp_url;

impl Federation {
    /// Starts every node of the demo shape. `extra` flags go to every node.
    pub async fn start(extra: &[&str]) -> TestResult<Self> {
        Self::start_with_broker(extra, &amqp_url()).await
    }

    pub async fn start_with_broker(extra: &[&str], broker: &str) -> TestResult<Self> {
        Self::start_with_brokers(extra, broker, &[]).await
    }

    /// Like `start`, with some roles' inboxes on brokers of their own.
    pub async fn start_with_brokers(
        extra: &[&str],
        broker: &str,
        own: &[(&str, String)],
    ) -> TestResult<Self> {
        // Ports are picked free but bound later by the nodes; another process may take one in
        // between. That shows as "Address already in use": start over with fresh ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(extra, broker, own, None, "", Links::Clear).await {
                Err(e) if attempt < 4 && e.to_string().contains("Address already in use") => {
                    continue
                }
                other => return other,
            }
        }
    }

    /// Every node of the demo shape but `role`, whose address the test serves itself through
    /// [`Federation::impostor`]: a misbehaving member.
    pub async fn start_with_impostor(extra: &[&str], role: &str) -> TestResult<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(extra, &amqp_url(), &[], Some(role), "", Links::Clear).await {
                Err(e) if attempt < 4 && e.to_string().contains("Address already in use") => {
                    continue
                }
                other => return other,
            }
        }
    }

    /// Like `start`, with every link over TLS: certificates from `docfed-topology certs` in
    /// [`Federation::certs`], the topology's `[tls]` pointing there.
    pub async fn start_tls(extra: &[&str]) -> TestResult<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(extra, &amqp_url(), &[], None, "", Links::Tls).await {
                Err(e) if attempt < 4 && e.to_string().contains("Address already in use") => {
                    continue
                }
                other => return other,
            }
        }
    }

    /// [`Federation::start_with_impostor`] with every link over TLS, as
    /// [`Federation::start_tls`]: the test serves `role`'s address itself, with whatever
    /// certificate it likes.
    pub async fn start_tls_with_impostor(extra: &[&str], role: &str) -> TestResult<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(extra, &amqp_url(), &[], Some(role), "", Links::Tls).await {
                Err(e) if attempt < 4 && e.to_string().contains("Address already in use") => {
                    continue
                }
                other => return other,
            }
        }
    }

    /// Like [`Federation::start_tls`], with the inboxes on a broker of the federation's own
    /// ([`topology::broker::PrivateBroker::start_secure`]): AMQP over TLS only, each node logged
    /// in by its certificate, confined to its own queues.
    pub async fn start_secure(extra: &[&str]) -> TestResult<Self> {
        let port = topology::broker::free_broker_port()?;
        let url = format!("amqps://localhost:{port}/%2f?auth_mechanism=external");
        Self::try_start(extra, &url, &[], None, "", Links::TlsAndBroker).await
    }

    /// Like `start`, with `[[source]]` tables (TOML) in the topology.
    pub async fn start_with_sources(extra: &[&str], sources: &str) -> TestResult<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start(extra, &amqp_url(), &[], None, sources, Links::Clear).await {
                Err(e) if attempt < 4 && e.to_string().contains("Address already in use") => {
                    continue
                }
                other => return other,
            }
        }
    }

    async fn try_start(
        extra: &[&str],
        broker: &str,
        own: &[(&str, String)],
        impostor: Option<&str>,
        sources: &str,
        links: Links,
    ) -> TestResult<Self> {
        let tmp = tempfile::tempdir()?;
        let prefix = format!("t{:08x}", docfed_test_kit::unique_u32());
        let id = |role: &str| topology::demo::node_id(&prefix, role);
        let ports = topology::demo::free_ports()?;
        let impostor = match impostor {
            Some(role) => {
                let i = ROLES
                    .iter()
                    .position(|r| *r == role)
                    .ok_or("no such role")?;
                Some((
                    role,
                    tokio::net::TcpListener::bind(("127.0.0.1", ports[i])).await?,
                ))
            }
            None => None,
        };
        let mut toml = topology::demo::toml(&prefix, &ports, Some(broker), |role| {
            own.iter()
                .find(|(r, _)| *r == role)
                .map(|(_, url)| url.clone())
        });
        toml.push('\n');
        toml.push_str(sources);
        // Every node gets a key in its data directory; the topology lists the public keys, so
        // messages between the nodes are signed.
        let mut keyed = topology::keys::provision(&docfed_shared::Topology::parse(&toml)?, |id| {
            let role = id.strip_prefix(&format!("{prefix}-")).unwrap_or(id);
            tmp.path().join(role).join(docfed_shared::keys::KEY_FILE)
        })?;
        let certs = if links != Links::Clear {
            let dir = topology::certs::CertDir(tmp.path().join("certs"));
            topology::certs::generate(&keyed, &dir, &Default::default())?;
            keyed.tls = Some(dir.spec());
            Some(dir)
        } else {
            // Secure by default: a federation in clear must say so.
            keyed.insecure = true;
            None
        };
        let private_broker = match (&certs, links) {
            (Some(certs), Links::TlsAndBroker) => {
                let (_, port) = topology::broker::amqp_host_port(broker).ok_or("bad broker URL")?;
                Some(
                    topology::broker::PrivateBroker::start_secure(
                        tmp.path(),
                        &prefix,
                        port,
                        certs,
                        &keyed,
                    )
                    .await?,
                )
            }
            _ => None,
        };
        let topology = tmp.path().join("topology.toml");
        topology::keys::write_topology(&keyed, &topology)?;
        let mut nodes = BTreeMap::new();
        for role in ROLES {
            if impostor.as_ref().is_some_and(|(r, _)| *r == role) {
                continue;
            }
            let dir = tmp.path().join(role);
            let mut args: Vec<String> = vec![
                "--topology".into(),
                topology.display().to_string(),
                "--id".into(),
                id(role),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.insert(
                role.to_owned(),
                TestNode::start_federated(&dir, &args).await?,
            );
        }
        Ok(Federation {
            prefix,
            nodes,
            impostor: impostor.map(|(_, l)| l),
            broker: broker.to_owned(),
            certs,
            private_broker,
            _tmp: tmp,
        })
    }

    /// The broker the nodes' inboxes are on (unless a role has its own).
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The topology file the nodes read.
    pub fn topology_file(&self) -> std::path::PathBuf {
        self._tmp.path().join("topology.toml")
    }

    /// The federation's scratch directory (nodes' data directories are `ROLE/` in it).
    pub fn dir(&self) -> &std::path::Path {
        self._tmp.path()
    }

    /// Stops `role` (SIGTERM) and starts it again on its data directory with `args` instead of
    /// the ones it was started with.
    pub async fn restart_with(&mut self, role: &str, args: &[&str]) -> TestResult {
        self.node_mut(role).stop().await?;
        let node = TestNode::start_federated(&self._tmp.path().join(role), args).await?;
        self.nodes.insert(role.to_owned(), node);
        Ok(())
    }

    pub fn id(&self, role: &str) -> String {
        topology::demo::node_id(&self.prefix, role)
    }

    /// `role`'s signature of `payload` sent to `to` (a role), with `role`'s own key: what a
    /// real (or compromised) member would send.
    pub fn sign(&self, role: &str, to: &str, payload: &[u8]) -> TestResult<String> {
        Ok(self
            .key(role)?
            .sign(&docfed_shared::messages::signing_input(
                &self.id(to),
                payload,
            )))
    }

    /// Puts `payload` into `to`'s inbox with a real AMQP client, as a peer would: signed with
    /// `signer`'s key (a role) if given, unsigned otherwise.
    pub async fn send_to_inbox(
        &self,
        ch: &lapin::Channel,
        to: &str,
        payload: &[u8],
        signer: Option<&str>,
    ) -> TestResult {
        self.send_to_inbox_as(ch, to, payload, signer, None).await
    }

    /// [`Self::send_to_inbox`] with an AMQP content type (a batch's, say).
    pub async fn send_to_inbox_as(
        &self,
        ch: &lapin::Channel,
        to: &str,
        payload: &[u8],
        signer: Option<&str>,
        content_type: Option<&str>,
    ) -> TestResult {
        let mut props = lapin::BasicProperties::default().with_delivery_mode(2);
        if let Some(t) = content_type {
            props = props.with_content_type(t.into());
        }
        if let Some(signer) = signer {
            let mut headers = lapin::types::FieldTable::default();
            headers.insert(
                docfed_shared::messages::SIGNATURE_HEADER.into(),
                lapin::types::AMQPValue::LongString(self.sign(signer, to, payload)?.into()),
            );
            props = props.with_headers(headers);
        }
        ch.basic_publish(
            "".into(),
            format!("docfed.{}.inbox", self.id(to)).as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            payload,
            props,
        )
        .await?
        .await?;
        Ok(())
    }

    /// Waits until `role`'s counter `name` reaches `at_least`.
    pub async fn await_metric(&self, role: &str, name: &str, at_least: u64) -> TestResult {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.metric(role, name).await?;
            if v >= at_least {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("{role}: {name} = {v} < {at_least}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `role`'s private key.
    pub fn key(&self, role: &str) -> TestResult<docfed_shared::keys::NodeKey> {
        let path = self._tmp.path().join(role);
        Ok(docfed_shared::keys::NodeKey::load(
            &path.join(docfed_shared::keys::KEY_FILE),
        )?)
    }

    pub fn node(&self, role: &str) -> &TestNode {
        &self.nodes[role]
    }

    pub fn node_mut(&mut self, role: &str) -> &mut TestNode {
        self.nodes.get_mut(role).unwrap()
    }

    /// A node's counter from /metrics.
    pub async fn metric(&self, role: &str, name: &str) -> TestResult<u64> {
        let text = auth(client().get(self.node(role).url("/metrics")))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Waits until `role` serves metadata of `id` satisfying `pred`.
    pub async fn await_meta<F: Fn(&Value) -> bool>(
        &self,
        role: &str,
        id: &str,
        timeout: Duration,
        pred: F,
    ) -> TestResult<Value> {
        let c = client();
        let deadline = std::time::Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            if let Ok(resp) = c
                .get(self.node(role).url(&format!("/v1/documents/{id}")))
                .send()
                .await
            {
                if resp.status().is_success() {
                    last = resp.json().await?;
                    if pred(&last) {
                        return Ok(last);
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "{role}: document {id} not as expected after {timeout:?}; last seen {last}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Messages ready in `queue` (unacked ones not counted).
pub async fn queue_depth(ch: &lapin::Channel, queue: &str) -> TestResult<u32> {
    let q = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    Ok(q.message_count())
}
