//! The content store under stress: clients that vanish, full disks, identical content, hostile
//! file names.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn client_disconnecting_mid_upload_leaves_nothing() -> TestResult {
    let node = TestNode::start().await?;
    let addr = node.url.trim_start_matches("http://").to_owned();
    let tmp_dir = node.dir.join("tmp");
    let mut sock = std::net::TcpStream::connect(&addr)?;
    write!(
        sock,
        "POST /v1/documents?title=vanishing HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 10000000\r\n\r\n"
    )?;
    sock.write_all(&pattern(3, 1_000_000))?;
    // The upload really started: its temporary file exists.
    wait_until(
        Duration::from_secs(10),
        "the upload's temporary file",
        || !files_under(&tmp_dir).is_empty(),
    )
    .await?;
    drop(sock);
    wait_until(
        Duration::from_secs(10),
        "the temporary file to be removed",
        || files_under(&tmp_dir).is_empty(),
    )
    .await?;
    let c = client();
    let feed: Value = c.get(node.url("/v1/changes")).send().await?.json().await?;
    assert_eq!(feed["changes"], serde_json::json!([]));
    let list: Value = c
        .get(node.url("/v1/documents?deleted=any"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list["documents"], serde_json::json!([]));
    assert!(files_under(&node.dir.join("objects")).is_empty());
    Ok(())
}

