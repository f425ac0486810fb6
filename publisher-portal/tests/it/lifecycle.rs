//! Starting and stopping: the command line the launcher uses, `ready.json`, `--primary` instead
//! of a topology, clear errors for bad settings, clean shutdown on SIGTERM.

use std::time::Duration;

use reqwest::StatusCode;
use topology::launch::{BrokerChoice, Federation, UpOptions};

use crate::common::{amqp_url, node_binary, Client, Env, TestResult, PORTAL};

#[tokio::test]
async fn ready_file_primary_flags_and_clean_shutdown() -> TestResult {
    let mut env = Env::start(&[]).await?;
    let ready: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        env.portal.data_dir.join("ready.json"),
    )?)?;
    assert_eq!(ready["http"], env.portal.url.as_str());
    assert_eq!(ready["pid"].as_u64().map(|p| p as u32), env.portal.pid());
    let (s, h) = Client::new(&env.portal.url).json("/healthz").await?;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["primaries"].as_array().map(Vec::len), Some(2));

    // A second portal configured with --primary URLs and --region instead of the topology.
    let dir = env.tmp.path().join("portal2");
    let (pa, pb) = (env.node_url("pa"), env.node_url("pb"));
    let mut second = start_portal_with(
        &dir,
        env.fed.token(),
        &["--primary", &pa, "--primary", &pb, "--region", "eu"],
    )
    .await?;
    crate::common::add_author(&dir, "zoe", crate::common::PASSWORD, &[]).await?;
    let zoe = Client::new(&second.url);
    assert_eq!(
        zoe.login("zoe", crate::common::PASSWORD).await?.status,
        StatusCode::SEE_OTHER
    );
    let form = zoe.get("/publish").await?;
    assert!(
        form.body.contains("value=\"region:eu\"") && !form.body.contains("value=\"region:na\"")
    );
    zoe.publish("Via flags", "region:eu", "", vec![1, 2, 3])
        .await?;
    assert_eq!(second.stop().await?.code(), Some(0));

    // SIGTERM: the portal stops cleanly.
    let status = env.portal.stop().await?;
    assert_eq!(status.code(), Some(0), "{}", env.portal.log_text());
    assert!(env.portal.log_text().contains("portal stopped"));
    Ok(())
}

async fn start_portal_with(
    dir: &std::path::Path,
    token: &str,
    args: &[&str],
) -> TestResult<crate::common::Portal> {
    // start_portal passes --topology; here the primaries come from flags, so run it by hand.
    use std::process::Stdio;
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("portal.log"))?;
    let child = tokio::process::Command::new(PORTAL)
        .args(["--http", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("DOCFED_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let ready = dir.join("ready.json");
    let url = crate::common::eventually(Duration::from_secs(30), "ready.json", || async {
        Ok(std::fs::read_to_string(&ready)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["http"].as_str().map(str::to_owned)))
    })
    .await?;
    Ok(crate::common::Portal {
        child: Some(child),
        url,
        data_dir: dir.to_owned(),
        log: dir.join("portal.log"),
    })
}

#[tokio::test]
async fn bad_settings_are_refused_clearly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let run = |args: Vec<String>, token: Option<&str>| {
        let mut c = std::process::Command::new(PORTAL);
        c.args(&args)
            .env_remove("DOCFED_TOKEN")
            .env_remove("DOCFED_TOKEN_FILE");
        if let Some(t) = token {
            c.env("DOCFED_TOKEN", t);
        }
        c.output()
    };
    let d = dir.path().display().to_string();
    let cases: Vec<(Vec<String>, Option<&str>, &str)> = vec![
        (
            vec!["--data-dir".into(), d.clone()],
            Some("t"),
            "no primaries",
        ),
        (
            vec![
                "--primary".into(),
                "http://127.0.0.1:1".into(),
                "--data-dir".into(),
                d.clone(),
            ],
            None,
            "no publish token",
        ),
        (
            vec!["--primary".into(), "ftp://x".into()],
            Some("t"),
            "is not an http:// or https:// URL",
        ),
        (
            vec!["--topology".into(), "/nonexistent.toml".into()],
            Some("t"),
            "cannot read topology file",
        ),
        (
            vec![
                "--primary".into(),
                "http://127.0.0.1:1".into(),
                "--max-upload-size".into(),
                "lots".into(),
            ],
            Some("t"),
            "--max-upload-size",
        ),
        (
            vec![
                "--primary".into(),
                "http://127.0.0.1:1".into(),
                "--region".into(),
                "Mars!".into(),
            ],
            Some("t"),
            "not a region name",
        ),
    ];
    for (args, token, expect) in cases {
        let out = run(args.clone(), token)?;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    Ok(())
}

/// `docfed-topology up` (the library behind it) starts the portal with the federation.
#[tokio::test]
async fn the_launcher_starts_the_portal() -> TestResult {
    let env_probe = tempfile::tempdir()?;
    let free = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let topology = env_probe.path().join("t.toml");
    let prefix = format!("pl{}", std::process::id());
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
    };
    std::fs::write(
        &topology,
        format!(
            "redundancy = 1\namqp_url = {:?}\n[[node]]\nid = \"{prefix}-a\"\ntier = \"primary\"\nhttp = \"127.0.0.1:{}\"\n\
             [[node]]\nid = \"{prefix}-b\"\ntier = \"primary\"\nhttp = \"127.0.0.1:{}\"\n",
            amqp_url(),
            port()?,
            port()?
        ),
    )?;
    let mut opts = UpOptions::new(&topology, env_probe.path().join("run"));
    // Plain HTTP: this harness's clients do not load the federation CA (TLS: topology tests `tls`).
    opts.insecure = true;
    opts.broker = BrokerChoice::External(amqp_url());
    opts.node_binary = Some(node_binary()?);
    opts.portal_binary = Some(PORTAL.into());
    opts.portal_http = free;
    opts.verbose = false;
    let mut fed = Federation::up(opts).await.map_err(|e| format!("{e:#}"))?;
    let url = fed.portal_url().map(str::to_owned);
    let note = fed.portal_note().map(str::to_owned);
    let result = async {
        let url = url.ok_or(format!("portal not started: {note:?}"))?;
        let page = Client::new(&url).get("/login").await?;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("Log in"));
        TestResult::Ok(())
    }
    .await;
    let forced = fed.shutdown().await.map_err(|e| format!("{e:#}"));
    fed.discard();
    assert!(
        !forced?.contains(&"portal".to_owned()),
        "the portal needed SIGKILL"
    );
    result
}
