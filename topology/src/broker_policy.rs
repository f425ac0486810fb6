//! What a federation's broker lets each node do, as RabbitMQ definitions: one user per node,
//! logged in by its client certificate (EXTERNAL: the certificate's common name is the node id,
//! no password exists), permissions that confine it to its own queues, and every node's inbox
//! and dead-letter queue declared in advance so that no node ever needs to declare another's.
//!
//! Permissions (RabbitMQ checks *configure* to declare or delete, *write* to publish to an
//! exchange or bind a queue, *read* to consume or bind from an exchange):
//!
//! | | configure | write | read |
//! |---|---|---|---|
//! | node N | N's inbox and dead-letter queue | N's own, and the inbox exchanges of its parents and children (a primary: every node's) | N's own |
//! | a primary, also | its federation's source leases | the same | the same |
//! | `docfed-admin` | everything | everything | everything |
//!
//! No node can write to the default exchange, which reaches every queue: docfed publishes
//! to an exchange per queue (the node's `amqp::declare_bound`). A node may write exactly to the
//! inboxes whose admission accepts it as a sender ([`talks_to`]); what it may *say* there is
//! limited by the message signatures, which the inbox checks.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use docfed_shared::topology::{dead_letter_queue, inbox_queue, Topology};
use serde_json::{json, Value};

use crate::certs::BROKER_ADMIN;

/// `s` as a literal inside a regular expression.
fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The nodes whose inboxes node `id` may fill: exactly the senders the receivers' admission
/// accepts (ARCHITECTURE §3.3). Notifications go from parents to children, receipts and
/// annotations from children to parents, everything between the primaries, and a primary's
/// decisions on annotations to every node.
pub fn talks_to(topology: &Topology, id: &str) -> BTreeSet<String> {
    let is_primary = topology.primaries().any(|p| p.id == id);
    let neighbours: Vec<&docfed_shared::topology::NodeSpec> = if is_primary {
        topology.nodes.iter().collect()
    } else {
        topology.parents(id).chain(topology.children(id)).collect()
    };
    neighbours
        .into_iter()
        .filter(|n| n.id != id)
        .map(|n| n.id.clone())
        .collect()
}

/// Configure, write and read patterns of node `id`.
pub fn permissions(topology: &Topology, id: &str) -> (String, String, String) {
    let is_primary = topology.primaries().any(|p| p.id == id);
    let own = format!(
        "^{}$",
        alternatives(&[inbox_queue(id), dead_letter_queue(id)])
    );
    let inboxes: Vec<String> = talks_to(topology, id)
        .into_iter()
        .map(|n| inbox_queue(&n))
        .collect();
    let mut write = own.clone();
    if !inboxes.is_empty() {
        write = format!("{own}|^{}$", alternatives(&inboxes));
    }
    let mut configure = own.clone();
    let mut read = own;
    if let (true, Some(first)) = (is_primary, topology.primaries().next()) {
        // Lease queues of the federation's sources: `docfed.source.FIRST.NAME` (reachback).
        let leases = format!("|^{}", literal(&format!("docfed.source.{}.", first.id)));
        configure.push_str(&leases);
        write.push_str(&leases);
        read.push_str(&leases);
    }
    (configure, write, read)
}

fn alternatives(names: &[String]) -> String {
    let parts: Vec<String> = names.iter().map(|n| literal(n)).collect();
    format!("({})", parts.join("|"))
}

