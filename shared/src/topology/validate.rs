//! The graph rules of a topology file. [`Topology::validate`] runs every group of rules in a
//! fixed order and returns every problem at once; each group is one function below, so a new
//! rule goes beside the others about the same part of the file.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::{is_valid_node_id, NodeSpec, Tier, Topology, TopologyError as E};
use crate::scope::is_valid_region;

/// The first node of each id: every check after the ids looks nodes up through it.
type ById<'a> = HashMap<&'a str, &'a NodeSpec>;

impl Topology {
    /// Checks the whole topology and returns every problem found, in a stable order (file
    /// order within each kind of check).
    pub fn validate(&self) -> Result<(), Vec<E>> {
        let mut errors = Vec::new();
        self.check_file_settings(&mut errors);
        let by_id = self.check_ids(&mut errors);
        self.check_addresses(&mut errors);
        for n in &self.nodes {
            self.check_node(n, &by_id, &mut errors);
        }
        self.check_regions_are_unique(&mut errors);
        errors.extend(self.find_cycles());
        self.check_sources(&mut errors);
        self.check_keys(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The file's top-level settings: nodes present, `k`, TLS or not, the shared broker.
    fn check_file_settings(&self, errors: &mut Vec<E>) {
        if self.nodes.is_empty() {
            errors.push(E::NoNodes);
        }
        if self.redundancy == 0 {
            errors.push(E::ZeroRedundancy);
        }
        if self.queues.max_messages == 0 || self.queues.max_bytes.as_u64() == 0 {
            errors.push(E::ZeroQueueLimit);
        }
        if self.inline_max.as_u64() > crate::messages::MAX_INLINE {
            errors.push(E::InlineMaxTooLarge {
                given: self.inline_max.as_u64(),
            });
        }
        if self.insecure && self.tls.is_some() {
            errors.push(E::TlsAndInsecure);
        }
        if let Some(url) = &self.amqp_url {
            if !is_amqp_url(url) {
                errors.push(E::InvalidAmqpUrl {
                    node: None,
                    url: url.clone(),
                });
            }
        }
    }

    /// Valid and unique ids (each duplicate reported once); returns the first node of each id.
    fn check_ids(&self, errors: &mut Vec<E>) -> ById<'_> {
        let mut by_id = ById::new();
        let mut reported_dups: HashSet<&str> = HashSet::new();
        for n in &self.nodes {
            if !is_valid_node_id(&n.id) {
                errors.push(E::InvalidId { id: n.id.clone() });
            }
            if by_id.contains_key(n.id.as_str()) {
                if reported_dups.insert(&n.id) {
                    errors.push(E::DuplicateId { id: n.id.clone() });
                }
            } else {
                by_id.insert(&n.id, n);
            }
        }
        by_id
    }

    /// Fixed HTTP ports that no two nodes share.
    fn check_addresses(&self, errors: &mut Vec<E>) {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.http.port() == 0 {
                errors.push(E::ZeroPort { node: n.id.clone() });
                continue;
            }
            if let Some(other) = self.nodes[..i]
                .iter()
                .find(|o| o.http.port() != 0 && addresses_collide(o.http, n.http))
            {
                errors.push(E::DuplicateHttp {
                    first: other.id.clone(),
                    second: n.id.clone(),
                    addr: n.http,
                });
            }
        }
    }

    /// Every rule about one `[[node]]` table, in the order its problems are reported.
    fn check_node(&self, n: &NodeSpec, by_id: &ById<'_>, errors: &mut Vec<E>) {
        if let Some(url) = &n.amqp_url {
            if !is_amqp_url(url) {
                errors.push(E::InvalidAmqpUrl {
                    node: Some(n.id.clone()),
                    url: url.clone(),
                });
            }
        }
        check_parents(n, by_id, errors);
        check_region(n, errors);
        check_backup(n, by_id, errors);
        self.check_redundancy(n, by_id, errors);
    }

