//! Everything a node does as a member of a federation (ARCHITECTURE.md §1-§5): routing of
//! notifications, the transactional outbox and its relay to other nodes' inboxes, the inbox
//! consumer (record-then-ack), and the fetch scheduler that pulls content with stream-through.
//!
//! A standalone node has no [`Federation`] and runs none of this.

pub mod admission;
pub mod amqp;
pub mod fetch;
pub mod inbox;
pub mod ondemand;
pub mod outbox;
pub mod peer_http;
pub mod presence;
pub mod pull;
pub mod release;
pub mod routing;
pub mod session;
pub mod setup;
pub mod transfers;

use std::collections::HashMap;
use std::sync::Arc;

use docfed_shared::topology::{NodeSpec, Tier, Topology};
use docfed_shared::Scope;

/// This node's place in the federation.
#[derive(Debug, Clone)]
pub struct Federation {
    pub topology: Arc<Topology>,
    pub me: NodeSpec,
    /// One broker for every node (from `DOCFED_AMQP_URL`), overriding the topology's URLs.
    pub amqp_override: Option<String>,
    /// Pull only after the upstream pull completed (for measuring what stream-through buys).
    pub stream_through: bool,
    /// Most outbox rows the relay sends as one broker message (`--message-batch`).
    pub message_batch: usize,
    /// Where to connect for a peer's advertised base URL, when not there (`--peer-http`).
    pub http_routes: HashMap<String, String>,
    /// Where to reach a peer's inbox broker, when not at its topology URL (`--peer-amqp`).
    pub amqp_routes: HashMap<String, String>,
    /// A deliberate defect, for the endurance harness to prove it catches it.
    pub planted_bug: Option<PlantedBug>,
    /// This node's private key when the topology lists public keys: every message it sends is
    /// signed, and every message it receives must be signed by its sender.
    pub key: Option<std::sync::Arc<docfed_shared::keys::NodeKey>>,
    /// This node's certificate and the CA, for `amqps://` brokers (from the topology's `[tls]`).
    pub broker_tls: Option<amqp::BrokerTls>,
    /// A step of switching the federation to TLS node by node (`--tls-migration`).
    pub tls_migration: Option<TlsMigration>,
    /// The node's content keys when it seals content at rest: an outbox row that carries a
    /// document's bytes inline is sealed with them too (`outbox::send_notifications`).
    pub content_keys: Option<std::sync::Arc<crate::atrest::Keys>>,
}

/// Steps of switching a running federation from clear to TLS without stopping it: every node
/// goes through `accept`, then every node through `prefer`, then every node to TLS only, one
/// node at a time (README "Switching to TLS").
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMigration {
    /// Serve HTTPS and plain HTTP on the same port; reach peers and advertise in clear (some
    /// peers may not serve TLS yet).
    Accept,
    /// Serve both; reach peers and advertise over TLS (every peer serves it by now).
    Prefer,
}

/// Defects the endurance harness can plant (`--plant-bug`), each breaking one promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlantedBug {
    /// The inbox acks a burst of messages, then records them a second later ("batching"):
    /// a crash in between loses them.
    AckBeforeCommit,
}

impl Federation {
    pub fn id(&self) -> &str {
        &self.me.id
    }

    /// Whether this node reaches its peers over TLS (and advertises itself so).
    pub fn dials_tls(&self) -> bool {
        self.topology.tls.is_some() && self.tls_migration != Some(TlsMigration::Accept)
    }

    /// Node `n`'s base URL as this node reaches it.
    pub fn url(&self, n: &NodeSpec) -> String {
        n.base_url(self.dials_tls())
    }

    pub fn url_of(&self, id: &str) -> Option<String> {
        self.topology.node(id).map(|n| self.url(n))
    }

    /// The topology node whose base URL `url` is or is below, as advertised (over TLS or not).
    pub fn node_at(&self, url: &str) -> Option<&str> {
        let base = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        self.topology
            .nodes
            .iter()
            .find(|n| n.base_url(true) == base || n.base_url(false) == base)
            .map(|n| n.id.as_str())
    }

    pub fn my_url(&self) -> String {
        self.url(&self.me)
    }

    /// URL of node `id`'s inbox broker, as reached from here.
    pub fn amqp_url_of(&self, id: &str) -> String {
        if let Some(url) = self.amqp_routes.get(id).filter(|_| id != self.id()) {
            return url.clone();
        }
        self.amqp_override
            .clone()
            .unwrap_or_else(|| self.topology.amqp_url_for(id))
    }

