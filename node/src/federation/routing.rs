//! Who gets which notification: a pure function of the topology, so it is unit-tested here and
//! every node computes the same routes.
//!
//! The node that accepts an edit (a primary) sends one notification to each other primary
//! (replication) and routes one toward every regional node (complete directory) through `k`
//! distinct next hops chosen among its children that lead to that node; every later hop
//! forwards toward each target through one child. With the demo topology a regional node so
//! receives two copies, by mid-1 and by mid-2; the second is discarded by its (doc, version) and
//! MD5.

use std::collections::BTreeMap;

use docfed_shared::topology::Topology;

/// One message to send: to `next`, to be forwarded toward `targets` (empty: for `next` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub next: String,
    pub targets: Vec<String>,
}

/// Whether `ancestor` is `node` or lies above it in the parent graph.
fn leads_to(topo: &Topology, ancestor: &str, node: &str) -> bool {
    let mut stack = vec![node.to_owned()];
    let mut seen = std::collections::HashSet::new();
    while let Some(n) = stack.pop() {
        if n == ancestor {
            return true;
        }
        if seen.insert(n.clone()) {
            if let Some(spec) = topo.node(&n) {
                stack.extend(spec.parents.iter().cloned());
            }
        }
    }
    false
}

/// A stable pseudo-random rank, so load spreads over the hops but every retry of one document
/// takes the same path.
fn rank(salt: &str, target: &str, hop: &str) -> u64 {
    let d = md5::compute(format!("{salt}\0{target}\0{hop}"));
    u64::from_le_bytes(d.0[..8].try_into().expect("8 bytes"))
}

/// Routes from `me` toward each of `targets` through `width` distinct children per target.
pub fn route(topo: &Topology, me: &str, targets: &[String], width: usize, salt: &str) -> Vec<Hop> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in targets {
        if t == me {
            continue;
        }
        let children: Vec<_> = topo.children(me).collect();
        if children.iter().any(|c| &c.id == t) {
            groups.entry(t.clone()).or_default();
            continue;
        }
        let mut candidates: Vec<&str> = children
            .iter()
            .filter(|c| leads_to(topo, &c.id, t))
            .map(|c| c.id.as_str())
            .collect();
        candidates.sort_by_key(|c| (rank(salt, t, c), c.to_string()));
        for c in candidates.into_iter().take(width.max(1)) {
            groups.entry(c.to_owned()).or_default().push(t.clone());
        }
    }
    groups
        .into_iter()
        .map(|(next, targets)| Hop { next, targets })
        .collect()
}

/// What the primary that accepted an edit sends.
pub fn fan_out(topo: &Topology, me: &str, salt: &str) -> Vec<Hop> {
    let mut hops: Vec<Hop> = topo
        .primaries()
        .filter(|p| p.id != me)
        .map(|p| Hop {
            next: p.id.clone(),
            targets: Vec::new(),
        })
        .collect();
    let regionals: Vec<String> = topo.regionals().map(|n| n.id.clone()).collect();
    hops.extend(route(topo, me, &regionals, topo.redundancy, salt));
    hops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Topology {
        Topology::parse(include_str!("../../../topology/demo.toml")).unwrap()
    }

    #[test]
    fn a_primary_reaches_every_regional_through_two_intermediates() {
        let t = demo();
        let hops = fan_out(&t, "primary-a", "doc");
        let all = vec!["na".to_owned(), "eu".into(), "asia".into()];
        assert_eq!(
            hops,
            vec![
                Hop {
                    next: "primary-b".into(),
                    targets: vec![]
                },
                Hop {
                    next: "mid-1".into(),
                    targets: all.clone()
                },
                Hop {
                    next: "mid-2".into(),
                    targets: all
                },
            ]
        );
    }

    #[test]
    fn an_intermediate_forwards_directly_to_its_children() {
        let t = demo();
        let hops = route(&t, "mid-1", &["na".into(), "eu".into()], 1, "doc");
        assert_eq!(
            hops,
            vec![
                Hop {
                    next: "eu".into(),
                    targets: vec![]
                },
                Hop {
                    next: "na".into(),
                    targets: vec![]
                },
            ]
        );
    }

    #[test]
    fn with_redundancy_one_each_target_gets_one_path() {
        let mut t = demo();
        t.redundancy = 1;
        let hops = fan_out(&t, "primary-b", "some-doc");
        let copies: usize = hops.iter().map(|h| h.targets.len()).sum();
        assert_eq!(copies, 3);
    }
}