    /// The primary routes each notification for a regional node through k distinct
    /// intermediates among that node's parents; fewer than k parents makes that impossible.
    fn check_redundancy(&self, n: &NodeSpec, by_id: &ById<'_>, errors: &mut Vec<E>) {
        if n.tier != Tier::Regional {
            return;
        }
        let intermediates = n
            .parents
            .iter()
            .map(String::as_str)
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|p| by_id.get(p).is_some_and(|p| p.tier == Tier::Intermediate))
            .count();
        if intermediates > 0 && intermediates < self.redundancy {
            errors.push(E::InsufficientRedundancy {
                node: n.id.clone(),
                intermediates,
                redundancy: self.redundancy,
            });
        }
    }

    /// One regional node per region.
    fn check_regions_are_unique(&self, errors: &mut Vec<E>) {
        let mut region_owner: HashMap<&str, &str> = HashMap::new();
        for n in self.regionals() {
            if let Some(region) = n.region.as_deref() {
                match region_owner.get(region) {
                    Some(first) => errors.push(E::DuplicateRegion {
                        region: region.to_owned(),
                        first: (*first).to_owned(),
                        second: n.id.clone(),
                    }),
                    None => {
                        region_owner.insert(region, &n.id);
                    }
                }
            }
        }
    }

    /// `[[source]]` tables: unique names, each valid, and a primary to run them.
    fn check_sources(&self, errors: &mut Vec<E>) {
        let mut source_names = HashSet::new();
        for src in &self.sources {
            if !source_names.insert(src.name.as_str()) {
                errors.push(E::DuplicateSource {
                    name: src.name.clone(),
                });
            }
            errors.extend(src.problems().into_iter().map(|problem| E::Source {
                name: src.name.clone(),
                problem,
            }));
        }
        if !self.sources.is_empty() && self.primaries().next().is_none() {
            errors.push(E::SourcesWithoutPrimary);
        }
    }

    /// Public keys on every node or on none, each a valid ed25519 key.
    fn check_keys(&self, errors: &mut Vec<E>) {
        let keyed = self.nodes.iter().filter(|n| n.public_key.is_some()).count();
        if keyed > 0 && keyed < self.nodes.len() {
            errors.push(E::PartialKeys {
                missing: self
                    .nodes
                    .iter()
                    .filter(|n| n.public_key.is_none())
                    .map(|n| n.id.clone())
                    .collect(),
            });
        }
        for n in &self.nodes {
            if let Some(k) = &n.public_key {
                if crate::keys::PublicKey::from_hex(k).is_err() {
                    errors.push(E::BadPublicKey {
                        node: n.id.clone(),
                        key: k.clone(),
                    });
                }
            }
        }
    }
}

/// Primaries have no parents, every other tier has some; each parent exists, listed once.
fn check_parents(n: &NodeSpec, by_id: &ById<'_>, errors: &mut Vec<E>) {
    let id = || n.id.clone();
    match (n.tier, n.parents.is_empty()) {
        (Tier::Primary, false) => errors.push(E::PrimaryWithParents { node: id() }),
        (Tier::Intermediate | Tier::Regional, true) => errors.push(E::MissingParents {
            node: id(),
            tier: n.tier,
        }),
        _ => {}
    }
    let mut seen = HashSet::new();
    for p in &n.parents {
        if !seen.insert(p.as_str()) {
            errors.push(E::DuplicateParent {
                node: id(),
                parent: p.clone(),
            });
        } else if !by_id.contains_key(p.as_str()) {
            errors.push(E::UnknownParent {
                node: id(),
                parent: p.clone(),
            });
        }
    }
}

/// Regional nodes serve one valid region; the other tiers serve none.
fn check_region(n: &NodeSpec, errors: &mut Vec<E>) {
    let id = || n.id.clone();
    match (n.tier, &n.region) {
        (Tier::Regional, None) => errors.push(E::MissingRegion { node: id() }),
        (Tier::Regional, Some(r)) if !is_valid_region(r) => errors.push(E::InvalidRegion {
            node: id(),
            region: r.clone(),
        }),
        (Tier::Primary | Tier::Intermediate, Some(r)) => errors.push(E::RegionOnNonRegional {
            node: id(),
            tier: n.tier,
            region: r.clone(),
        }),
        _ => {}
    }
}

/// Regional nodes have another regional node as backup; the other tiers have none.
fn check_backup(n: &NodeSpec, by_id: &ById<'_>, errors: &mut Vec<E>) {
    let id = || n.id.clone();
    match (n.tier, &n.backup) {
        (Tier::Regional, None) => errors.push(E::MissingBackup { node: id() }),
        (Tier::Regional, Some(b)) if *b == n.id => errors.push(E::BackupIsSelf { node: id() }),
        (Tier::Regional, Some(b)) => match by_id.get(b.as_str()) {
            None => errors.push(E::UnknownBackup {
                node: id(),
                backup: b.clone(),
            }),
            Some(backup) if backup.tier != Tier::Regional => errors.push(E::BackupNotRegional {
                node: id(),
                backup: b.clone(),
                backup_tier: backup.tier,
            }),
            Some(_) => {}
        },
        (Tier::Primary | Tier::Intermediate, Some(_)) => errors.push(E::BackupOnNonRegional {
            node: id(),
            tier: n.tier,
        }),
        _ => {}
    }
}

fn is_amqp_url(url: &str) -> bool {
    ["amqp://", "amqps://"]
        .iter()
        .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme))
}

/// Two listen addresses collide when they use the same port and either the same IP or a
/// wildcard IP on either side (the wildcard also binds the other address).
fn addresses_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
