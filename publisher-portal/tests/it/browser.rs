//! A real browser: headless Chromium driven over WebDriver (chromedriver + fantoccini) logs in,
//! uploads a file through the form (XHR with progress bar), sees it listed and its propagation
//! status, deletes it (with the confirmation step) and reactivates it; then, with a regional
//! node killed, looks at the federation page at desktop and at phone width (390 px), where the
//! node must read "down" and no table may be wider than the screen. Each page is saved as a PNG
//! in `target/portal-screenshots/` (CI keeps them as artifacts).
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs them). Without
//! chromedriver the test fails: a browser test that skips itself proves nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;

use crate::common::{Env, TestResult, PASSWORD};

fn find(name: &str, fallback: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    on_path.or_else(|| Path::new(fallback).is_file().then(|| fallback.into()))
}

fn screenshot_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp; the screenshots go next to it.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("portal-screenshots")
}

async fn shot(b: &Browser, name: &str) -> TestResult {
    let png = b.screenshot().await?;
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.png")), png)?;
    Ok(())
}

async fn wait_url(b: &Browser, contains: &str, timeout: Duration) -> TestResult<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let url = b.current_url().await?.to_string();
        if url.contains(contains) {
            return Ok(url);
        }
        if Instant::now() > deadline {
            return Err(format!("browser still at {url}, expected a URL with {contains:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_text(
    b: &Browser,
    css: &str,
    contains: &str,
    timeout: Duration,
) -> TestResult<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(e) = b.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if t.contains(contains) {
                    return Ok(t);
                }
                if Instant::now() > deadline {
                    return Err(format!("{css} says {t:?}, expected {contains:?}").into());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no {css} containing {contains:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

async fn start_driver(log: &Path) -> TestResult<Driver> {
    let chromedriver = find("chromedriver", "/usr/bin/chromedriver").ok_or(
        "chromedriver not found: install it with `apt-get install -y chromium chromium-driver` \
         (.ci/run does this); the browser test does not skip itself",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let out = std::fs::File::create(log)?;
    let child = tokio::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    crate::common::eventually(
        Duration::from_secs(20),
        "chromedriver to listen",
        || async {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ()))
        },
    )
    .await?;
    Ok(Driver { _child: child, url })
}

#[tokio::test]
async fn browser_publish_list_propagation_delete_reactivate() -> TestResult {
    // A small upload limit, to see the page refuse an over-size file before sending it.
    // Over HTTPS, as `docfed-topology up` serves it: Chromium trusts exactly the portal's
    // certificate (by its public key), nothing else.
    let mut env = Env::start_tls(&["--max-upload-size", "1MiB"]).await?;
    assert!(env.portal.url.starts_with("https://"), "{}", env.portal.url);
    env.add_author("alice").await?;
    let driver = start_driver(&env.tmp.path().join("chromedriver.log")).await?;
    let profile = env.tmp.path().join("chromium-profile");
    let mut options = json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1280,1000",
            format!("--user-data-dir={}", profile.display()),
            format!("--ignore-certificate-errors-spki-list={}", portal_spki(&env)?),
        ]
    });
    if let Some(bin) = find("chromium", "/usr/bin/chromium") {
        options["binary"] = json!(bin);
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await?;
    let result = run(&mut env, &b).await;
    let _ = b.close().await;
    result
}

/// Base64 of the SHA-256 of the portal certificate's public key: what Chromium's
/// `--ignore-certificate-errors-spki-list` pins.
fn portal_spki(env: &Env) -> TestResult<String> {
    use base64::Engine;
    use sha2::Digest;
    let certs = topology::certs::CertDir(env.tmp.path().join("run").join("certs"));
    let der = docfed_http::tls::load_certs(&certs.portal().0, "certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(der[0].as_ref())?;
    let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Ok(base64::engine::general_purpose::STANDARD.encode(digest))
}

async fn run(env: &mut Env, b: &Browser) -> TestResult {
    let t = Duration::from_secs(60);
    let file = env.tmp.path().join("field-report.txt");
    std::fs::write(&file, "Field report\n".repeat(50_000))?; // ~650 KB

    // Log in (the first page sends there).
    b.goto(&env.url("/documents")).await?;
    wait_url(b, "/login", t).await?;
    shot(b, "01-login").await?;
    b.find(Locator::Css("#name"))
        .await?
        .send_keys("alice")
        .await?;
    b.find(Locator::Css("#password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    b.find(Locator::Css("form[action='/login'] button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_url(b, "/documents", t).await?;
    wait_text(b, "main", "No documents match.", t).await?;
    shot(b, "02-my-documents-empty").await?;

    // Too large: the page says so before sending anything.
    b.find(Locator::Css("a[href='/publish']"))
        .await?
        .click()
        .await?;
    wait_url(b, "/publish", t).await?;
    let big = env.tmp.path().join("too-big.bin");
    std::fs::write(&big, vec![0u8; 2 << 20])?;
    b.find(Locator::Css("#title"))
        .await?
        .send_keys("Too big")
        .await?;
    b.find(Locator::Css("#file"))
        .await?
        .send_keys(&big.display().to_string())
        .await?;
    b.find(Locator::Css("form.upload button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_text(
        b,
        ".upload-status",
        "the largest upload allowed is 1.0 MiB",
        t,
    )
    .await?;
    shot(b, "03a-publish-too-large").await?;

    // Publish through the form: XHR upload with a progress bar, then the document page.
    b.goto(&env.url("/publish")).await?;
    b.find(Locator::Css("#title"))
        .await?
        .send_keys("Field report <2025>")
        .await?;
    b.find(Locator::Css("#description"))
        .await?
        .send_keys("Observations from the north site.")
        .await?;
    b.find(Locator::Css("#tags"))
        .await?
        .send_keys("field, north")
        .await?;
    b.find(Locator::Css("#source"))
        .await?
        .send_keys("Survey team")
        .await?;
    b.find(Locator::Css("#scope option[value='region:na']"))
        .await?
        .click()
        .await?;
    b.find(Locator::Css("#file"))
        .await?
        .send_keys(&file.display().to_string())
        .await?;
    shot(b, "03-publish-form").await?;
    b.find(Locator::Css("form.upload button[type=submit]"))
        .await?
        .click()
        .await?;
    let url = wait_url(b, "done=published", t).await?;
    let id = url
        .split("/documents/")
        .nth(1)
        .and_then(|s| s.split('?').next())
        .ok_or("no id in the URL")?
        .to_owned();
    wait_text(b, "h1", "Field report <2025>", t).await?;
    wait_text(b, ".flash", "Published", t).await?;
    shot(b, "04-document-published").await?;

    // Propagation: the live table reaches every node.
    wait_text(b, "#propagation-summary", "4 of 4 nodes hold version 1.", t).await?;
    let rows = b.find_all(Locator::Css("#propagation tbody tr")).await?;
    assert_eq!(rows.len(), 4);
    b.execute(
        "document.getElementById('propagation-section').scrollIntoView()",
        vec![],
    )
    .await?;
    shot(b, "05-propagation").await?;

    // Listed under My documents.
    b.find(Locator::Css("nav a[href='/documents']"))
        .await?
        .click()
        .await?;
    wait_url(b, "/documents", t).await?;
    wait_text(b, "table.docs", "Field report <2025>", t).await?;
    shot(b, "06-my-documents").await?;

    // Delete, with the confirmation step.
    b.find(Locator::Css(&format!("a[href='/documents/{id}']")))
        .await?
        .click()
        .await?;
    wait_text(b, "h1", "Field report", t).await?;
    b.find(Locator::Css(&format!("a[href='/documents/{id}/delete']")))
        .await?
        .click()
        .await?;
    wait_url(b, "/delete", t).await?;
    wait_text(b, "h1", "Delete", t).await?;
    shot(b, "07-delete-confirmation").await?;
    b.find(Locator::Css("form[action$='/delete'] button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_url(b, "done=deleted", t).await?;
    wait_text(b, "h1", "deleted", t).await?;
    wait_text(b, "#propagation-summary", "(a tombstone)", t).await?;
    shot(b, "08-deleted").await?;
    assert_eq!(
        env.node_doc("pa", &id).await?.ok_or("missing")?["deleted"],
        true
    );

    // Reactivate.
    b.find(Locator::Css(
        "form[action$='/reactivate'] button[type=submit]",
    ))
    .await?
    .click()
    .await?;
    wait_url(b, "done=reactivated", t).await?;
    wait_text(b, ".flash", "Document reactivated.", t).await?;
    shot(b, "09-reactivated").await?;
    crate::common::eventually(t, "reactivation on pa", || async {
        Ok(env
            .node_doc("pa", &id)
            .await?
            .filter(|m| m["deleted"] == false))
    })
    .await?;

    // The same page on a phone-sized screen, and keyboard focus visible.
    b.set_window_size(390, 844).await?;
    b.refresh().await?;
    wait_text(b, "h1", "Field report", t).await?;
    shot(b, "10-phone-document").await?;
    b.goto(&env.url("/publish")).await?;
    b.find(Locator::Css("#title")).await?.click().await?;
    shot(b, "11-phone-publish-focus").await?;
    assert_fits(b, "the publish page").await?;
    b.goto(&env.url("/documents")).await?;
    wait_text(b, "table.docs", "Field report <2025>", t).await?;
    b.execute(
        "document.querySelector('table.docs').scrollIntoView()",
        vec![],
    )
    .await?;
    shot(b, "12-phone-my-documents").await?;
    assert_fits(b, "My documents").await?;

    // A regional node dies: the federation page says so, at desktop and at phone width.
    b.set_window_size(1280, 1000).await?;
    let na = env.id("na");
    env.fed.kill_node(&na).await?;
    b.goto(&env.url("/federation")).await?;
    let row = format!("#federation tr[data-node='{na}']");
    // The page is a snapshot: reload until the primaries' probes have noticed.
    let deadline = Instant::now() + t;
    loop {
        if b.find(Locator::Css(&format!("{row}.health-down")))
            .await
            .is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            let text = b.find(Locator::Css("#federation")).await?.text().await?;
            return Err(format!("{na} not shown as down: {text}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.refresh().await?;
    }
    wait_text(b, &format!("{row} .health"), "down", t).await?;
    shot(b, "13-federation-node-down").await?;
    wait_text(b, "#federation-summary", "down", t).await?;
    b.set_window_size(390, 844).await?;
    b.refresh().await?;
    wait_text(b, &format!("{row} .health"), "down", t).await?;
    b.execute(
        "document.querySelector(arguments[0]).scrollIntoView()",
        vec![json!(row)],
    )
    .await?;
    shot(b, "14-phone-federation-node-down").await?;
    assert_fits(b, "the federation page").await?;
    Ok(())
}

/// Nothing on the page is wider than the window: no table clipped or scrolling sideways.
async fn assert_fits(b: &Browser, what: &str) -> TestResult {
    let v = b
        .execute(
            "var w = document.documentElement.clientWidth; \
             var wide = Array.prototype.filter.call(document.querySelectorAll('main *'), \
               function (e) { \
                 if (e.closest('thead, .visually-hidden')) return false; /* not shown */ \
                 var r = e.getBoundingClientRect(); return r.right > w + 1; }); \
             return [w, document.documentElement.scrollWidth, \
               wide.slice(0, 5).map(function (e) { return e.tagName + '.' + e.className; })];",
            vec![],
        )
        .await?;
    let width = v[0].as_i64().unwrap_or(0);
    let scroll = v[1].as_i64().unwrap_or(0);
    if scroll > width || v[2].as_array().is_some_and(|a| !a.is_empty()) {
        return Err(format!(
            "{what} is wider than the {width} px window (scroll width {scroll}): {}",
            v[2]
        )
        .into());
    }
    Ok(())
}
