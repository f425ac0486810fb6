//! Who may send what. A message that parses is well-formed; admission checks that it makes sense
//! coming from the node it names, in this topology: notifications come down from a parent (or
//! across from the other primary) and name the sender itself as the place to pull from;
//! receipts and annotations come up from a child (or across between primaries); every node a
//! message names exists. A message that fails admission is dead-lettered with the reason and
//! changes nothing.
//!
//! In a keyed federation the inbox has already checked that `from` signed the message; admission
//! then checks the version inside a notification: it must carry the signature of the primary
//! that accepted it (its `origin`) and, unless it is a tombstone, the content's SHA-256, so a
//! relaying node can pass a version on but not forge or alter one (ARCHITECTURE.md §7).

use docfed_shared::messages::{Body, Envelope};
use docfed_shared::topology::Tier;
use docfed_shared::wire::DocumentVersion;
use docfed_shared::Topology;

use super::Federation;

/// Why a message was refused, for the dead-letter header and the log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("sender {0:?} is not a node of this federation")]
    UnknownSender(String),
    #[error("{kind} from {from:?}: only {allowed} may send it to this node")]
    WrongSender {
        kind: &'static str,
        from: String,
        allowed: &'static str,
    },
    #[error("notification from {from:?} names {origin_url:?} to pull from, not the sender's own address {expected:?}")]
    ForeignOrigin {
        from: String,
        origin_url: String,
        expected: String,
    },
    #[error("{field} names {node:?}, which is not a {what} of this federation")]
    UnknownNode {
        field: &'static str,
        node: String,
        what: &'static str,
    },
    #[error(
        "{kind} from {from:?} speaks for {node:?}, which is neither the sender nor a node below it"
    )]
    NotBelowSender {
        kind: &'static str,
        from: String,
        node: String,
    },
    #[error("version {version} of {doc_id} {problem}")]
    UnsignedVersion {
        doc_id: String,
        version: i64,
        problem: &'static str,
    },
}

/// Checks that a version carries a valid signature of its origin (a primary of `topo`) and, if
/// it points to content, that content's SHA-256. Only for keyed topologies.
pub fn check_version_signature(topo: &Topology, v: &DocumentVersion) -> Result<(), Refusal> {
    let refuse = |problem| Refusal::UnsignedVersion {
        doc_id: v.id.to_string(),
        version: v.version,
        problem,
    };
    let origin = topo
        .node(&v.origin)
        .filter(|o| o.tier == Tier::Primary)
        .ok_or_else(|| Refusal::UnknownNode {
            field: "the version's origin",
            node: v.origin.clone(),
            what: "primary",
        })?;
    let signature = v
        .signature
        .as_deref()
        .ok_or_else(|| refuse("is not signed"))?;
    let key = topo
        .public_key(&origin.id)
        .ok_or_else(|| refuse("comes from a primary without a public key"))?;
    if !key.verifies(&v.signing_input(), signature) {
        return Err(refuse("does not match its origin's signature"));
    }
    if v.sha256.is_none() && !v.deleted {
        return Err(refuse("has no SHA-256 of its content"));
    }
    Ok(())
}

