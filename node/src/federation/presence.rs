//! Presence: who is up. Each node advertises `_docfed._tcp.local.` with mdns-sd (TXT: id, tier,
//! region, http) and browses for the others; because multicast does not cross WAN links and a
//! node killed with -9 sends no goodbye, every topology peer is also probed over HTTP
//! (`/v1/health`). The resulting table feeds `GET /v1/peers` and lets pulls skip sources that
//! are known to be down instead of waiting for their timeouts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use docfed_shared::presence::{SERVICE_TYPE, TXT_HTTP, TXT_ID, TXT_REGION, TXT_TIER};
use docfed_shared::wire::peers::PeerState;
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio_util::sync::CancellationToken;

use crate::supervisor::Task;
use crate::Node;

const PROBE_EVERY: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Most rows of servers outside the topology (found over mDNS only) the table keeps. Anyone on
/// the LAN can advertise `_docfed._tcp` under any number of names: beyond this, the row seen
/// longest ago goes. Topology peers are never evicted.
pub const MAX_DISCOVERED: usize = 64;
/// A server outside the topology unseen (no mDNS announcement) for this long is forgotten.
pub const DISCOVERED_TTL: Duration = Duration::from_secs(15 * 60);
/// Longest `http` URL taken from an advertisement.
const MAX_TXT_URL: usize = 512;

/// A row of the table: what `GET /v1/peers` shows (`PeerState`, whose `is_down` applies the
/// federation's `DOWN_AFTER`), and when the peer was last seen, from which the row's age is
/// computed at each snapshot.
#[derive(Debug, Clone, Default)]
struct Peer {
    state: PeerState,
    last_seen: Option<Instant>,
}

impl std::ops::Deref for Peer {
    type Target = PeerState;
    fn deref(&self) -> &PeerState {
        &self.state
    }
}

impl std::ops::DerefMut for Peer {
    fn deref_mut(&mut self) -> &mut PeerState {
        &mut self.state
    }
}

#[derive(Debug, Default)]
pub struct PeerTable {
    peers: Mutex<HashMap<String, Peer>>,
}

