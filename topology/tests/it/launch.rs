//! `topology::launch` driven as a library with stand-in node programs, to exercise the failure
//! paths of `up` without a real federation: a node that dies at start, a node that never gets
//! healthy.

use std::path::Path;
use std::time::Duration;

use topology::launch::{BrokerChoice, Federation, UpOptions};
use topology::restart::RestartPolicy;

use crate::common::{demo_with_ports, free_ports};

/// Options for the demo topology on fresh ports, with `script` standing in for `docfed-node`.
fn options(dir: &Path, script: &str) -> UpOptions {
    let file = dir.join("demo.toml");
    std::fs::write(&file, demo_with_ports(&free_ports(7))).unwrap();
    let node = dir.join("fake-node");
    std::fs::write(&node, script).unwrap();
    let mut perms = std::fs::metadata(&node).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&node, perms).unwrap();

    let mut opts = UpOptions::new(file, dir.join("run"));
    // Plain HTTP: this harness's clients do not load the federation CA (TLS: topology tests `tls`).
    opts.insecure = true;
    opts.node_binary = Some(node);
    // Never contacted: the stand-ins do not speak AMQP.
    opts.broker = BrokerChoice::External("amqp://guest:guest@127.0.0.1:1/%2f".to_owned());
    opts.start_portal = false;
    opts.verbose = false;
    opts
}

/// Processes whose command line mentions `marker` (our stand-in nodes).
fn processes_mentioning(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[tokio::test]
async fn a_node_dying_at_start_is_reported_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(
        dir.path(),
        "#!/bin/sh\necho \"fake node: cannot start $*\" >&2\nexit 3\n",
    );
    let run_dir = opts.run_dir.clone();
    let err = Federation::up(opts).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("exited with exit status: 3"), "{msg}");
    assert!(msg.contains("fake node: cannot start --topology"), "{msg}");
    assert!(msg.contains("--id "), "{msg}");
    assert!(!run_dir.join("federation.json").exists());
}

#[tokio::test]
async fn nodes_that_never_get_healthy_are_named_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    // `exec` so that SIGTERM reaches sleep itself; the marker finds leftovers.
    let mut opts = options(
        dir.path(),
        "#!/bin/sh\necho \"fake node $*\"\nexec sleep 300\n",
    );
    opts.health_timeout = Duration::from_secs(1);
    opts.stop_timeout = Duration::from_secs(5);
    let marker = dir.path().to_str().unwrap().to_owned();
    let err = Federation::up(opts).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("not every node became healthy"), "{msg}");
    for id in ["primary-a", "mid-2", "asia"] {
        assert!(msg.contains(&format!("node `{id}` not healthy")), "{msg}");
    }
    assert!(msg.contains("fake node --topology"), "{msg}");
    let left = processes_mentioning(&marker);
    assert!(left.is_empty(), "still running: {left:#?}");
}

/// The controls a harness uses on a real federation (real `docfed-node`s, private broker):
/// a node crashing on its own is reported once, and single nodes can be stopped, killed and
/// started again.
#[tokio::test]
async fn single_node_controls_on_a_real_federation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.toml");
    std::fs::write(&file, demo_with_ports(&free_ports(7))).unwrap();
    let mut opts = UpOptions::new(&file, dir.path().join("run"));
    // Plain HTTP: this harness's clients do not load the federation CA (TLS: topology tests `tls`).
    opts.insecure = true;
    opts.broker = BrokerChoice::Private;
    opts.start_portal = false;
    opts.verbose = false;
    let mut fed = Federation::up(opts).await.expect("federation starts");
    assert_eq!(fed.running_nodes(), 7);
    assert!(fed.manifest_path().exists());
    assert!(fed.private_broker().is_some());

    // A crash nobody asked for is reported by the next poll, and only once.
    let pid = fed.node("eu").unwrap().pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let exits = loop {
        let exits = fed.poll_exits();
        if !exits.is_empty() || tokio::time::Instant::now() > deadline {
            break exits;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].what, "node `eu`");
    assert!(exits[0].to_string().contains("SIGKILL"), "{}", exits[0]);
    assert!(fed.poll_exits().is_empty());
    assert_eq!(fed.running_nodes(), 6);

    fed.start_node("eu").await.expect("eu starts again");
    assert!(fed.start_node("eu").await.is_err(), "already running");

    let stopped = fed.stop_node("mid-1").await.unwrap().expect("was running");
    assert!(stopped.success(), "clean stop on SIGTERM: {stopped}");
    assert!(fed.kill_node("na").await.unwrap().is_some());
    assert!(
        fed.kill_node("na").await.unwrap().is_none(),
        "not running any more"
    );
    assert!(
        fed.poll_exits().is_empty(),
        "requested stops are not reported"
    );
    assert_eq!(fed.running_nodes(), 5);
    assert!(fed.stop_node("nowhere").await.is_err());

    let forced = fed.shutdown().await.unwrap();
    assert!(forced.is_empty(), "killed after the timeout: {forced:?}");
    assert_eq!(fed.running_nodes(), 0);
    assert!(!fed.manifest_path().exists());
}

/// A federation on the shared broker that SIGKILLs its nodes and removes their queues when the
/// test ends, passed or not.
struct Discarding(Federation);

impl Drop for Discarding {
    fn drop(&mut self) {
        self.0.discard();
    }
}

