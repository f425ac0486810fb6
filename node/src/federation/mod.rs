//! Everything a node does as a member of a federation (DESIGN sections 1-5): routing of
//! notifications, the transactional outbox and its relay to other nodes' inboxes, the inbox
//! consumer (record-then-ack), and the fetch scheduler that pulls content with stream-through.
//!
//! A standalone node has no [`Federation`] and runs none of this.

pub mod amqp;
pub mod fetch;
pub mod inbox;
pub mod ondemand;
pub mod outbox;
pub mod presence;
pub mod routing;
pub mod transfers;

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
}

impl Federation {
    pub fn id(&self) -> &str {
        &self.me.id
    }

    pub fn url_of(&self, id: &str) -> Option<String> {
        self.topology.node(id).map(|n| format!("http://{}", n.http))
    }

    pub fn my_url(&self) -> String {
        format!("http://{}", self.me.http)
    }

    pub fn amqp_url_of(&self, id: &str) -> String {
        self.amqp_override
            .clone()
            .unwrap_or_else(|| self.topology.amqp_url_for(id))
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

    /// Where to pull content from when `origin_url` fails: the other parents (the alternate
    /// intermediate), then the primaries; deduplicated, origin first.
    pub fn sources(&self, origin_url: &str) -> Vec<String> {
        let mut out = vec![origin_url.to_owned()];
        let parents = self.me.parents.iter().filter_map(|p| self.url_of(p));
        let primaries = self.topology.primaries().map(|p| p.base_url());
        for url in parents.chain(primaries) {
            if url != self.my_url() && !out.contains(&url) {
                out.push(url);
            }
        }
        out
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
