use std::time::{Duration, Instant};

use crate::common::*;

async fn await_available(url: &str, id: &str, field: &str) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = docfed_http::tls::get(format!("{url}/v1/documents/{id}")).await {
            if r.status().is_success() {
                let v: serde_json::Value = r.json().await?;
                if field.is_empty() || v[field] == true {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{id} not ready at {url}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn search_and_fetch_across_regions_from_every_regional_node() -> TestResult {
    let fed = Fed::start().await?;
    let primary = fed.url("primary-a");
    let token = fed.token();
    let mut docs = Vec::new();
    for (i, scope) in ["global", "region:na", "region:eu", "region:asia"]
        .iter()
        .enumerate()
    {
        let body = pattern(i as u64, 300_000 + i * 1000);
        let title = format!("Lighthouse%20report%20{}", scope.replace(':', "-"));
        let id = publish(
            &primary,
            &token,
            &format!("title={title}&scope={scope}&filename=r{i}.bin&tags=coast"),
            body.clone(),
        )
        .await?;
        docs.push((id, *scope, body));
    }
    for role in ["na", "eu", "asia"] {
        let url = fed.url(role);
        for (id, _, _) in &docs {
            await_available(&url, id, "").await?;
        }
        let out = docfed(&["--server", &url, "--json", "search", "lighthouse"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = stdout_json(&out);
        let mut found: Vec<&str> = v["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        found.sort();
        let mut expected: Vec<&str> = docs.iter().map(|(id, _, _)| id.as_str()).collect();
        expected.sort();
        assert_eq!(found, expected, "{role} sees the complete directory");
        let human = docfed(&["--server", &url, "search", "lighthouse", "--region", "eu"]);
        let text = String::from_utf8_lossy(&human.stdout);
        assert!(
            text.contains("region:eu") && !text.contains("region:na"),
            "{text}"
        );
    }
    // Each regional node lacks one region's content (held by that region and its backup): na
    // lacks eu's, eu lacks asia's, asia lacks na's. Each fetches it byte-exact through.
    let tmp = tempfile::tempdir()?;
    for (role, doc) in [("na", 2), ("eu", 3), ("asia", 1)] {
        let (id, scope, body) = &docs[doc];
        let url = fed.url(role);
        let meta: serde_json::Value = docfed_http::tls::get(format!("{url}/v1/documents/{id}"))
            .await?
            .json()
            .await?;
        assert_eq!(
            meta["available_here"], false,
            "{scope} content is not {role}'s"
        );
        let out_path = tmp
            .path()
            .join(format!("{role}-{}.bin", scope.replace(':', "-")));
        let out = docfed(&[
            "--server",
            &url,
            "--json",
            "fetch",
            id,
            "-o",
            out_path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "fetch {scope} at {role}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout_json(&out)["md5"],
            format!("{:x}", md5::compute(body))
        );
        assert!(
            std::fs::read(&out_path)? == *body,
            "{scope} content differs"
        );
    }
    // Flags keep a document's content on the regional node, for a device registered there.
    let (eu_doc, _, _) = &docs[2];
    let na = fed.url("na");
    let config = tmp.path().join("config");
    let out = docfed_with_config(
        &config,
        &["--server", &na, "--json", "register", "--token", &token],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = docfed_with_config(&config, &["--server", &na, "--json", "flag", eu_doc]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    await_available(&na, eu_doc, "available_here").await?;
    let out = docfed_with_config(&config, &["--server", &na, "--json", "flags"]);
    assert_eq!(stdout_json(&out)["documents"][0]["id"], eu_doc.as_str());
    // Unflagged: na no longer keeps content out of its scope.
    let out = docfed_with_config(&config, &["--server", &na, "--json", "unflag", eu_doc]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["objects_released"], 1);
    await_available(&na, eu_doc, "").await?;
    let meta: serde_json::Value = docfed_http::tls::get(format!("{na}/v1/documents/{eu_doc}"))
        .await?
        .json()
        .await?;
    assert_eq!(meta["available_here"], false);
    Ok(())
}

#[tokio::test]
async fn errors_have_their_exit_codes_and_fts_syntax_is_harmless() -> TestResult {
    let tmp = tempfile::tempdir()?;
    // Content kept as files (not in the database), so the test can corrupt it on disk below.
    let node =
        Standalone::start_with(&tmp.path().join("node"), &["--small-object-max", "0"]).await?;
    let id = publish(
        &node.url,
        TOKEN,
        "title=Plain%20text&filename=a.txt",
        b"hello".to_vec(),
    )
    .await?;
    for q in [
        &["\""][..],
        &["NEAR"],
        &["*"],
        &["--", "-x"],
        &["a", "OR", "b"],
        &["title:x"],
        &["(", ")"],
        &["'; DROP TABLE documents; --"],
    ] {
        let mut args = vec!["--server", &node.url, "--json", "search"];
        args.extend_from_slice(q);
        let out = docfed(&args);
        assert!(
            out.status.success(),
            "{q:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout_json(&out);
    }
    let out = docfed(&[
        "--server",
        &node.url,
        "info",
        "01890a5d-ac96-774b-bcce-b302099a8057",
    ]);
    assert_eq!(out.status.code(), Some(3), "unknown id");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // A malformed id is a usage error, caught before any request.
    for cmd in ["info", "fetch", "versions", "flag", "unflag"] {
        let out = docfed(&["--server", "http://127.0.0.1:9", cmd, "not-an-id"]);
        assert_eq!(out.status.code(), Some(2), "{cmd} with a malformed id");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a document id"));
    }
    let out = docfed(&["--server", "http://127.0.0.1:9", "info", &id]);
    assert_eq!(out.status.code(), Some(4), "unreachable");
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://127.0.0.1:9"));
    let out = docfed(&["--fallbacks", "http://127.0.0.1:9", "info", &id]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mDNS") && err.contains("http://127.0.0.1:9"),
        "says what it tried: {err}"
    );
    let out = docfed(&["--server", &node.url, "--json", "info", &id]);
    assert!(out.status.success());
    assert_eq!(stdout_json(&out)["title"], "Plain text");
    let out = docfed(&["completions", "bash"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("docfed"));

    // An earlier version by number; a version that does not exist is "not found".
    let resp = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client")
        .put(format!("{}/v1/documents/{id}", node.url))
        .bearer_auth(TOKEN)
        .body("hello, again")
        .send()
        .await?;
    assert!(resp.status().is_success());
    let v1 = tmp.path().join("v1.txt");
    let out = docfed(&[
        "--server",
        &node.url,
        "fetch",
        &id,
        "--version",
        "1",
        "-o",
        v1.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&v1)?, b"hello");
    let out = docfed(&["--server", &node.url, "fetch", &id, "--version", "7"]);
    assert_eq!(out.status.code(), Some(3), "no such version");

    // Corrupted bytes on the server (the current version's): verification fails, nothing at
    // the output path.
    let v: serde_json::Value = docfed_http::tls::get(format!("{}/v1/documents/{id}", node.url))
        .await?
        .json()
        .await?;
    let md5 = v["md5"].as_str().unwrap();
    std::fs::write(
        node.dir.join("objects").join(&md5[..2]).join(md5),
        b"HELLO, AGAIN",
    )?;
    let dest = tmp.path().join("out.txt");
    let out = docfed(&[
        "--server",
        &node.url,
        "fetch",
        &id,
        "-o",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dest.exists(), "nothing may be left at the output path");
    Ok(())
}

#[tokio::test]
async fn an_interrupted_fetch_resumes_without_downloading_again() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut node = Standalone::start(&tmp.path().join("node")).await?;
    let size = 300 * 1024 * 1024;
    let body = pattern(99, size);
    let id = publish(
        &node.url,
        TOKEN,
        "title=Large&filename=large.bin",
        body.clone(),
    )
    .await?;
    let dest = tmp.path().join("large.bin");
    let part = tmp.path().join("large.bin.docfed-part");
    let mut child = docfed_child(&[
        "--server",
        &node.url,
        "fetch",
        &id,
        "-o",
        dest.to_str().unwrap(),
        "--retries",
        "0",
        "--quiet",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        let len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if len > size as u64 / 10 {
            node.kill();
            break len;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the fetch never got going".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let status = child.wait()?;
    if status.success() {
        return Err(
            format!("fetch finished before the node was killed ({killed_at} bytes seen)").into(),
        );
    }
    assert_eq!(status.code(), Some(4), "a cut transfer is a network error");
    assert!(!dest.exists());
    let kept = std::fs::metadata(&part)?.len();
    assert!(kept >= killed_at, "partial file kept");

    node.restart().await?;
    let out = docfed(&[
        "--server",
        &node.url,
        "--json",
        "fetch",
        &id,
        "-o",
        dest.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&out);
    assert_eq!(v["resumed_from"].as_u64(), Some(kept));
    assert_eq!(
        v["bytes_downloaded"].as_u64(),
        Some(size as u64 - kept),
        "only the rest was downloaded"
    );
    assert!(std::fs::read(&dest)? == body);
    assert!(!part.exists());
    Ok(())
}

#[tokio::test]
async fn a_device_registers_once_per_node_and_flags_with_its_secret() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let node = Standalone::start(&tmp.path().join("node")).await?;
    let id = publish(&node.url, TOKEN, "title=Flag%20me", b"flag me".to_vec()).await?;
    let config = tmp.path().join("config");
    let run = |args: &[&str]| {
        let mut all = vec!["--server", node.url.as_str()];
        all.extend_from_slice(args);
        docfed_with_config(&config, &all)
    };
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // Not registered: flags are refused before any request, saying how to register.
    for cmd in [&["flag", id.as_str()][..], &["unflag", &id], &["flags"]] {
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(6), "{cmd:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("docfed --server"), "{}", stderr(&out));
        assert!(stderr(&out).contains("register"), "{}", stderr(&out));
    }
    // Registration needs the operator token here.
    let out = run(&["register"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("--token"), "{}", stderr(&out));
    let out = run(&[
        "--json",
        "register",
        "--name",
        "test phone",
        "--token",
        TOKEN,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = stdout_json(&out);
    assert_eq!(v["new"], true);
    let device = v["device"].as_str().unwrap().to_owned();
    let file = config.join("docfed").join("devices.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "devices.json holds secrets");
    }
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    let secret = kept["servers"][node.url.as_str()]["secret"]
        .as_str()
        .ok_or("no secret kept")?
        .to_owned();
    assert_eq!(
        kept["servers"][node.url.as_str()]["device"],
        device.as_str()
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&secret),
        "the secret is printed"
    );
    // Registering again is a no-op while the node accepts the secret.
    let out = run(&["--json", "register"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout_json(&out)["new"], false);
    assert_eq!(stdout_json(&out)["device"], device.as_str());

    let out = run(&["--json", "flag", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["--json", "flags"]);
    assert_eq!(stdout_json(&out)["documents"][0]["id"], id.as_str());
    let out = run(&["--json", "unflag", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["--json", "flags"]);
    assert_eq!(
        stdout_json(&out)["documents"].as_array().map(Vec::len),
        Some(0)
    );

    // Revoked by the operator: refused, with how to come back; registering again works.
    let resp = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client")
        .delete(format!("{}/v1/devices/{device}", node.url))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert!(resp.status().is_success());
    let out = run(&["flag", &id]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("register it again"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--json", "register", "--token", TOKEN]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = stdout_json(&out);
    assert_eq!(v["new"], true);
    assert_ne!(v["device"], device.as_str());
    let out = run(&["--json", "flag", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    Ok(())
}

/// `docfed annotations`: an annotation's state by its id, a document's accepted annotations by
/// the document's id.
#[tokio::test]
async fn a_reader_sees_what_the_author_decided_on_an_annotation() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let node = Standalone::start(&tmp.path().join("node")).await?;
    let id = publish(&node.url, TOKEN, "title=Charts", pattern(1, 100)).await?;
    let sent = ok(&docfed(&[
        "--server",
        &node.url,
        "--json",
        "annotate",
        &id,
        "--text",
        "地図の凡例が逆です",
        "--author",
        "reader",
    ]));
    let aid = sent["id"].as_str().ok_or("no annotation id")?.to_owned();
    let a = ok(&docfed(&[
        "--server",
        &node.url,
        "--json",
        "annotations",
        &aid,
    ]));
    assert_eq!(a["state"], "pending", "{a}");
    let none = ok(&docfed(&[
        "--server",
        &node.url,
        "--json",
        "annotations",
        &id,
    ]));
    assert_eq!(
        none["annotations"].as_array().map(Vec::len),
        Some(0),
        "{none}"
    );

    send(
        docfed_http::tls::client_builder()
            .build()
            .expect("HTTP client")
            .post(format!("{}/v1/annotations/{aid}/accept", node.url))
            .bearer_auth(TOKEN),
    )
    .await?;
    let a = ok(&docfed(&[
        "--server",
        &node.url,
        "--json",
        "annotations",
        &aid,
    ]));
    assert_eq!(a["state"], "accepted", "{a}");
    assert!(a["decided"].is_string(), "{a}");
    let listed = ok(&docfed(&[
        "--server",
        &node.url,
        "--json",
        "annotations",
        &id,
    ]));
    assert_eq!(
        listed["annotations"][0]["text"], "地図の凡例が逆です",
        "{listed}"
    );
    let human = docfed(&["--server", &node.url, "annotations", &aid]);
    assert!(human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("accepted") && text.contains("地図の凡例が逆です"),
        "{text}"
    );
    // An id that is neither: not found, exit 1 (as for a missing document).
    let missing = docfed(&[
        "--server",
        &node.url,
        "annotations",
        "01890a5d-ac96-774b-bcce-b302099a8057",
    ]);
    assert!(!missing.status.success());
    Ok(())
}

/// Against an HTTPS node the command line trusts only the CA it is given (`--ca`, `DOCFED_CA`):
/// without it the server is refused and the error says why; with it everything works.
#[tokio::test]
async fn an_https_server_is_trusted_through_the_federation_ca_only() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (node, topo, certs) = https_node(tmp.path()).await?;
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();

    let refused = docfed(&["--server", &node.url, "--json", "search", "anything"]);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "a network error: {refused:?}"
    );
    let via_fallback = docfed(&[
        "--no-mdns",
        "--fallbacks",
        &node.url,
        "--json",
        "search",
        "anything",
    ]);
    assert_eq!(via_fallback.status.code(), Some(4));
    let said = String::from_utf8_lossy(&via_fallback.stderr);
    assert!(
        said.contains("not trusted") && said.contains("--ca"),
        "{said}"
    );

    let out = ok(&docfed(&[
        "--ca", ca, "--server", &node.url, "--json", "search", "anything",
    ]));
    assert!(out["documents"].as_array().is_some(), "{out}");
    let bad_ca = docfed(&[
        "--ca",
        "/nonexistent/ca.pem",
        "--server",
        &node.url,
        "search",
        "x",
    ]);
    assert_eq!(bad_ca.status.code(), Some(1), "a local error: {bad_ca:?}");

    // Registering with --ca pins the CA: later commands need no --ca, and refuse another CA.
    let config = tmp.path().join("config");
    let registered = docfed_with_config(
        &config,
        &[
            "--ca", ca, "--server", &node.url, "--json", "register", "--token", TOKEN,
        ],
    );
    assert!(registered.status.success(), "{registered:?}");
    assert!(config.join("docfed").join("ca.pem").is_file());
    let pinned = docfed_with_config(&config, &["--server", &node.url, "--json", "search", "x"]);
    assert!(
        pinned.status.success(),
        "the pinned CA is trusted: {pinned:?}"
    );
    let other = topology::certs::CertDir(tmp.path().join("other"));
    topology::certs::generate(&topo, &other, &Default::default())?;
    let other_ca = other.ca();
    let refused = docfed_with_config(
        &config,
        &[
            "--ca",
            other_ca.to_str().unwrap(),
            "--server",
            &node.url,
            "search",
            "x",
        ],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("pinned"),
        "{refused:?}"
    );
    Ok(())
}

/// A standalone node serving HTTPS with a certificate of a fresh federation CA (in
/// `dir/certs`), and the topology the certificates were made for.
pub(crate) async fn https_node(
    dir: &std::path::Path,
) -> TestResult<(
    Standalone,
    docfed_shared::Topology,
    topology::certs::CertDir,
)> {
    let topo = docfed_shared::Topology::parse(&topology::demo::toml(
        "cli",
        &topology::demo::free_ports()?,
        None,
        |_| None,
    ))?;
    let certs = topology::certs::CertDir(dir.join("certs"));
    topology::certs::generate(&topo, &certs, &Default::default())?;
    let (cert, key) = certs.node("cli-na");
    let node = Standalone::start_with(
        &dir.join("node"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await?;
    assert!(node.url.starts_with("https://"), "{}", node.url);
    Ok((node, topo, certs))
}

/// A server named with --server whose certificate is not trusted (no --ca) is said to be
/// such, with how to trust it, not only "error sending request"; any other transport error
/// says its cause.
#[tokio::test]
async fn an_untrusted_certificate_and_a_refused_connection_say_their_cause() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (node, _, _) = https_node(tmp.path()).await?;
    for args in [
        &["--server", node.url.as_str(), "search", "x"][..],
        &["--server", node.url.as_str(), "--json", "peers"],
    ] {
        let out = docfed(args);
        assert_eq!(out.status.code(), Some(4), "a network error: {out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        for words in [
            "certificate is not trusted",
            "UnknownIssuer",
            "--ca",
            "DOCFED_CA",
            "certs/ca.pem",
        ] {
            assert!(said.contains(words), "{args:?} names {words:?}: {said}");
        }
    }
    let refused = docfed(&[
        "--server",
        "http://127.0.0.1:9",
        "info",
        "01890a5d-ac96-774b-bcce-b302099a8057",
    ]);
    assert_eq!(refused.status.code(), Some(4));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("onnection refused"), "{said}");
    assert!(
        !said.contains("--ca"),
        "no TLS remedy for a refused connection: {said}"
    );
    Ok(())
}

/// `docfed … | head`: a reader that closes the pipe before reading ends the command quietly
/// (no panic, no message) and with success, for tables and JSON alike.
#[tokio::test]
async fn a_closed_stdout_ends_any_command_quietly() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let node = Standalone::start(&tmp.path().join("node")).await?;
    let id = publish(
        &node.url,
        TOKEN,
        "title=Piped&filename=p.txt",
        b"hello".to_vec(),
    )
    .await?;
    let url = node.url.as_str();
    for args in [
        &["--server", url, "info", &id][..],
        &["--server", url, "--json", "info", &id],
        &["--server", url, "search", "piped"],
        &["--server", url, "versions", &id],
        &["--server", url, "--json", "peers"],
        &["completions", "bash"],
    ] {
        let mut child = docfed_child(args);
        // Closed before `docfed` writes: it is still starting (and then asks the node).
        drop(child.stdout.take());
        let out = child.wait_with_output()?;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !said.contains("panicked") && !said.contains("Broken pipe"),
            "{args:?}: {said}"
        );
        assert!(said.is_empty(), "{args:?} says nothing: {said}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
    }
    Ok(())
}