/// Checks that `env` may come from its sender to this node.
pub fn admit(fed: &Federation, env: &Envelope) -> Result<(), Refusal> {
    let topo = &fed.topology;
    let from = topo
        .node(&env.from)
        .filter(|n| n.id != fed.id())
        .ok_or_else(|| Refusal::UnknownSender(env.from.clone()))?;
    let across = fed.is_primary() && from.tier == Tier::Primary;
    let from_parent = fed.me.parents.contains(&from.id);
    let from_child = from.parents.iter().any(|p| p == fed.id());
    let node_exists = |field: &'static str, id: &str| {
        topo.node(id).map(|_| ()).ok_or(Refusal::UnknownNode {
            field,
            node: id.to_owned(),
            what: "node",
        })
    };
    match &env.body {
        Body::Notify(n) => {
            if !(from_parent || across) {
                return Err(Refusal::WrongSender {
                    kind: "a notification",
                    from: from.id.clone(),
                    allowed: "a parent (or the other primary, to a primary)",
                });
            }
            // Either scheme: a node switching to TLS advertises itself in clear for a while
            // (`--tls-migration accept`), and a node that reaches peers over TLS dials it so
            // anyway (`Federation::dial`).
            let expected = topo.url(from);
            let other_scheme = from.base_url(!expected.starts_with("https://"));
            if n.origin_url != expected && (topo.tls.is_none() || n.origin_url != other_scheme) {
                return Err(Refusal::ForeignOrigin {
                    from: from.id.clone(),
                    origin_url: n.origin_url.clone(),
                    expected,
                });
            }
            if topo
                .node(&n.document.origin)
                .is_none_or(|o| o.tier != Tier::Primary)
            {
                return Err(Refusal::UnknownNode {
                    field: "the version's origin",
                    node: n.document.origin.clone(),
                    what: "primary",
                });
            }
            for t in &n.targets {
                node_exists("a target", t)?;
            }
            if topo.is_signed() {
                check_version_signature(topo, &n.document)?;
            }
        }
        Body::Receipt(r) => {
            if !(from_child || across) {
                return Err(Refusal::WrongSender {
                    kind: "a receipt",
                    from: from.id.clone(),
                    allowed: "a child (or the other primary, to a primary)",
                });
            }
            node_exists("the receipt's node", &r.node)?;
            node_exists("the receipt's origin", &r.origin)?;
            // A child relays the receipts of the nodes below it, and only theirs: a node that
            // could speak for any other could report content held where it is not, and the
            // primaries would stop re-sending it.
            if !across && !is_below(topo, &r.node, &from.id) {
                return Err(Refusal::NotBelowSender {
                    kind: "a receipt",
                    from: from.id.clone(),
                    node: r.node.clone(),
                });
            }
        }
        Body::Annotation(a) => {
            if !(from_child || across) {
                return Err(Refusal::WrongSender {
                    kind: "an annotation",
                    from: from.id.clone(),
                    allowed: "a child (or the other primary, to a primary)",
                });
            }
            node_exists("the annotation's node", &a.node)?;
            if !across && !is_below(topo, &a.node, &from.id) {
                return Err(Refusal::NotBelowSender {
                    kind: "an annotation",
                    from: from.id.clone(),
                    node: a.node.clone(),
                });
            }
        }
        Body::Decision(d) => {
            // Each primary sends its own decisions to every node itself: nobody relays them,
            // so nobody but a primary can claim one.
            if from.tier != Tier::Primary || d.by != from.id {
                return Err(Refusal::WrongSender {
                    kind: "a decision on an annotation",
                    from: from.id.clone(),
                    allowed: "the primary that took it",
                });
            }
            node_exists("the annotation's node", &d.annotation.node)?;
        }
    }
    Ok(())
}

