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
            _ = tick.tick() => probe_all(&node).await,
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
                                let Some(id) = s
                                    .txt_properties
                                    .get_property_val_str(TXT_ID)
                                    .map(str::to_owned)
                                else {
                                    continue;
                                };
                                if id == me {
                                    continue;
                                }
                                let txt = |k: &str| {
                                    s.txt_properties
                                        .get_property_val_str(k)
                                        .unwrap_or("")
                                        .to_owned()
                                };
                                node.peers.update(&id, |p| {
                                    p.mdns = true;
                                    p.last_seen = Some(Instant::now());
                                    if !p.in_topology {
                                        p.tier = txt(TXT_TIER);
                                        p.region = Some(txt(TXT_REGION)).filter(|r| !r.is_empty());
                                        p.http = txt(TXT_HTTP);
                                    }
                                });
                            }
                            ServiceEvent::ServiceRemoved(_, fullname) => {
                                let id = fullname.split('.').next().unwrap_or("").to_owned();
                                node.peers.update(&id, |p| p.mdns = false);
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
