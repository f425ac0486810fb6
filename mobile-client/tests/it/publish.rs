//! `docfed publish` against a real standalone node: folders recursively, one JSON object per
//! file, a non-zero exit when a file is refused.

use std::path::Path;

use crate::common::*;

/// A document's metadata and content, from the node's API.
async fn document(url: &str, id: &str) -> TestResult<(serde_json::Value, Vec<u8>)> {
    let c = docfed_http::tls::client_builder().build()?;
    let meta: serde_json::Value = c
        .get(format!("{url}/v1/documents/{id}"))
        .send()
        .await?
        .json()
        .await?;
    let resp = c
        .get(format!("{url}/v1/documents/{id}/content"))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    Ok((meta, resp.bytes().await?.to_vec()))
}

fn write(path: &Path, bytes: &[u8]) -> TestResult {
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(path, bytes)?;
    Ok(())
}

async fn document_count(url: &str) -> TestResult<usize> {
    let list = await_json(
        &format!("{url}/v1/documents?limit=1000"),
        "the directory",
        std::time::Duration::from_secs(10),
        |_| true,
    )
    .await?;
    Ok(list["documents"].as_array().unwrap().len())
}

#[tokio::test]
async fn a_folder_is_published_recursively_and_each_file_answered() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let node = Standalone::start(&tmp.path().join("node")).await?;
    let root = tmp.path().join("materials");
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = vec![
        (root.join("a.txt"), b"alpha".to_vec()),
        // In name order: "deeper" before "empty.bin".
        (root.join("sub/deeper/report.pdf"), pattern(3, 200_000)),
        (root.join("sub/empty.bin"), Vec::new()),
        (tmp.path().join("one.txt"), b"1".to_vec()),
    ];
    for (p, b) in &files {
        write(p, b)?;
    }
    let out = docfed(&[
        "--server",
        &node.url,
        "--json",
        "publish",
        "--token",
        TOKEN,
        "--tags",
        "launch,q3",
        root.to_str().unwrap(),
        files[3].0.to_str().unwrap(),
    ]);
    let answer = ok(&out);
    let items = answer.as_array().expect("a JSON array");
    assert_eq!(items.len(), 4, "{answer}");
    for (item, (path, bytes)) in items.iter().zip(&files) {
        assert_eq!(item["path"], path.to_str().unwrap(), "{answer}");
        assert_eq!(item["version"], 1);
        assert_eq!(item["size"], bytes.len());
        assert_eq!(item["md5"], docfed_test_kit::md5_hex(bytes));
        let (meta, content) = document(&node.url, item["id"].as_str().unwrap()).await?;
        assert_eq!(&content, bytes);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(meta["title"], name);
        assert_eq!(meta["filename"], name);
        assert_eq!(meta["tags"], serde_json::json!(["launch", "q3"]));
    }
    assert_eq!(document_count(&node.url).await?, 4);

    // For people: one line per file and a summary; the token from DOCFED_TOKEN.
    let more = tmp.path().join("more");
    write(&more.join("x.txt"), b"x")?;
    write(&more.join("y/z.txt"), b"zz")?;
    let out = docfed_with_env(
        &[("DOCFED_TOKEN", TOKEN)],
        &["--server", &node.url, "publish", more.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with(&format!("published {}  ", more.join("x.txt").display())));
    assert!(lines[0].ends_with("  v1  1 B"), "{stdout}");
    assert!(lines[1].starts_with(&format!("published {}  ", more.join("y/z.txt").display())));
    assert_eq!(lines[2], "published 2 of 2 documents (3 B)");
    assert_eq!(document_count(&node.url).await?, 6);
    Ok(())
}

#[tokio::test]
async fn a_refused_or_unreadable_file_makes_the_exit_code_non_zero() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let node =
        Standalone::start_with(&tmp.path().join("node"), &["--max-upload-size", "1KiB"]).await?;
    let root = tmp.path().join("docs");
    write(&root.join("big.bin"), &pattern(5, 5000))?;
    write(&root.join("small.txt"), b"small")?;
    std::os::unix::fs::symlink(root.join("small.txt"), root.join("z-link"))?;

    // Without the token: refused as a whole, nothing published.
    let out = docfed(&["--server", &node.url, "publish", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
    assert_eq!(document_count(&node.url).await?, 0);
    // No node there: the network's exit code.
    let out = docfed(&[
        "--server",
        "http://127.0.0.1:9",
        "publish",
        "--token",
        TOKEN,
        root.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4));
    // The token goes only to a server the user named.
    let out = docfed(&["publish", "--token", TOKEN, root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));

    let out = docfed(&[
        "--server",
        &node.url,
        "--json",
        "publish",
        "--token",
        TOKEN,
        root.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = stdout_json(&out);
    let items = answer.as_array().unwrap();
    assert_eq!(items.len(), 3, "{answer}");
    assert!(
        items[0]["error"].as_str().unwrap().contains("1024"),
        "{answer}"
    );
    assert!(items[0].get("id").is_none());
    assert_eq!(items[1]["size"], 5, "{answer}");
    assert!(items[2]["error"]
        .as_str()
        .unwrap()
        .contains("symbolic link"));
    assert_eq!(document_count(&node.url).await?, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 3 documents were not published"));

    // A file that cannot be read alone: the local-error code.
    let out = docfed(&[
        "--server",
        &node.url,
        "publish",
        "--token",
        TOKEN,
        tmp.path().join("missing.txt").to_str().unwrap(),
        root.join("small.txt").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("refused ") && stdout.contains("missing.txt"),
        "{stdout}"
    );
    assert_eq!(document_count(&node.url).await?, 2);
    Ok(())
}
