//! Questions the nodes ask of a validated topology: who a node's parents, children and backup
//! are, who holds a region, where a node's inbox broker is. On an invalid topology they never
//! panic; they answer from the first node of each id.

use super::{NodeSpec, Tier, Topology, DEFAULT_AMQP_URL};

impl Topology {
    /// Whether the nodes have keys, so that messages between them are signed.
    pub fn is_signed(&self) -> bool {
        self.nodes.iter().any(|n| n.public_key.is_some())
    }

    /// The public key of node `id`, if the topology lists a valid one.
    pub fn public_key(&self, id: &str) -> Option<crate::keys::PublicKey> {
        self.node(id)?
            .public_key
            .as_deref()
            .and_then(|k| crate::keys::PublicKey::from_hex(k).ok())
    }

    /// Base URL of node `node` in this federation (`https` with `[tls]`).
    pub fn url(&self, node: &NodeSpec) -> String {
        node.base_url(self.tls.is_some())
    }

    /// The node with this id (the first one, should the file repeat an id).
    pub fn node(&self, id: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Nodes of one tier, in file order.
    pub fn nodes_of_tier(&self, tier: Tier) -> impl Iterator<Item = &NodeSpec> + '_ {
        self.nodes.iter().filter(move |n| n.tier == tier)
    }

    /// Primary nodes, in file order.
    pub fn primaries(&self) -> impl Iterator<Item = &NodeSpec> + '_ {
        self.nodes_of_tier(Tier::Primary)
    }

    /// Intermediate nodes, in file order.
    pub fn intermediates(&self) -> impl Iterator<Item = &NodeSpec> + '_ {
        self.nodes_of_tier(Tier::Intermediate)
    }

    /// Regional nodes, in file order.
    pub fn regionals(&self) -> impl Iterator<Item = &NodeSpec> + '_ {
        self.nodes_of_tier(Tier::Regional)
    }

    /// The nodes that list `id` as a parent (its downstreams), in file order.
    pub fn children<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a NodeSpec> + 'a {
        self.nodes
            .iter()
            .filter(move |n| n.parents.iter().any(|p| p == id))
    }

    /// The parents of `id` (its upstreams) that exist, in the order the node lists them.
    pub fn parents<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a NodeSpec> + 'a {
        self.node(id)
            .map(|n| n.parents.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| self.node(p))
    }

    /// The regional node serving `region`.
    pub fn regional_for_region(&self, region: &str) -> Option<&NodeSpec> {
        self.regionals()
            .find(|n| n.region.as_deref() == Some(region))
    }

    /// The backup node of regional node `id`.
    pub fn backup_of(&self, id: &str) -> Option<&NodeSpec> {
        self.node(id)?.backup.as_deref().and_then(|b| self.node(b))
    }

    /// The regions whose regional content node `id` must hold: its own region, then (in file
    /// order) the regions it backs up.
    pub fn regions_held_by(&self, id: &str) -> Vec<&str> {
        let mut regions: Vec<&str> = self
            .node(id)
            .and_then(|n| n.region.as_deref())
            .into_iter()
            .collect();
        for n in self.regionals() {
            if n.backup.as_deref() == Some(id) {
                if let Some(r) = n.region.as_deref() {
                    if !regions.contains(&r) {
                        regions.push(r);
                    }
                }
            }
        }
        regions
    }

    /// The nodes that hold content of scope `region:R`: R's regional node, then its backup.
    pub fn holders_of_region(&self, region: &str) -> Vec<&NodeSpec> {
        let mut holders = Vec::with_capacity(2);
        if let Some(node) = self.regional_for_region(region) {
            holders.push(node);
            if let Some(backup) = self.backup_of(&node.id) {
                if backup.id != node.id {
                    holders.push(backup);
                }
            }
        }
        holders
    }

    /// AMQP URL of the broker holding node `id`'s inbox: the node's own `amqp_url`, else the
    /// file's, else [`DEFAULT_AMQP_URL`].
    pub fn amqp_url_for(&self, id: &str) -> String {
        self.node(id)
            .and_then(|n| n.amqp_url.as_deref())
            .or(self.amqp_url.as_deref())
            .unwrap_or(DEFAULT_AMQP_URL)
            .to_owned()
    }
}