/// `up`'s supervising loop, driven by hand: a node killed with SIGKILL is reported, started
/// again after the first backoff step, and answers its health check again.
#[tokio::test]
async fn the_supervisor_restarts_a_killed_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("demo.toml");
    std::fs::write(&file, demo_with_ports(&free_ports(7))).unwrap();
    let mut opts = UpOptions::new(&file, dir.path().join("run"));
    // Plain HTTP: this harness's clients do not load the federation CA (TLS: topology tests `tls`).
    opts.insecure = true;
    // The broker at DOCFED_AMQP_URL / 127.0.0.1:5672 when one answers, else a private one.
    opts.start_portal = false;
    opts.verbose = false;
    let mut fed = Discarding(Federation::up(opts).await.expect("federation starts"));
    let fed = &mut fed.0;
    let mut supervisor = fed.supervisor();
    assert!(supervisor.tick(fed).is_empty(), "nothing to do yet");

    let old_pid = fed.node("eu").unwrap().pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();

    // Reported, then started again once the 1 s delay is over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut events = Vec::new();
    while !events.iter().any(|e: &String| e.contains("started again")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no restart by the deadline: {events:#?}"
        );
        events.extend(supervisor.tick(fed).iter().map(ToString::to_string));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(
        events[0].starts_with(
            "node `eu` exited with signal: 9 (SIGKILL); restarting in 1 s (attempt 1)"
        ),
        "{events:#?}"
    );
    assert_eq!(events[1], "node `eu` started again (attempt 1)");
    let new_pid = fed.node("eu").unwrap().pid().expect("running again");
    assert_ne!(new_pid, old_pid);
    assert_eq!(fed.running_nodes(), 7);

    // Healthy again, as itself.
    let http = docfed_http::tls::client_builder()
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("{}/v1/health", fed.node("eu").unwrap().url());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = http.get(&url).send().await {
            if resp.status().is_success() {
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["node"], "eu");
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} not healthy by the deadline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        supervisor.tick(fed).is_empty(),
        "{:?}",
        supervisor.tick(fed)
    );
    assert!(!supervisor.restart_pending());

    let forced = fed.shutdown().await.unwrap();
    assert!(forced.is_empty(), "killed after the timeout: {forced:?}");
}

/// A stand-in node that answers `/v1/health` as itself on its topology address the first time
/// it runs, and crashes at once (exit 3) every later time.
const CRASHING_AFTER_FIRST_START: &str = r#"#!/usr/bin/env python3
import http.server, json, os, sys, tomllib
args = sys.argv[1:]
arg = lambda name: args[args.index(name) + 1]
node_id, data_dir = arg("--id"), arg("--data-dir")
marker = os.path.join(data_dir, "started-once")
if os.path.exists(marker):
    print(f"fake node {node_id}: crashing at start", file=sys.stderr, flush=True)
    sys.exit(3)
open(marker, "w").close()
with open(arg("--topology"), "rb") as f:
    nodes = tomllib.load(f)["node"]
host, port = next(n["http"] for n in nodes if n["id"] == node_id).rsplit(":", 1)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"node": node_id}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((host, int(port)), Health).serve_forever()
"#;

/// A node that crashes within seconds of every start is restarted with growing delays, then
/// given up on after the fifth quick crash in a row, with its exit status and log.
#[tokio::test]
async fn the_supervisor_gives_up_on_a_node_that_keeps_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), CRASHING_AFTER_FIRST_START);
    // The default schedule with short delays, so the test takes no 15 s.
    opts.restart = Some(RestartPolicy {
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        ..RestartPolicy::default()
    });
    let mut fed = Federation::up(opts).await.expect("federation starts");
    let mut supervisor = fed.supervisor();
    let pid = fed.node("eu").unwrap().pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    while !supervisor.gave_up_on("eu") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not given up by the deadline: {events:#?}"
        );
        events.extend(supervisor.tick(&mut fed).iter().map(ToString::to_string));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The kill (within 10 s of the start: a quick crash too), then four crashes at start.
    let expected_delays = ["10 ms", "20 ms", "40 ms", "40 ms"];
    assert_eq!(events.len(), 2 * expected_delays.len() + 1, "{events:#?}");
    for (attempt, delay) in expected_delays.iter().enumerate() {
        let attempt = attempt + 1;
        assert!(
            events[2 * attempt - 2].starts_with("node `eu` exited with "),
            "{events:#?}"
        );
        assert!(
            events[2 * attempt - 2]
                .contains(&format!("; restarting in {delay} (attempt {attempt})")),
            "{events:#?}"
        );
        assert_eq!(
            events[2 * attempt - 1],
            format!("node `eu` started again (attempt {attempt})")
        );
    }
    let gave_up = events.last().unwrap();
    for part in [
        "giving up on node `eu`",
        "exit status: 3",
        "5 crashes in a row, each within 10 s of its start",
        "fake node eu: crashing at start",
    ] {
        assert!(gave_up.contains(part), "{part:?} not in {gave_up}");
    }

    // Left alone from then on; the others keep running.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(supervisor.tick(&mut fed).is_empty());
    assert!(!supervisor.restart_pending());
    assert!(!fed.node("eu").unwrap().is_running());
    assert_eq!(fed.running_nodes(), 6);
    fed.shutdown().await.unwrap();
}
