//! Presence under a flood: anyone on the LAN may advertise `_docfed._tcp` under any number of
//! names; the peers table stays bounded, keeps every topology peer, and ignores advertisements
//! no docfed node would send.

use mdns_sd::{ServiceDaemon, ServiceInfo};

use super::*;

/// Rogue advertisements: more than the table keeps.
const ROGUES: usize = 100;
/// The most rows of servers outside the topology a node keeps (`presence::MAX_DISCOVERED`).
const MAX_DISCOVERED: usize = 64;

/// A host on the LAN advertising services; unregisters them and stops when dropped.
struct Advertiser {
    daemon: ServiceDaemon,
    names: Vec<String>,
}

impl Advertiser {
    fn new() -> TestResult<Self> {
        Ok(Advertiser {
            daemon: ServiceDaemon::new()?,
            names: Vec::new(),
        })
    }

    fn advertise(&mut self, instance: &str, txt: &[(&str, &str)]) -> TestResult {
        let info = ServiceInfo::new(
            docfed_shared::presence::SERVICE_TYPE,
            instance,
            &format!("{instance}.local."),
            "127.0.0.1",
            9,
            txt,
        )?;
        self.names.push(info.get_fullname().to_owned());
        // The daemon's command queue is bounded: a burst of registrations meets `Again` when
        // it is full, which clears as the daemon works through it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match self.daemon.register(info.clone()) {
                Err(mdns_sd::Error::Again) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return Ok(other?),
            }
        }
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.daemon.unregister(name);
        }
        let _ = self.daemon.shutdown();
    }
}

#[tokio::test]
async fn a_flood_of_mdns_advertisements_leaves_the_peers_table_bounded() -> TestResult {
    use docfed_shared::presence::{TXT_HTTP, TXT_ID, TXT_REGION, TXT_TIER};
    let fed = Federation::start(&[]).await?;
    let mut lan = Advertiser::new()?;
    // Names no node can have, a made-up tier, a URL that is not one: ignored outright.
    lan.advertise(
        "bad-id",
        &[
            (TXT_ID, "../etc"),
            (TXT_TIER, "regional"),
            (TXT_HTTP, "http://127.0.0.1:9"),
        ],
    )?;
    lan.advertise(
        "bad-tier",
        &[
            (TXT_ID, "bad-tier"),
            (TXT_TIER, "emperor"),
            (TXT_HTTP, "http://127.0.0.1:9"),
        ],
    )?;
    lan.advertise(
        "bad-url",
        &[
            (TXT_ID, "bad-url"),
            (TXT_TIER, "regional"),
            (TXT_HTTP, "javascript:alert(1)"),
        ],
    )?;
    for i in 0..ROGUES {
        let id = format!("rogue-{i}");
        lan.advertise(
            &id,
            &[
                (TXT_ID, &id),
                (TXT_TIER, "regional"),
                (TXT_REGION, "na"),
                (TXT_HTTP, "http://127.0.0.1:9"),
            ],
        )?;
    }
    let topology_peers = ROLES.len() - 1;
    let na = fed.node("na").url("/v1/peers");
    // The table fills up to its bound with rogues, however many more are announced.
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    wait_until_async(T, "na to fill its table of discovered servers", || {
        let na = na.clone();
        let most = most.clone();
        async move {
            let p: Value = client().get(&na).json_or_none().await?;
            let rows = p["peers"].as_array()?;
            // Other tests' federations advertise on this host too: they count among the
            // servers outside this topology like the rogues do.
            let outside = rows.iter().filter(|r| r["in_topology"] == false).count();
            let rogues = rows
                .iter()
                .filter(|r| r["id"].as_str().is_some_and(|id| id.starts_with("rogue-")))
                .count();
            most.fetch_max(rows.len(), std::sync::atomic::Ordering::SeqCst);
            (outside == MAX_DISCOVERED && rogues > 0).then_some(())
        }
    })
    .await?;
    let p: Value = client().get(&na).send().await?.json().await?;
    let rows = p["peers"].as_array().ok_or("peers")?;
    for role in ROLES.iter().filter(|r| **r != "na") {
        let id = fed.id(role);
        assert!(
            rows.iter()
                .any(|r| r["id"] == id.as_str() && r["in_topology"] == true),
            "topology peer {role} must stay in the table: {p}"
        );
    }
    for bad in ["../etc", "bad-tier", "bad-url"] {
        assert!(
            !rows.iter().any(|r| r["id"] == bad),
            "{bad} must be ignored: {p}"
        );
    }
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        most <= topology_peers + MAX_DISCOVERED,
        "the table held {most} rows at one point; at most {} expected",
        topology_peers + MAX_DISCOVERED
    );
    Ok(())
}
