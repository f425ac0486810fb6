//! `docfed-topology check FILE`.

use crate::common::{demo_toml, run};

#[test]
fn demo_is_ok() {
    let demo = demo_toml();
    let out = run(&["check", demo.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!(
            "{}: ok — 7 nodes (2 primaries, 2 intermediates, 3 regional; k = 2)",
            demo.display()
        )
    );
}

#[test]
fn broken_file_lists_every_problem_naming_the_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    let demo = std::fs::read_to_string(demo_toml()).unwrap();
    // Two independent mistakes: an unknown parent and a missing backup.
    let broken = demo
        .replacen(
            "parents = [\"primary-a\", \"primary-b\"]",
            "parents = [\"primary-z\"]",
            1,
        )
        .replacen("backup = \"asia\"", "", 1);
    std::fs::write(&file, broken).unwrap();

    let out = run(&["check", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(&format!("{}: ", file.display()))),
        "{stderr}"
    );
    assert!(
        stderr.contains("`mid-1`") && stderr.contains("`primary-z`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`eu`") && stderr.contains("no backup"),
        "{stderr}"
    );
}

#[test]
fn syntax_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("syntax.toml");
    std::fs::write(
        &file,
        "redundancy = 2\n\n[[node]]\nid = \"a\"\ntier = \"boss\"\n",
    )
    .unwrap();
    let out = run(&["check", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("syntax.toml") && stderr.contains("line 5"),
        "{stderr}"
    );
}

#[test]
fn missing_file_is_named() {
    let out = run(&["check", "/nonexistent/docfed.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/docfed.toml"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["check"]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
}
