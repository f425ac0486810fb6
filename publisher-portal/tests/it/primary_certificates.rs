//! Issue 39, item 4, performed against real processes: the portal checks the federation's CRL
//! (the topology's `[tls] crl`, followed as it changes), so a revoked primary is refused
//! without restarting the portal, while the other stays in use.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// The portal's view of primary `name` (`/healthz`): whether it is up, and why not.
async fn primary(env: &Env, name: &str) -> TestResult<(Option<bool>, String)> {
    let health: Value = env
        .nodes_http
        .get(env.url("/healthz"))
        .send()
        .await?
        .json()
        .await?;
    let p = health["primaries"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .ok_or_else(|| format!("no primary {name} in {health}"))?;
    Ok((
        p["up"].as_bool(),
        p["error"].as_str().unwrap_or("").to_owned(),
    ))
}

#[tokio::test]
async fn a_revoked_primary_is_refused_by_the_portal() -> TestResult {
    let env = Env::start_tls(&[]).await?;
    let (pa, pb) = (env.id("pa"), env.id("pb"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while primary(&env, &pa).await?.0 != Some(true) || primary(&env, &pb).await?.0 != Some(true) {
        if Instant::now() > deadline {
            return Err("the portal never saw both primaries up".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // pa keeps running and presenting the certificate it loaded; the portal has connections
    // to it open, verified before the revocation.
    let certs = topology::certs::CertDir(env.tmp.path().join("run").join("certs"));
    let topology = docfed_shared::Topology::load(env.fed.topology_file())?;
    topology::certs::revoke(&topology, &certs, &pa)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let why = loop {
        let (up, why) = primary(&env, &pa).await?;
        if up == Some(false) {
            break why;
        }
        if Instant::now() > deadline {
            return Err("the portal still trusts the revoked primary".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(why.to_lowercase().contains("revoked"), "{why}");
    assert_eq!(primary(&env, &pb).await?.0, Some(true), "pb is not revoked");
    Ok(())
}