/// RabbitMQ definitions for `topology`'s broker: the administrator, a user per node not in
/// `revoked`, their permissions, and every node's inbox and dead-letter queue with its exchange.
pub fn definitions(topology: &Topology, revoked: &BTreeSet<String>) -> Result<Value> {
    if topology.nodes.iter().any(|n| n.id == BROKER_ADMIN) {
        bail!("a node may not be called `{BROKER_ADMIN}`: that is the broker administrator's name");
    }
    let user = |name: &str, tags: &str| {
        // No password: these users log in with their certificate only.
        json!({"name": name, "password_hash": "", "tags": tags,
               "hashing_algorithm": "rabbit_password_hashing_sha256"})
    };
    let grant = |name: &str, (c, w, r): (String, String, String)| json!({"user": name, "vhost": "/", "configure": c, "write": w, "read": r});
    let mut users = vec![user(BROKER_ADMIN, "administrator")];
    let mut grants = vec![grant(BROKER_ADMIN, (".*".into(), ".*".into(), ".*".into()))];
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    // The arguments every node declares its queues with (the node's `amqp::declare_durable`):
    // the same, or a node's declaration would be refused.
    let arguments = |dead_letters: bool| -> serde_json::Map<String, Value> {
        topology
            .queues
            .arguments(dead_letters)
            .into_iter()
            .map(|(key, value)| {
                let value = match value {
                    docfed_shared::topology::QueueArgument::Int(n) => json!(n),
                    docfed_shared::topology::QueueArgument::Text(t) => json!(t),
                };
                (key.to_owned(), value)
            })
            .collect()
    };
    for n in &topology.nodes {
        if !revoked.contains(&n.id) {
            users.push(user(&n.id, ""));
            grants.push(grant(&n.id, permissions(topology, &n.id)));
        }
        for (name, dead_letters) in [
            (inbox_queue(&n.id), false),
            (dead_letter_queue(&n.id), true),
        ] {
            queues.push(json!({"name": name, "vhost": "/", "durable": true,
                               "auto_delete": false, "arguments": arguments(dead_letters)}));
            exchanges.push(
                json!({"name": name, "vhost": "/", "type": "fanout", "durable": true,
                                  "auto_delete": false, "internal": false, "arguments": {}}),
            );
            bindings.push(json!({"source": name, "vhost": "/", "destination": name,
                                 "destination_type": "queue", "routing_key": "",
                                 "arguments": {}}));
        }
    }
    Ok(json!({
        "vhosts": [{"name": "/"}],
        "users": users,
        "permissions": grants,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo shape: primary-a, primary-b, mid-1, mid-2, na, eu, asia (prefix `x`).
    fn demo() -> Topology {
        let ports = [7001, 7002, 7003, 7004, 7005, 7006, 7007];
        Topology::parse(&crate::demo::toml("x", &ports, None, |_| None)).unwrap()
    }

    fn matches(pattern: &str, name: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(name)
    }

    #[test]
    fn a_node_reads_only_its_own_queues_and_writes_only_inboxes() {
        let t = demo();
        let (configure, write, read) = permissions(&t, "x-mid-1");
        for own in ["docfed.x-mid-1.inbox", "docfed.x-mid-1.dead"] {
            assert!(matches(&configure, own) && matches(&read, own) && matches(&write, own));
        }
        // Its parents and children: the primaries above, the regional nodes below.
        for other in [
            "docfed.x-na.inbox",
            "docfed.x-eu.inbox",
            "docfed.x-primary-a.inbox",
            "docfed.x-primary-b.inbox",
        ] {
            assert!(matches(&write, other), "{other}");
            assert!(
                !matches(&read, other) && !matches(&configure, other),
                "{other}"
            );
        }
        // Not the other intermediate, whose admission would refuse mid-1 as a sender.
        assert!(!matches(&write, "docfed.x-mid-2.inbox"));
        let (_, write_na, _) = permissions(&t, "x-na");
        assert!(matches(&write_na, "docfed.x-mid-1.inbox"));
        assert!(!matches(&write_na, "docfed.x-eu.inbox"));
        assert!(!matches(&write_na, "docfed.x-primary-a.inbox"));
        // A primary's decisions on annotations go to every node.
        let (_, write_pa, _) = permissions(&t, "x-primary-a");
        assert!(matches(&write_pa, "docfed.x-asia.inbox"));
        assert!(matches(&write_pa, "docfed.x-primary-b.inbox"));
        for never in [
            "docfed.x-mid-2.dead",
            "amq.default",
            "",
            "docfed.x-mid-1.inboxx",
            "xdocfed.x-mid-1.inbox",
            "docfed.x-mid-11.inbox",
            "docfed.source.x-primary-a.feed",
        ] {
            assert!(
                !matches(&write, never) && !matches(&read, never) && !matches(&configure, never),
                "{never:?}"
            );
        }
        let (configure, _, read) = permissions(&t, "x-primary-b");
        let lease = "docfed.source.x-primary-a.feed";
        assert!(matches(&configure, lease) && matches(&read, lease));
        assert!(!matches(&configure, "docfed.source.x-primary-b.feed"));
    }

    #[test]
    fn revoked_nodes_have_no_user_but_keep_their_queues() {
        let t = demo();
        let d = definitions(&t, &["x-mid-1".to_owned()].into()).unwrap();
        let users: Vec<&str> = d["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = ["primary-a", "primary-b", "mid-2", "na", "eu", "asia"]
            .iter()
            .map(|r| format!("x-{r}"))
            .collect();
        assert_eq!(users[0], "docfed-admin");
        assert_eq!(users[1..], expected);
        assert_eq!(d["queues"].as_array().unwrap().len(), 14);
        assert!(d["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["user"] != "x-mid-1"));
        let mut bad = t.clone();
        bad.nodes[6].id = "docfed-admin".into();
        assert!(definitions(&bad, &BTreeSet::new()).is_err());
    }
}