#[tokio::test]
async fn identical_content_is_stored_once() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let data = pattern(4, 200_000);
    let mut ids = Vec::new();
    for title in ["first", "second"] {
        let resp = auth(c.post(node.url(&format!("/v1/documents?title={title}"))))
            .body(data.clone())
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::CREATED);
        ids.push(
            resp.json::<Value>().await?["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_ne!(ids[0], ids[1]);
    assert_eq!(files_under(&node.dir.join("objects")).len(), 1);
    for id in &ids {
        let body = c
            .get(node.url(&format!("/v1/documents/{id}/content")))
            .send()
            .await?
            .bytes()
            .await?;
        assert_eq!(body.as_ref(), &data[..]);
    }
    Ok(())
}

#[tokio::test]
async fn file_names_are_metadata_only() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let evil = "../../../../escaped.txt";
    let resp = auth(c.post(node.url("/v1/documents?title=t")))
        .query(&[("filename", evil)])
        .body("payload")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = resp.json::<Value>().await?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let meta: Value = c
        .get(node.url(&format!("/v1/documents/{id}")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(meta["filename"], evil);
    let root = node.dir.parent().unwrap();
    for f in files_under(root) {
        let rel = f
            .strip_prefix(&node.dir)
            .map_err(|_| format!("file outside the data dir: {}", f.display()))?;
        let name = rel.to_string_lossy();
        let expected = name.starts_with("node.sqlite")
            || ["ready.json", "node.log"].contains(&name.as_ref())
            || (name.starts_with("objects/") && name.len() == "objects/ab/".len() + 32);
        assert!(expected, "unexpected file {name}");
    }
    let resp = c
        .get(node.url(&format!("/v1/documents/{id}/content")))
        .send()
        .await?;
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"escaped.txt\"; filename*=UTF-8''..%2F..%2F..%2F..%2Fescaped.txt"
    );
    Ok(())
}

/// `curl -O -J` reads only `filename=`: it must save a document under its name (made plain
/// ASCII), never as `content`, and never outside the directory it was asked to write to.
#[tokio::test]
async fn curl_remote_header_name_saves_the_document_under_its_name() -> TestResult {
    let node = TestNode::start().await?;
    let c = client();
    let out = tempfile::tempdir()?;
    for (filename, saved) in [
        ("annual-report 2026.pdf", "annual-report 2026.pdf"),
        ("Rapport d'été.pdf", "Rapport d'_t_.pdf"),
        ("../../../escaped.txt", "escaped.txt"),
    ] {
        let resp = auth(c.post(node.url("/v1/documents?title=t")))
            .query(&[("filename", filename)])
            .body(filename.to_owned())
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let id = resp.json::<Value>().await?["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let status = Command::new("curl")
            .args(["-sS", "--fail", "-O", "-J", "--output-dir"])
            .arg(out.path())
            .arg(node.url(&format!("/v1/documents/{id}/content")))
            .status()?;
        assert!(status.success(), "curl failed for {filename:?}");
        let path = out.path().join(saved);
        assert_eq!(
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?,
            filename
        );
    }
    assert_eq!(files_under(out.path()).len(), 3, "nothing else was written");
    Ok(())
}

/// A small tmpfs, so the disk really fills. Needs root, as CI has.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "docfed-test"])
            .arg(dir.path())
            .status()?
            .success();
        if !ok {
            return Err(
                "mounting a tmpfs failed: this test needs root (CAP_SYS_ADMIN), as CI has".into(),
            );
        }
        Ok(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn full_disk_gives_507_and_leaves_nothing_half_written() -> TestResult {
    let fs = Tmpfs::mount("24m")?;
    let data_dir = fs.dir.path().join("data");
    let node = TestNode::start_in(&data_dir, &[]).await?;
    let c = client();

    // Announced size larger than the free space: refused before a byte is written.
    let resp = auth(c.post(node.url("/v1/documents?title=big")))
        .body(vec![0u8; 40 * 1024 * 1024])
        .send()
        .await;
    match resp {
        Ok(resp) => {
            assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
            assert_eq!(resp.json::<Value>().await?["code"], "insufficient_storage");
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }

    // No size announced: the disk fills mid-write.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|i| Ok(pattern(i, 1024 * 1024))).collect();
    // A new client: the node closed the first request's connection without reading its body,
    // and a request sent on that pooled connection could fail before reaching the node.
    let resp = auth(client().post(node.url("/v1/documents?title=big2")))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    }
    wait_until(
        Duration::from_secs(10),
        "two 507 answers in the node's log",
        || node.log().matches("status=507").count() >= 2,
    )
    .await
    .map_err(|e| format!("{e}; node log:\n{}", node.log()))?;
    wait_until(
        Duration::from_secs(10),
        "temporary files to be removed",
        || files_under(&data_dir.join("tmp")).is_empty(),
    )
    .await?;
    assert!(files_under(&data_dir.join("objects")).is_empty());
    let feed: Value = c.get(node.url("/v1/changes")).send().await?.json().await?;
    assert_eq!(feed["changes"], serde_json::json!([]));

    // The space came back: a small upload works.
    let small = pattern(5, 1024 * 1024);
    let resp = auth(c.post(node.url("/v1/documents?title=small")))
        .body(small.clone())
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = resp.json::<Value>().await?["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = c
        .get(node.url(&format!("/v1/documents/{id}/content")))
        .send()
        .await?
        .bytes()
        .await?;
    assert_eq!(body.as_ref(), &small[..]);
    drop(node);
    Ok(())
}

/// Writes zeros into `path` until the file system is full.
fn fill_disk(path: &std::path::Path) -> TestResult {
    let mut f = std::fs::File::create(path)?;
    let block = vec![0u8; 64 * 1024];
    for size in [block.len(), 4096, 512, 1] {
        while let Ok(n) = f.write(&block[..size]) {
            if n == 0 {
                break;
            }
        }
    }
    Ok(())
}

/// Acknowledged after a full disk means durable. Found by the endurance harness: a COMMIT that
/// failed on a full disk left the writer connection inside a transaction, every later "commit"
/// went into it, invisible to readers, and a crash then lost edits the node had acknowledged.
#[tokio::test]
async fn acknowledged_writes_after_a_full_disk_survive_a_crash() -> TestResult {
    let fs = Tmpfs::mount("24m")?;
    let data_dir = fs.dir.path().join("data");
    let mut node = TestNode::start_in(&data_dir, &[]).await?;
    let c = client();
    let publish = |title: String, body: Vec<u8>| {
        let c = c.clone();
        let url = node.url(&format!("/v1/documents?title={title}"));
        async move { auth(c.post(url)).body(body).send().await }
    };
    for i in 0..20 {
        let r = publish(format!("before-{i}"), pattern(i, 4096)).await?;
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    let ballast = fs.dir.path().join("ballast");
    fill_disk(&ballast)?;
    let mut refused = 0;
    for i in 0..30 {
        match publish(format!("during-{i}"), Vec::new()).await {
            Ok(r) if r.status().is_success() => {}
            _ => refused += 1,
        }
    }
    assert!(refused > 0, "a full disk refused no edit");
    std::fs::remove_file(&ballast)?;

    let mut ids = Vec::new();
    for i in 0..5 {
        let r = publish(format!("after-{i}"), pattern(100 + i, 4096)).await?;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await?);
        ids.push(r.json::<Value>().await?["id"].as_str().unwrap().to_owned());
    }
    let visible = |node: &TestNode| {
        let c = c.clone();
        let urls: Vec<String> = ids
            .iter()
            .map(|id| node.url(&format!("/v1/documents/{id}")))
            .collect();
        async move {
            let mut missing = Vec::new();
            for url in urls {
                if c.get(&url).send().await?.status() != StatusCode::OK {
                    missing.push(url);
                }
            }
            TestResult::Ok(missing)
        }
    };
    assert_eq!(
        visible(&node).await?,
        Vec::<String>::new(),
        "acknowledged, not visible"
    );
    node.kill();
    node.start_again().await?;
    assert_eq!(
        visible(&node).await?,
        Vec::<String>::new(),
        "acknowledged, lost in a crash"
    );
    drop(node);
    Ok(())
}
