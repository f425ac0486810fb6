//! `docfed daemon`: a new version of a flagged document reaches `files/` within seconds of the
//! regional node holding it, pushed by the node's event stream (the catch-up interval is far
//! longer than the test); SIGTERM stops the daemon with exit 0.

use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const T: Duration = Duration::from_secs(60);

/// Waits until `path` holds exactly `want`, at most `limit`.
async fn await_file(path: &Path, want: &[u8], limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if std::fs::read(path).is_ok_and(|got| got == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} does not hold the expected {} bytes after {limit:?}",
                path.display(),
                want.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything the daemon printed (after it ended).
fn output(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(o) = child.stdout.as_mut() {
        let _ = o.read_to_string(&mut text);
    }
    if let Some(e) = child.stderr.as_mut() {
        let _ = e.read_to_string(&mut text);
    }
    text
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_flagged_document_is_pushed_to_the_daemon_and_sigterm_stops_it() -> TestResult {
    let fed = Fed::start().await?;
    let primary = fed.url("primary-a");
    let na = fed.url("na");
    let token = fed.token();
    let http = reqwest::Client::new();
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    let home = tmp.path().join("home");

    let body1 = pattern(21, 120_000);
    let id = publish(
        &primary,
        &token,
        "title=Pushed&scope=global&filename=pushed.bin",
        body1.clone(),
    )
    .await?;
    let meta = format!("{na}/v1/documents/{id}");
    let deadline = Instant::now() + T;
    while !reqwest::get(&meta).await?.status().is_success() {
        assert!(Instant::now() < deadline, "{id} never reached na");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for args in [
        &["--server", &na, "--json", "register", "--token", &token][..],
        &["--server", &na, "--json", "flag", &id][..],
    ] {
        let out = docfed_at(&config, &home, args);
        assert!(out.status.success(), "{out:?}");
    }

    let mut daemon = Daemon(docfed_at_child(
        &config,
        &home,
        &["--server", &na, "daemon", "--catch-up-interval", "120s"],
    ));
    let file = home.join("files").join("pushed.bin");
    // The catch-up at start.
    if let Err(e) = await_file(&file, &body1, T).await {
        let _ = daemon.0.kill();
        let _ = daemon.0.wait();
        return Err(format!("{e}\ndaemon said:\n{}", output(&mut daemon.0)).into());
    }

    let body2 = pattern(22, 180_000);
    let resp = http
        .put(format!("{primary}/v1/documents/{id}?title=Pushed%202"))
        .bearer_auth(&token)
        .body(body2.clone())
        .send()
        .await?;
    assert!(resp.status().is_success(), "{}", resp.text().await?);
    // When na holds version 2, the file follows within 5 s: pushed, not the 120 s catch-up.
    let deadline = Instant::now() + T;
    loop {
        let v: Value = reqwest::get(&meta).await?.json().await?;
        if v["version"] == 2 && v["available_here"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "na never held version 2: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Err(e) = await_file(&file, &body2, Duration::from_secs(5)).await {
        let _ = daemon.0.kill();
        let _ = daemon.0.wait();
        return Err(format!("{e}\ndaemon said:\n{}", output(&mut daemon.0)).into());
    }

    // SIGTERM: a clean stop, exit 0, within a few seconds.
    let pid = daemon.0.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = daemon.0.try_wait()? {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop within 5 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let said = output(&mut daemon.0);
    assert!(status.success(), "{status:?}\n{said}");
    assert!(
        said.contains("synced with"),
        "one line per catch-up:\n{said}"
    );
    assert!(said.contains("SIGTERM"), "{said}");
    Ok(())
}
