//! `docfed daemon`: a new version of a flagged document reaches `files/` within seconds of the
//! regional node holding it, pushed by the node's event stream (the catch-up interval is far
//! longer than the test); SIGTERM stops the daemon with exit 0.

use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

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
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
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
    await_held(&na, &id, 1).await?;
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
    await_held(&na, &id, 2).await?;
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

/// Waits until the node at `url` holds version `version` of `id` with its content.
async fn await_held(url: &str, id: &str, version: i64) -> TestResult {
    await_json(
        &format!("{url}/v1/documents/{id}"),
        &format!("version {version} of {id}"),
        T,
        |v| v["version"] == version && v["available_here"] == true,
    )
    .await
    .map(drop)
}

/// A daemon whose stdout is collected as it runs, so a test can wait for what it says.
struct Watched {
    daemon: Daemon,
    said: std::sync::Arc<std::sync::Mutex<String>>,
    /// Copies stdout into `said` until the pipe closes.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watched {
    fn new(mut child: Child) -> Self {
        let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = child.stdout.take().map(|out| {
            let said = said.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    let mut s = said.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            })
        });
        Watched {
            daemon: Daemon(child),
            said,
            reader,
        }
    }

    fn said(&self) -> String {
        self.said.lock().unwrap().clone()
    }

    /// Waits until the daemon printed a line containing `text` after the first `since` bytes
    /// of its output; returns the offset just past that line.
    async fn await_line(&self, since: usize, text: &str, limit: Duration) -> TestResult<usize> {
        let deadline = Instant::now() + limit;
        loop {
            let said = self.said();
            let mut at = since;
            for line in said[since..].split_inclusive('\n') {
                at += line.len();
                if line.contains(text) {
                    return Ok(at);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("the daemon never said {text:?} within {limit:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the daemon with SIGTERM; returns everything it printed.
    async fn stop(&mut self) -> TestResult<String> {
        let pid = self.daemon.0.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.daemon.0.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The process is gone, so its stdout closes and the reader ends.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let mut text = self.said();
        text.push_str(&output(&mut self.daemon.0));
        Ok(text)
    }
}

/// The home regional node is killed: the daemon moves to its backup (learned from the home
/// node's peer list, not configured), gives it the device's flags, and keeps receiving new
/// versions there; when the home node is back, the daemon returns to it.
#[tokio::test]
async fn the_daemon_fails_over_to_the_backup_node_and_returns_home() -> TestResult {
    let mut fed = Fed::start().await?;
    let primary = fed.url("primary-a");
    let na = fed.url("na");
    let eu = fed.url("eu");
    let token = fed.token();
    let http = docfed_http::tls::client_builder()
        .build()
        .expect("HTTP client");
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    let home = tmp.path().join("home");

    let id = publish(
        &primary,
        &token,
        "title=Travelling&scope=global&filename=travelling.bin",
        pattern(31, 50_000),
    )
    .await?;
    await_held(&na, &id, 1).await?;
    // Registered with both (eu has no open enrollment); flagged at home only.
    for args in [
        &["--server", &na, "--json", "register", "--token", &token][..],
        &["--server", &eu, "--json", "register", "--token", &token][..],
        &["--server", &na, "--json", "flag", &id][..],
    ] {
        let out = docfed_at(&config, &home, args);
        assert!(out.status.success(), "{out:?}");
    }
    let eu_flags = || {
        let out = docfed_at(&config, &home, &["--server", &eu, "--json", "flags"]);
        assert!(out.status.success(), "{out:?}");
        stdout_json(&out)
    };
    assert_eq!(eu_flags()["documents"].as_array().map(Vec::len), Some(0));

    let mut daemon = Watched::new(docfed_at_child(
        &config,
        &home,
        &[
            "--server",
            &na,
            // No configured way out: the backup must come from na's peer list.
            "--fallbacks",
            "http://127.0.0.1:9",
            "daemon",
            "--catch-up-interval",
            "120s",
        ],
    ));
    let file = home.join("files").join("travelling.bin");
    let step = async {
        await_file(&file, &pattern(31, 50_000), T).await?;

        fed.fed
            .kill_node(&topology::demo::node_id(&fed.prefix, "na"))
            .await?;
        let body2 = pattern(32, 70_000);
        let resp = http
            .put(format!("{primary}/v1/documents/{id}"))
            .bearer_auth(&token)
            .body(body2.clone())
            .send()
            .await?;
        assert!(resp.status().is_success(), "{}", resp.text().await?);
        await_held(&eu, &id, 2).await?;
        await_file(&file, &body2, Duration::from_secs(30)).await?;
        // eu was given the flag, so it keeps the content and pushes new versions.
        let flagged = eu_flags();
        assert!(
            flagged["documents"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["id"] == id.as_str())),
            "eu does not hold the device's flag: {flagged}"
        );
        let body3 = pattern(33, 90_000);
        let resp = http
            .put(format!("{primary}/v1/documents/{id}"))
            .bearer_auth(&token)
            .body(body3.clone())
            .send()
            .await?;
        assert!(resp.status().is_success(), "{}", resp.text().await?);
        await_held(&eu, &id, 3).await?;
        // Pushed by eu (the catch-up interval is 120 s).
        await_file(&file, &body3, Duration::from_secs(10)).await?;

        fed.fed
            .start_node(&topology::demo::node_id(&fed.prefix, "na"))
            .await?;
        // Home is probed every few seconds.
        let mark = daemon.said().len();
        let mark = daemon
            .await_line(
                mark,
                &format!("{na} answers again"),
                Duration::from_secs(20),
            )
            .await?;
        daemon
            .await_line(mark, &format!("synced with {na}"), Duration::from_secs(20))
            .await?;
        let body4 = pattern(34, 40_000);
        let resp = http
            .put(format!("{primary}/v1/documents/{id}"))
            .bearer_auth(&token)
            .body(body4.clone())
            .send()
            .await?;
        assert!(resp.status().is_success(), "{}", resp.text().await?);
        await_held(&na, &id, 4).await?;
        await_file(&file, &body4, Duration::from_secs(30)).await?;
        TestResult::Ok(())
    }
    .await;
    let said = daemon.stop().await?;
    if let Err(e) = step {
        return Err(format!("{e}\ndaemon said:\n{said}").into());
    }
    assert!(
        said.contains(&format!("failing over to {eu}")),
        "the daemon did not say where it went:\n{said}"
    );
    assert!(
        said.contains(&format!("{na} answers again; back from {eu}")),
        "the daemon did not return home:\n{said}"
    );
    // Back home, the catch-ups are with na again.
    let last_sync = said
        .lines()
        .rev()
        .find(|l| l.starts_with("synced with"))
        .unwrap_or_default();
    assert!(last_sync.contains(&na), "{said}");
    Ok(())
}