impl PeerTable {
    pub fn snapshot(&self) -> Vec<PeerState> {
        let mut v: Vec<PeerState> = self
            .peers
            .lock()
            .expect("not poisoned")
            .values()
            .map(|p| PeerState {
                last_seen_ms_ago: p.last_seen.map(|t| t.elapsed().as_millis() as u64),
                ..p.state.clone()
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Whether the node serving `url` is known to be down.
    pub fn is_down(&self, url: &str) -> bool {
        self.peers
            .lock()
            .expect("not poisoned")
            .values()
            .any(|p| p.http == url && p.is_down())
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Peer)) {
        let mut peers = self.peers.lock().expect("not poisoned");
        let p = peers.entry(id.to_owned()).or_insert_with(|| Peer {
            state: PeerState {
                id: id.to_owned(),
                ..PeerState::default()
            },
            last_seen: None,
        });
        f(p);
    }

    /// Records an mDNS announcement of a server outside the topology (a topology peer's row
    /// is only marked seen), keeping at most [`MAX_DISCOVERED`] such rows.
    fn discovered(&self, id: &str, tier: &str, region: Option<String>, http: &str) {
        let mut peers = self.peers.lock().expect("not poisoned");
        if let Some(p) = peers.get_mut(id) {
            p.mdns = true;
            p.last_seen = Some(Instant::now());
            if !p.in_topology {
                p.tier = tier.to_owned();
                p.region = region;
                p.http = http.to_owned();
            }
            return;
        }
        let outside = peers.values().filter(|p| !p.in_topology).count();
        if outside >= MAX_DISCOVERED {
            let oldest = peers
                .values()
                .filter(|p| !p.in_topology)
                .min_by_key(|p| p.last_seen)
                .map(|p| p.id.clone());
            if let Some(oldest) = oldest {
                peers.remove(&oldest);
            }
        }
        peers.insert(
            id.to_owned(),
            Peer {
                state: PeerState {
                    id: id.to_owned(),
                    tier: tier.to_owned(),
                    region,
                    http: http.to_owned(),
                    mdns: true,
                    ..PeerState::default()
                },
                last_seen: Some(Instant::now()),
            },
        );
    }

    /// A server said goodbye over mDNS: a topology peer's row keeps its probes, a row of a
    /// server outside the topology goes.
    fn gone(&self, id: &str) {
        let mut peers = self.peers.lock().expect("not poisoned");
        match peers.get_mut(id) {
            Some(p) if p.in_topology => p.mdns = false,
            Some(_) => {
                peers.remove(id);
            }
            None => {}
        }
    }

    /// Forgets servers outside the topology not announced for [`DISCOVERED_TTL`].
    fn expire(&self) {
        let mut peers = self.peers.lock().expect("not poisoned");
        peers.retain(|_, p| {
            p.in_topology || p.last_seen.is_some_and(|t| t.elapsed() < DISCOVERED_TTL)
        });
    }
}

/// The fields of an advertisement, when they are what a docfed node would send: anything
/// else (a made-up tier, a name no node can have, a URL that is not one) is ignored.
fn advertised(
    id: &str,
    tier: &str,
    region: &str,
    http: &str,
) -> Option<(String, Option<String>, String)> {
    let tier: docfed_shared::Tier = tier.parse().ok()?;
    if !docfed_shared::topology::is_valid_node_id(id) {
        return None;
    }
    let region = match region {
        "" => None,
        r if docfed_shared::topology::is_valid_node_id(r) => Some(r.to_owned()),
        _ => return None,
    };
    let url_ok = http.len() <= MAX_TXT_URL
        && reqwest::Url::parse(http)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    url_ok.then(|| (tier.to_string(), region, http.to_owned()))
}

/// Advertises this node, browses for peers and probes the topology's peers until cancelled.
pub async fn run(node: Arc<Node>, cancel: CancellationToken, task: Task) {
    task.running();
    let fed = node.federation().expect("federation").clone();
    for n in fed.topology.nodes.iter().filter(|n| n.id != fed.id()) {
        node.peers.update(&n.id, |p| {
            p.tier = n.tier.to_string();
            p.region = n.region.clone();
            p.http = fed.url(n);
            p.in_topology = true;
        });
    }
    let mdns = if node.config.mdns {
        start_mdns(&node, &fed)
    } else {
        None
    };
    let mut tick = tokio::time::interval(PROBE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                node.peers.expire();
                probe_all(&node).await
            }
            () = cancel.cancelled() => break,
        }
    }
    if let Some((daemon, fullname)) = mdns {
        // The goodbye lets peers drop us at once rather than after the TTL.
        if let Ok(rx) = daemon.unregister(&fullname) {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv_async()).await;
        }
        let _ = daemon.shutdown();
    }
}

fn start_mdns(node: &Arc<Node>, fed: &super::Federation) -> Option<(ServiceDaemon, String)> {
    let daemon = match ServiceDaemon::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "mDNS unavailable; relying on health probes");
            return None;
        }
    };
    let region = fed.me.region.clone().unwrap_or_default();
    let props = [
        (TXT_ID, fed.id().to_owned()),
        (TXT_TIER, fed.me.tier.to_string()),
        (TXT_REGION, region),
        (TXT_HTTP, fed.my_url()),
    ];
    let host = format!("{}.local.", fed.id());
    let info = match ServiceInfo::new(
        SERVICE_TYPE,
        fed.id(),
        &host,
        fed.me.http.ip(),
        fed.me.http.port(),
        &props[..],
    ) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "cannot build mDNS record");
            return None;
        }
    };
    let fullname = info.get_fullname().to_owned();
    if let Err(e) = daemon.register(info) {
        tracing::warn!(error = %e, "cannot advertise over mDNS");
    }
    match daemon.browse(SERVICE_TYPE) {
        Ok(rx) => {
            let node_ref = node.clone();
            let me = fed.id().to_owned();
            node.supervisor
                .watched("mdns browser", move |task| async move {
                    let node = node_ref;
                    task.running();
                    while let Ok(event) = rx.recv_async().await {
                        match event {
                            ServiceEvent::ServiceResolved(s) => {
                                let txt = |k: &str| {
                                    s.txt_properties.get_property_val_str(k).unwrap_or("")
                                };
                                let id = txt(TXT_ID);
                                if id == me {
                                    continue;
                                }
                                match advertised(id, txt(TXT_TIER), txt(TXT_REGION), txt(TXT_HTTP))
                                {
                                    Some((tier, region, http)) => {
                                        node.peers.discovered(id, &tier, region, &http)
                                    }
                                    None => tracing::debug!(
                                        service = %s.fullname,
                                        "ignoring an mDNS advertisement that is not a docfed node's"
                                    ),
                                }
                            }
                            ServiceEvent::ServiceRemoved(_, fullname) => {
                                let id = fullname.split('.').next().unwrap_or("");
                                node.peers.gone(id);
                            }
                            _ => {}
                        }
                    }
                });
        }
        Err(e) => tracing::warn!(error = %e, "cannot browse mDNS"),
    }
    Some((daemon, fullname))
}