    /// The base URL to connect to for a peer's advertised base URL. Routing decisions and
    /// notifications keep advertised URLs; only the connection goes elsewhere.
    ///
    /// A peer's URL advertised in clear during a migration to TLS (`--tls-migration accept`)
    /// is reached over TLS once this node reaches its peers so: a node never falls back to
    /// clear because a message said `http://`.
    pub fn dial<'a>(&'a self, url: &'a str) -> std::borrow::Cow<'a, str> {
        if let Some(route) = self.http_routes.get(url) {
            return route.as_str().into();
        }
        if self.dials_tls() {
            if let Some(rest) = url.strip_prefix("http://") {
                let secure = format!("https://{rest}");
                if let Some(route) = self.http_routes.get(&secure) {
                    return route.clone().into();
                }
                let base = secure.split('/').take(3).collect::<Vec<_>>().join("/");
                if self.topology.nodes.iter().any(|n| n.base_url(true) == base) {
                    return secure.into();
                }
            }
        }
        url.into()
    }

    /// A request for content at `url`, signed by this node when it has a key, so the source
    /// serves it even content that belongs only to deleted documents.
    pub fn pull_request(
        &self,
        http: &reqwest::Client,
        url: String,
        md5: &docfed_shared::Md5Hex,
    ) -> reqwest::RequestBuilder {
        use docfed_shared::keys::{
            pull_signing_input, PULL_NODE_HEADER, PULL_SIGNATURE_HEADER, PULL_TIME_HEADER,
        };
        // Named even unsigned: a primary asked by a primary for a lazy item reads only its own
        // source (`ondemand::Asker`), which keeps two primaries from asking each other.
        let req = http.get(url).header(PULL_NODE_HEADER, self.id());
        let Some(key) = &self.key else {
            return req;
        };
        let now = docfed_shared::wire::Timestamp::now().millis() as u64 / 1000;
        req.header(PULL_TIME_HEADER, now).header(
            PULL_SIGNATURE_HEADER,
            key.sign(&pull_signing_input(self.id(), md5.as_str(), now)),
        )
    }

    pub fn is_primary(&self) -> bool {
        self.me.tier == Tier::Primary
    }

    /// Whether regional node `node` must hold the content of a document of this scope.
    pub fn regional_needs(&self, node: &NodeSpec, scope: &Scope) -> bool {
        match scope {
            Scope::Global => true,
            Scope::Region(r) => self
                .topology
                .holders_of_region(r)
                .iter()
                .any(|h| h.id == node.id),
        }
    }

    /// Whether node `id`, carrying a notification toward `targets`, must pull the content.
    /// Primaries hold everything; an intermediate pulls when a target downstream needs it (it is
    /// that target's source); a regional node by scope. Tombstones need no content anywhere.
    pub fn needs_content(
        &self,
        id: &str,
        scope: &Scope,
        deleted: bool,
        targets: &[String],
    ) -> bool {
        if deleted {
            return false;
        }
        let Some(node) = self.topology.node(id) else {
            return false;
        };
        match node.tier {
            Tier::Primary => true,
            Tier::Regional => self.regional_needs(node, scope),
            Tier::Intermediate => targets.iter().any(|t| {
                self.topology
                    .node(t)
                    .is_some_and(|n| n.tier == Tier::Regional && self.regional_needs(n, scope))
            }),
        }
    }

    /// Whether this node's routing keeps content of this scope, whoever flags it: a primary
    /// always; a regional node when the scope is its own (or one it backs up); an intermediate
    /// when some regional node it could carry the notification to needs it (it caches for its
    /// children). What is kept for device flags only is released when the last flag goes
    /// (`release`).
    pub fn keeps_content(&self, scope: &Scope) -> bool {
        let regionals: Vec<String> = self.topology.regionals().map(|n| n.id.clone()).collect();
        self.needs_content(self.id(), scope, false, &regionals)
    }

    /// Where to pull content from when `origin_url` fails: the other parents (the alternate
    /// intermediate), then the primaries; deduplicated, origin first.
    pub fn sources(&self, origin_url: &str) -> Vec<String> {
        let mut out = vec![origin_url.to_owned()];
        let parents = self.me.parents.iter().filter_map(|p| self.url_of(p));
        let primaries = self.topology.primaries().map(|p| self.url(p));
        for url in parents.chain(primaries) {
            if url != self.my_url() && !out.contains(&url) {
                out.push(url);
            }
        }
        out
    }

    /// Every other node of the topology.
    pub fn others(&self) -> impl Iterator<Item = &NodeSpec> {
        self.topology.nodes.iter().filter(|n| n.id != self.me.id)
    }

    /// Where messages going up (receipts, annotations) are sent from here.
    pub fn upstream(&self) -> Vec<String> {
        if self.is_primary() {
            self.topology
                .primaries()
                .filter(|p| p.id != self.me.id)
                .map(|p| p.id.clone())
                .collect()
        } else {
            self.me.parents.clone()
        }
    }
}