/// Whether `node` is `ancestor` or a node below it (its parents, their parents, ... include
/// `ancestor`).
fn is_below(topo: &Topology, node: &str, ancestor: &str) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![node.to_owned()];
    while let Some(n) = todo.pop() {
        if n == ancestor {
            return true;
        }
        if seen.insert(n.clone()) {
            todo.extend(topo.parents(&n).map(|p| p.id.clone()));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use docfed_shared::messages::{Annotation, Notification, Receipt};
    use docfed_shared::wire::{ChangeKind, DocumentVersion, Timestamp};
    use docfed_shared::{DocId, Md5Hex, Scope, Topology};

    use super::*;

    fn fed(me: &str) -> Federation {
        let topo = Topology::parse(&topology::demo::toml(
            "x",
            &[7001, 7002, 7003, 7004, 7005, 7006, 7007],
            Some("amqp://127.0.0.1:5672/%2f"),
            |_| None,
        ))
        .unwrap();
        let topo = Arc::new(topo);
        let me = topo.node(&id(me)).unwrap().clone();
        Federation {
            topology: topo,
            me,
            amqp_override: None,
            stream_through: true,
            message_batch: 64,
            http_routes: Default::default(),
            amqp_routes: Default::default(),
            planted_bug: None,
            key: None,
            broker_tls: None,
            tls_migration: None,
            content_keys: None,
        }
    }

    fn id(role: &str) -> String {
        topology::demo::node_id("x", role)
    }

    fn url(f: &Federation, role: &str) -> String {
        f.url_of(&id(role)).unwrap()
    }

    fn notify(from: &str, origin_url: String, origin: &str) -> Envelope {
        Envelope::new(
            "n:1".into(),
            &id(from),
            Body::Notify(Box::new(Notification {
                document: DocumentVersion {
                    id: DocId::new(),
                    version: 1,
                    origin: id(origin),
                    title: "t".into(),
                    description: String::new(),
                    tags: vec![],
                    filename: "f".into(),
                    source: String::new(),
                    scope: Scope::Global,
                    content_type: "text/plain".into(),
                    md5: Md5Hex::empty(),
                    size: 0,
                    deleted: false,
                    created_at: Timestamp(0),
                    author: String::new(),
                    sha256: None,
                    signature: None,
                    lazy: false,
                },
                kind: ChangeKind::Published,
                origin_url,
                targets: vec![],
                content: None,
            })),
        )
    }

    #[test]
    fn notifications_come_from_a_parent_that_names_itself_as_origin() {
        let na = fed("na");
        assert_eq!(
            admit(&na, &notify("mid-1", url(&na, "mid-1"), "primary-a")),
            Ok(())
        );
        // Pull from somewhere else: refused (no pulls from arbitrary URLs).
        let e = admit(
            &na,
            &notify("mid-1", "http://127.0.0.1:9/".into(), "primary-a"),
        );
        assert!(matches!(e, Err(Refusal::ForeignOrigin { .. })), "{e:?}");
        let e = admit(&na, &notify("mid-1", url(&na, "mid-2"), "primary-a"));
        assert!(matches!(e, Err(Refusal::ForeignOrigin { .. })), "{e:?}");
        // A sibling or a child does not send notifications down.
        let e = admit(&na, &notify("eu", url(&na, "eu"), "primary-a"));
        assert!(matches!(e, Err(Refusal::WrongSender { .. })), "{e:?}");
        // Only a primary originates versions.
        let e = admit(&na, &notify("mid-1", url(&na, "mid-1"), "mid-1"));
        assert!(matches!(e, Err(Refusal::UnknownNode { .. })), "{e:?}");
        // Strangers and the node itself.
        let mut stranger = notify("mid-1", url(&na, "mid-1"), "primary-a");
        stranger.from = "intruder".into();
        assert_eq!(
            admit(&na, &stranger),
            Err(Refusal::UnknownSender("intruder".into()))
        );
        let e = admit(&na, &notify("na", url(&na, "na"), "primary-a"));
        assert!(matches!(e, Err(Refusal::UnknownSender(_))), "{e:?}");
        // Primaries replicate to each other.
        let pb = fed("primary-b");
        assert_eq!(
            admit(
                &pb,
                &notify("primary-a", url(&pb, "primary-a"), "primary-a")
            ),
            Ok(())
        );
        let e = admit(&pb, &notify("mid-1", url(&pb, "mid-1"), "primary-a"));
        assert!(matches!(e, Err(Refusal::WrongSender { .. })), "{e:?}");
    }

    #[test]
    fn receipts_and_annotations_come_from_below() {
        let receipt = |from: &str, node: &str| {
            Envelope::new(
                "r:1".into(),
                &id(from),
                Body::Receipt(Receipt {
                    doc_id: DocId::new(),
                    version: 1,
                    origin: id("primary-a"),
                    md5: Md5Hex::empty(),
                    node: id(node),
                    content: true,
                    at: Timestamp(0),
                }),
            )
        };
        let annotation = |from: &str| {
            Envelope::new(
                "a:1".into(),
                &id(from),
                Body::Annotation(Annotation {
                    id: DocId::new().to_string(),
                    doc_id: DocId::new(),
                    doc_version: 1,
                    author: String::new(),
                    text: "note".into(),
                    created_at: Timestamp(0),
                    node: id(from),
                }),
            )
        };
        let mid = fed("mid-1");
        assert_eq!(admit(&mid, &receipt("na", "na")), Ok(()));
        assert_eq!(admit(&mid, &annotation("na")), Ok(()));
        let e = admit(&mid, &receipt("primary-a", "primary-a"));
        assert!(matches!(e, Err(Refusal::WrongSender { .. })), "{e:?}");
        let e = admit(&mid, &annotation("mid-2"));
        assert!(matches!(e, Err(Refusal::WrongSender { .. })), "{e:?}");
        let e = admit(&mid, &receipt("na", "ghost"));
        assert!(matches!(e, Err(Refusal::UnknownNode { .. })), "{e:?}");
        // A child speaks for itself and the nodes below it, never for a sibling or a parent.
        let e = admit(&mid, &receipt("na", "eu"));
        assert!(matches!(e, Err(Refusal::NotBelowSender { .. })), "{e:?}");
        let e = admit(&mid, &receipt("na", "primary-a"));
        assert!(matches!(e, Err(Refusal::NotBelowSender { .. })), "{e:?}");
        // An intermediate relays its children's receipts to the primaries.
        assert_eq!(admit(&fed("primary-a"), &receipt("mid-1", "na")), Ok(()));
        let e = admit(&fed("primary-a"), &receipt("mid-1", "mid-2"));
        assert!(matches!(e, Err(Refusal::NotBelowSender { .. })), "{e:?}");
        let pa = fed("primary-a");
        assert_eq!(admit(&pa, &receipt("primary-b", "na")), Ok(()));
        assert_eq!(admit(&pa, &annotation("mid-2")), Ok(()));
        let e = admit(&pa, &annotation("na"));
        assert!(matches!(e, Err(Refusal::WrongSender { .. })), "{e:?}");
    }
}
