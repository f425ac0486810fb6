//! A federation whose links use TLS (ARCHITECTURE.md §2.10): documents travel over HTTPS with
//! mutual authentication between nodes; users' endpoints need only the CA; pulls need a node's
//! certificate; a revoked node is refused without restarting anyone.

use std::path::Path;
use std::process::Command;

use super::*;
use crate::common::federation::ROLES;

/// `curl` (a real third-party client) against `url`: the HTTP status, or `Err` with curl's exit
/// code and message when no HTTP answer came (a refused handshake, an unverified server).
fn curl(url: &str, ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<u16, String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    if let Some((cert, key)) = identity {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.arg(url).output().map_err(|e| e.to_string())?;
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<u16>()
        .unwrap_or(0);
    if out.status.success() && code != 0 {
        Ok(code)
    } else {
        Err(format!(
            "curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[tokio::test]
async fn documents_travel_over_mutual_tls_and_a_revoked_node_is_locked_out() -> TestResult {
    let fed = Federation::start_tls(&[]).await?;
    let certs = fed
        .certs
        .clone()
        .expect("a TLS federation has certificates");
    let ca = certs.ca();
    // A user's client: it trusts the federation CA and has no certificate.
    let user = docfed_http::tls::reqwest_trusting(Some(&ca))?.build()?;
    for role in ROLES {
        assert!(
            fed.node(role).url("").starts_with("https://"),
            "{role} serves HTTPS"
        );
    }

    // Publication reaches every regional node, pulled over mutual TLS at every hop.
    let body = pattern(21, 2_000_000);
    let (id, md5) = publish_over_tls(&user, &fed, "Over%20TLS", &body).await?;
    await_everywhere(&user, &fed, &id, &body).await?;

    let object = fed.node("na").url(&format!("/v1/objects/{md5}"));
    let (mid1_cert, mid1_key) = certs.node(&fed.id("mid-1"));
    // curl without the CA does not trust the node; plain HTTP gets no answer from it.
    assert!(curl(&fed.node("na").url("/v1/health"), None, None).is_err());
    let plain = fed
        .node("na")
        .url("/v1/health")
        .replacen("https", "http", 1);
    assert!(
        curl(&plain, None, None).is_err(),
        "plain HTTP is not served"
    );
    // Users' endpoints need only the CA; a pull needs a node's certificate.
    assert_eq!(
        curl(&fed.node("na").url("/v1/health"), Some(&ca), None),
        Ok(200)
    );
    assert_eq!(curl(&object, Some(&ca), None), Ok(403));
    assert_eq!(
        curl(&object, Some(&ca), Some((&mid1_cert, &mid1_key))),
        Ok(200)
    );
    // A node may not claim to be another in the pull's node header.
    let claimed = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(&mid1_cert)
        .arg("--key")
        .arg(&mid1_key)
        .args([
            "-H",
            &format!(
                "{}: {}",
                docfed_shared::keys::PULL_NODE_HEADER,
                fed.id("mid-2")
            ),
        ])
        .arg(&object)
        .output()?;
    assert_eq!(String::from_utf8_lossy(&claimed.stdout), "403");

    // A certificate of another CA with the same node id is refused at the handshake.
    let other = tempfile::tempdir()?;
    let stranger = topology::certs::CertDir(other.path().to_owned());
    let topo = docfed_shared::Topology::load(&fed_topology(&fed))?;
    topology::certs::generate(&topo, &stranger, &Default::default())?;
    let (fake_cert, fake_key) = stranger.node(&fed.id("mid-1"));
    assert!(curl(&object, Some(&ca), Some((&fake_cert, &fake_key))).is_err());

    // Revoking mid-1: within seconds, without a restart, its certificate no longer opens a
    // connection to its peers, and it pulls nothing more. (`revoke` takes the files away; the
    // running node keeps presenting the certificate it loaded, as would a stolen copy.)
    let copy = tempfile::tempdir()?;
    let (old_cert, old_key) = (copy.path().join("mid-1.pem"), copy.path().join("mid-1.key"));
    std::fs::copy(&mid1_cert, &old_cert)?;
    std::fs::copy(&mid1_key, &old_key)?;
    topology::certs::revoke(&topo, &certs, &fed.id("mid-1"))?;
    let primary_object = fed.node("primary-a").url(&format!("/v1/objects/{md5}"));
    wait_until_async(
        T,
        "the primaries refuse mid-1's revoked certificate",
        || async {
            curl(&primary_object, Some(&ca), Some((&old_cert, &old_key)))
                .is_err()
                .then_some(())
        },
    )
    .await?;
    for role in ["primary-b", "mid-2", "na"] {
        let url = fed.node(role).url(&format!("/v1/objects/{md5}"));
        wait_until_async(T, &format!("{role} refuses mid-1"), || async {
            curl(&url, Some(&ca), Some((&old_cert, &old_key)))
                .is_err()
                .then_some(())
        })
        .await?;
    }
    // The others are unaffected: mid-2's certificate still pulls.
    let (mid2_cert, mid2_key) = certs.node(&fed.id("mid-2"));
    assert_eq!(
        curl(&primary_object, Some(&ca), Some((&mid2_cert, &mid2_key))),
        Ok(200)
    );

    // A document published now reaches the regional nodes through mid-2; mid-1, whose pulls
    // are refused, never holds its content.
    let body2 = pattern(22, 500_000);
    let (id2, md5_2) = publish_over_tls(&user, &fed, "After%20revocation", &body2).await?;
    await_everywhere(&user, &fed, &id2, &body2).await?;
    let at_mid1 = auth(user.get(fed.node("mid-1").url(&format!("/v1/objects/{md5_2}"))))
        .send()
        .await?
        .status();
    assert_ne!(at_mid1, StatusCode::OK, "mid-1 pulled after its revocation");
    Ok(())
}

/// Publishes `body` at primary-a over HTTPS; its id and MD5.
async fn publish_over_tls(
    user: &reqwest::Client,
    fed: &Federation,
    title: &str,
    body: &[u8],
) -> TestResult<(String, String)> {
    let url = fed
        .node("primary-a")
        .url(&format!("/v1/documents?title={title}"));
    let resp = auth(user.post(url)).body(body.to_vec()).send().await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let doc: Value = resp.json().await?;
    Ok((
        doc["id"].as_str().unwrap().to_owned(),
        doc["md5"].as_str().unwrap().to_owned(),
    ))
}

/// Waits until every regional node serves document `id`, then checks its bytes.
async fn await_everywhere(
    user: &reqwest::Client,
    fed: &Federation,
    id: &str,
    body: &[u8],
) -> TestResult {
    for role in ["na", "eu", "asia"] {
        let url = fed.node(role).url(&format!("/v1/documents/{id}/content"));
        wait_until_async(T, &format!("{role} serves {id}"), || async {
            let r = user.get(&url).send().await.ok()?;
            (r.status() == StatusCode::OK).then_some(())
        })
        .await?;
        let got = user.get(&url).send().await?.bytes().await?;
        assert!(got == body, "{role}: content of {id} differs");
    }
    Ok(())
}

/// The topology file the federation's nodes read.
fn fed_topology(fed: &Federation) -> std::path::PathBuf {
    fed.topology_file()
}
