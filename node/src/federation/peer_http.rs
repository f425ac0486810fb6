//! The HTTP clients a node reaches its peers with. Over TLS, one per topology peer that accepts
//! only that node's certificate (`Expect::Node`), and one for any other URL that accepts any
//! node's; all rebuilt when the CRL changes, because a kept-alive connection is not verified
//! again and presence probes (every 2 s) keep a peer's connection alive indefinitely: a revoked
//! peer would go on being trusted on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use docfed_http::tls::{Expect, Trust};

/// Builds one client accepting what an [`Expect`] describes.
pub type MakeClient = Box<dyn Fn(Expect) -> anyhow::Result<reqwest::Client> + Send + Sync>;

pub struct PeerClients {
    /// The CA and CRL the clients verify with; `None` without TLS (nothing to rebuild).
    trust: Option<Arc<Trust>>,
    peers: Vec<String>,
    make: MakeClient,
    current: Mutex<Clients>,
}

struct Clients {
    /// The CRL generation they were built under.
    generation: u64,
    any: reqwest::Client,
    by_node: HashMap<String, reqwest::Client>,
}

impl PeerClients {
    /// Clients for `peers` (node ids; none without TLS, where a node's identity is not checked).
    pub fn new(
        trust: Option<Arc<Trust>>,
        peers: Vec<String>,
        make: MakeClient,
    ) -> anyhow::Result<PeerClients> {
        let current = Mutex::new(build(trust.as_deref(), &peers, &make)?);
        Ok(PeerClients {
            trust,
            peers,
            make,
            current,
        })
    }

    /// The client for node `id` (for any node's URL with `None`), rebuilt first if the CRL
    /// changed since.
    pub fn for_node(&self, id: Option<&str>) -> reqwest::Client {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(trust) = &self.trust {
            if trust.generation() != c.generation {
                match build(Some(trust), &self.peers, &self.make) {
                    Ok(fresh) => *c = fresh,
                    // Not expected (they were built once); the old clients still check the CRL
                    // at every new connection.
                    Err(e) => tracing::error!(error = %e, "cannot rebuild the peers' HTTP clients"),
                }
            }
        }
        id.and_then(|id| c.by_node.get(id))
            .unwrap_or(&c.any)
            .clone()
    }
}

fn build(trust: Option<&Trust>, peers: &[String], make: &MakeClient) -> anyhow::Result<Clients> {
    Ok(Clients {
        // Read before building: a reload meanwhile makes the next call build again.
        generation: trust.map_or(0, Trust::generation),
        any: make(Expect::AnyNode)?,
        by_node: match trust {
            Some(_) => peers
                .iter()
                .map(|id| Ok((id.clone(), make(Expect::Node(id.clone()))?)))
                .collect::<anyhow::Result<_>>()?,
            None => HashMap::new(),
        },
    })
}
