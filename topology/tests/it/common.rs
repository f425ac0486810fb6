//! Helpers shared by the integration tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_docfed-topology")
}

/// `topology/demo.toml` of this checkout.
pub fn demo_toml() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo.toml")
}

/// Runs `docfed-topology ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("docfed-topology runs")
}

/// `n` distinct ports in 20000-60000 that were free when checked (addresses in a topology file
/// are fixed, so port 0 is not an option). Racy by nature; the random range keeps collisions
/// between concurrent tests unlikely.
pub fn free_ports(n: usize) -> Vec<u16> {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let p: u16 = rng.random_range(20000..=60000);
        if !ports.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok() {
            ports.push(p);
        }
    }
    ports
}

/// The demo topology with its seven HTTP ports replaced by `ports` (in file order).
pub fn demo_with_ports(ports: &[u16]) -> String {
    let mut text = std::fs::read_to_string(demo_toml()).expect("demo.toml readable");
    for (old, new) in [7101, 7102, 7111, 7112, 7121, 7122, 7123].iter().zip(ports) {
        text = text.replace(&format!("127.0.0.1:{old}"), &format!("127.0.0.1:{new}"));
    }
    text
}