async fn probe_all(node: &Arc<Node>) {
    let targets: Vec<(String, String)> = node
        .peers
        .snapshot()
        .into_iter()
        .filter(|p| p.in_topology)
        .map(|p| {
            let dial = node
                .federation()
                .map_or_else(|| p.http.clone(), |f| f.dial(&p.http).into_owned());
            (p.id, dial)
        })
        .collect();
    let probes = targets.into_iter().map(|(id, url)| {
        let http = node.http.for_node(Some(&id));
        async move {
            let outcome = match http
                .get(format!("{url}/v1/health"))
                .timeout(PROBE_TIMEOUT)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("health answers HTTP {}", r.status())),
                Err(e) if e.is_timeout() => Err("health probe timed out".to_owned()),
                Err(e) if e.is_connect() => Err("connection refused or unreachable".to_owned()),
                Err(_) => Err("health probe failed".to_owned()),
            };
            (id, outcome)
        }
    });
    for (id, outcome) in futures::future::join_all(probes).await {
        let ok = outcome.is_ok();
        node.peers.update(&id, |p| {
            let was_down = p.is_down();
            p.healthy = Some(ok);
            if ok {
                p.failed_probes = 0;
                p.last_seen = Some(Instant::now());
                p.last_error = None;
            } else {
                p.failed_probes = p.failed_probes.saturating_add(1);
                p.last_error = outcome.err();
            }
            if was_down != p.is_down() {
                tracing::info!(peer = %id, up = !p.is_down(), "peer state changed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_advertisements_keeps_the_table_bounded_and_topology_rows() {
        let table = PeerTable::default();
        table.update("mid-1", |p| p.in_topology = true);
        for i in 0..10_000 {
            table.discovered(
                &format!("rogue-{i}"),
                "regional",
                None,
                "http://192.0.2.1:1",
            );
        }
        let rows = table.snapshot();
        assert_eq!(rows.len(), MAX_DISCOVERED + 1);
        assert!(rows.iter().any(|p| p.id == "mid-1" && p.in_topology));
        // The newest announcements are the ones kept.
        assert!(rows.iter().any(|p| p.id == "rogue-9999"));
        assert!(!rows.iter().any(|p| p.id == "rogue-0"));
        table.gone("rogue-9999");
        table.gone("mid-1");
        let rows = table.snapshot();
        assert!(!rows.iter().any(|p| p.id == "rogue-9999"));
        assert!(rows.iter().any(|p| p.id == "mid-1"), "a topology row stays");
    }

    #[test]
    fn only_what_a_node_would_advertise_is_taken() {
        let ok = advertised("na", "regional", "na", "https://192.0.2.1:7121");
        assert_eq!(
            ok,
            Some((
                "regional".to_owned(),
                Some("na".to_owned()),
                "https://192.0.2.1:7121".to_owned()
            ))
        );
        assert!(advertised("na", "emperor", "", "http://x:1").is_none());
        assert!(advertised("../../x", "regional", "", "http://x:1").is_none());
        assert!(advertised(&"n".repeat(500), "regional", "", "http://x:1").is_none());
        assert!(advertised("na", "regional", "", "javascript:alert(1)").is_none());
        let long = format!("http://x/{}", "a".repeat(MAX_TXT_URL));
        assert!(advertised("na", "regional", "", &long).is_none());
    }
}
