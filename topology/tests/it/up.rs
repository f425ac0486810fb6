//! `docfed-topology up` as a real process: refuses what it cannot start, and runs the demo
//! federation (on fresh ports) until SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use topology::launch::Manifest;

use crate::common::{bin, demo_with_ports, free_ports, run};

/// Stops the launcher (and through it every node) if a test fails half-way.
struct Launcher(Child);

impl Launcher {
    fn sigterm(&self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
    }

    /// Waits for the launcher to exit; `None` at the deadline.
    fn wait_until(&mut self, deadline: Instant) -> Option<std::process::ExitStatus> {
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.sigterm();
            if self
                .wait_until(Instant::now() + Duration::from_secs(30))
                .is_none()
            {
                let _ = self.0.kill();
            }
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn up_refuses_busy_addresses_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(7);
    let file = dir.path().join("t.toml");
    std::fs::write(&file, demo_with_ports(&ports)).unwrap();
    // `na` is the fifth node of the demo.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", ports[4])).unwrap();
    let run_dir = dir.path().join("run");

    let out = run(&[
        "up",
        file.to_str().unwrap(),
        "--run-dir",
        run_dir.to_str().unwrap(),
        "--no-portal",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`na`") && stderr.contains(&ports[4].to_string()),
        "{stderr}"
    );
    assert!(!run_dir.join("federation.json").exists());
}

#[test]
fn up_refuses_an_invalid_topology() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(7);
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        demo_with_ports(&ports).replacen("backup = \"eu\"", "backup = \"mars\"", 1),
    )
    .unwrap();
    let out = run(&[
        "up",
        file.to_str().unwrap(),
        "--run-dir",
        dir.path().join("run").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`na`") && stderr.contains("`mars`"),
        "{stderr}"
    );
}

#[test]
fn up_runs_the_demo_federation_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(8);
    let file = dir.path().join("demo.toml");
    std::fs::write(&file, demo_with_ports(&ports[..7])).unwrap();
    let run_dir = dir.path().join("run");
    let (stdout_path, stderr_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let portal_addr = format!("127.0.0.1:{}", ports[7]);

    let mut launcher = Launcher(
        Command::new(bin())
            .args([
                "up",
                file.to_str().unwrap(),
                "--run-dir",
                run_dir.to_str().unwrap(),
            ])
            .args(["--portal-http", &portal_addr])
            // Its own broker: on the shared one, the queues of nodes named like ours (another
            // test, a running demo) would mix with this federation's.
            .arg("--private-broker")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("docfed-topology starts"),
    );

    // The manifest appears once the private broker runs (≈ 10 s) and every node is healthy.
    let manifest_path = run_dir.join("federation.json");
    let deadline = Instant::now() + Duration::from_secs(150);
    while !manifest_path.exists() {
        if let Some(status) = launcher.0.try_wait().unwrap() {
            panic!(
                "launcher exited with {status} before writing the manifest\nstdout:\n{}\nstderr:\n{}",
                read(&stdout_path),
                read(&stderr_path)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no manifest in time; stderr:\n{}",
            read(&stderr_path)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let manifest = Manifest::load(&manifest_path).unwrap();
    let ids: Vec<&str> = manifest.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "primary-a",
            "primary-b",
            "mid-1",
            "mid-2",
            "na",
            "eu",
            "asia"
        ]
    );
    // Secure by default: `up` made certificates for the demo, the nodes speak HTTPS, and the
    // manifest names the CA to trust.
    for (n, port) in manifest.nodes.iter().zip(&ports) {
        assert_eq!(n.http, format!("https://127.0.0.1:{port}"));
    }
    let ca = manifest.ca.clone().expect("the manifest names the CA");
    assert_eq!(ca, run_dir.join("certs").join("ca.pem"));
    assert_eq!(manifest.nodes[5].region.as_deref(), Some("eu"));
    assert_eq!(manifest.nodes[2].region, None);
    assert_eq!(manifest.token.len(), 40);
    assert!(manifest.token.bytes().all(|b| b.is_ascii_alphanumeric()));
    // The portal started with the federation and says where it is.
    let portal = manifest
        .portal
        .clone()
        .expect("the portal runs with the federation");
    assert!(portal.starts_with("https://127.0.0.1:"), "{portal}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&manifest_path.metadata().unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "the manifest holds the token: owner-only");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = docfed_http::tls::reqwest_trusting(Some(&ca))
        .unwrap()
        .no_proxy()
        .build()
        .unwrap();
    // A client that does not trust the federation CA cannot talk to a node.
    let stranger = docfed_http::tls::client_builder()
        .no_proxy()
        .build()
        .unwrap();
    let refused = runtime.block_on(
        stranger
            .get(format!("{}/v1/health", manifest.nodes[0].http))
            .send(),
    );
    assert!(refused.is_err(), "{refused:?}");
    for n in &manifest.nodes {
        let body: serde_json::Value = runtime.block_on(async {
            let resp = client
                .get(format!("{}/v1/health", n.http))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{}", n.id);
            resp.json().await.unwrap()
        });
        assert_eq!(body["node"], n.id.as_str(), "{body}");
        assert!(run_dir.join(&n.id).join("node.log").is_file());
    }

    // The portal serves HTTPS with the certificate `up` made for it.
    let login = runtime
        .block_on(client.get(format!("{portal}/login")).send())
        .unwrap();
    assert_eq!(login.status(), 200);

    // The token of the manifest is the one the primaries accept for publishing.
    let publish = |token: Option<&str>| {
        let mut req = client
            .post(format!("{}/v1/documents", manifest.nodes[0].http))
            .query(&[
                ("title", "up test"),
                ("filename", "up.txt"),
                ("scope", "global"),
            ])
            .body("hello federation");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        runtime.block_on(req.send()).unwrap().status()
    };
    assert!(publish(Some(&manifest.token)).is_success());
    assert_eq!(publish(None), 401);

    // Sealed at rest by default: every node has a content key of its own, owner-only, outside
    // the data directories, and the document's bytes are nowhere on disk in plaintext.
    for n in &manifest.nodes {
        let key = run_dir.join("content-keys").join(format!("{}.key", n.id));
        let mode = std::os::unix::fs::PermissionsExt::mode(&key.metadata().unwrap().permissions());
        assert_eq!(
            mode & 0o077,
            0,
            "{}: the content key must be owner-only",
            n.id
        );
        assert!(
            run_dir.join(&n.id).join("content-key.id").is_file(),
            "{}",
            n.id
        );
        assert!(
            !read(&run_dir.join(&n.id).join("node.log")).contains("no content key"),
            "{}",
            n.id
        );
    }
    // A small document lives in the node's database (a larger one in `objects/`): no file of
    // its data directory but its log holds the plaintext.
    let mut files = Vec::new();
    let mut dirs = vec![run_dir.join("primary-a")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().is_some_and(|n| n != "node.log") {
                files.push(p);
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("node.sqlite")),
        "{files:?}"
    );
    for f in files {
        let stored = std::fs::read(&f).unwrap_or_default();
        assert!(
            !stored
                .windows(b"hello federation".len())
                .any(|w| w == b"hello federation"),
            "{} holds the content in plaintext",
            f.display()
        );
    }

    // A node killed under `up` is restarted, says so on stderr, and is healthy again.
    let ready = |id: &str| docfed_shared::ready::Ready::read(&run_dir.join(id)).map(|r| r.pid);
    let old_pid = ready("eu").expect("eu wrote ready.json");
    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let restarted = ready("eu").is_some_and(|pid| pid != old_pid);
        let healthy = restarted
            && runtime
                .block_on(
                    client
                        .get(format!("{}/v1/health", manifest.nodes[5].http))
                        .send(),
                )
                .is_ok_and(|r| r.status().is_success());
        if healthy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "eu not restarted in time; stderr:\n{}",
            read(&stderr_path)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stderr = read(&stderr_path);
    assert!(
        stderr.contains("node `eu` exited with signal: 9 (SIGKILL); restarting in 1 s (attempt 1)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("node `eu` started again (attempt 1)"),
        "{stderr}"
    );

    launcher.sigterm();
    let status = launcher
        .wait_until(Instant::now() + Duration::from_secs(60))
        .expect("launcher exits after SIGTERM");
    let (stdout, stderr) = (read(&stdout_path), read(&stderr_path));
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("ID") && stdout.contains("TIER") && stdout.contains("LOG"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&portal),
        "the table names the portal: {stdout}"
    );
    // With TLS, the federation's own broker: AMQP over TLS, nodes logged in by certificate.
    assert!(
        stdout.contains("broker: amqps://localhost:") && stdout.contains("auth_mechanism=external"),
        "{stdout}"
    );
    assert!(
        !manifest_path.exists(),
        "the manifest of a stopped federation is removed"
    );
    assert!(
        runtime
            .block_on(client.get(format!("{portal}/login")).send())
            .is_err(),
        "the portal still answers after shutdown"
    );
    for n in &manifest.nodes {
        // A clean stop logs no error.
        let log = read(&run_dir.join(&n.id).join("node.log"));
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", n.id);
        let answered = runtime.block_on(client.get(format!("{}/v1/health", n.http)).send());
        assert!(
            answered.is_err(),
            "node {} still answers after shutdown",
            n.id
        );
    }
}
