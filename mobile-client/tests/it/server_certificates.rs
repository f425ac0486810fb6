//! Issue 39, item 4, performed against real nodes: the command line trusts, of the federation
//! CA's certificates, only a node's, and not once the CRL beside the CA revokes it.

use crate::common::*;

/// A standalone node serving HTTPS with `cert`/`key` (of the CA in `certs`).
async fn serving(
    dir: &std::path::Path,
    (cert, key): (std::path::PathBuf, std::path::PathBuf),
) -> TestResult<Standalone> {
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    Standalone::start_with(dir, &args).await
}

/// The demo topology with node ids prefixed by `prefix`, and its certificates in `dir/certs`.
fn demo_certs(
    dir: &std::path::Path,
    prefix: &str,
) -> TestResult<(docfed_shared::Topology, topology::certs::CertDir)> {
    let topo = docfed_shared::Topology::parse(&topology::demo::toml(
        prefix,
        &topology::demo::free_ports()?,
        None,
        |_| None,
    ))?;
    let certs = topology::certs::CertDir(dir.join("certs"));
    topology::certs::generate(&topo, &certs, &Default::default())?;
    Ok((topo, certs))
}

#[tokio::test]
async fn a_revoked_node_or_a_server_that_is_no_node_is_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (topo, certs) = demo_certs(tmp.path(), "rv")?;
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();
    let node = serving(&tmp.path().join("node"), certs.node("rv-na")).await?;
    let search = |url: &str| docfed(&["--ca", ca, "--server", url, "--json", "search", "x"]);
    ok(&search(&node.url));

    // The portal's certificate chains to the same CA, but it is not a node's: a server
    // presenting it is not believed to be one.
    let portal = serving(&tmp.path().join("portal"), certs.portal()).await?;
    let refused = search(&portal.url);
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");

    // Revoked: crl.pem beside the CA now lists the node, and the command line loads it.
    topology::certs::revoke(&topo, &certs, "rv-na")?;
    let refused = search(&node.url);
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.to_lowercase().contains("revoked"), "{said}");
    Ok(())
}

/// `register --ca` pins the revocation list beside the CA with it: a later command run without
/// `--ca` (the pinned CA) still refuses a node revoked when the device registered.
#[tokio::test]
async fn the_crl_is_pinned_with_the_ca_at_registration() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (topo, certs) = demo_certs(tmp.path(), "rp")?;
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();
    let revoked = serving(&tmp.path().join("na"), certs.node("rp-na")).await?;
    let home = serving(&tmp.path().join("eu"), certs.node("rp-eu")).await?;
    topology::certs::revoke(&topo, &certs, "rp-na")?;
    let config = tmp.path().join("config");
    ok(&docfed_with_config(
        &config,
        &[
            "--ca", ca, "--server", &home.url, "--json", "register", "--token", TOKEN,
        ],
    ));
    assert!(config.join("docfed").join("crl.pem").is_file());
    // Pinned, not given: the revoked node is still refused.
    let refused = docfed_with_config(
        &config,
        &["--server", &revoked.url, "--json", "search", "x"],
    );
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.to_lowercase().contains("revoked"), "{said}");
    ok(&docfed_with_config(
        &config,
        &["--server", &home.url, "--json", "search", "x"],
    ));
    Ok(())
}
