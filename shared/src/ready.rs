//! `ready.json`: what a node or portal started with `--http 127.0.0.1:0` writes into its data
//! directory once it listens, so a launcher or a test learns the port it got. Written atomically
//! (temporary file, rename), so a reader never sees half of it; `pid` tells a restarted
//! process's file from the one its predecessor left behind.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file's name inside the data directory.
pub const READY_FILE: &str = "ready.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The node's id; absent for a portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Base URL of the HTTP listener, `http://ADDR`.
    pub http: String,
    pub pid: u32,
}

impl Ready {
    /// This process, listening on `addr`.
    pub fn for_this_process(node: Option<&str>, addr: SocketAddr) -> Self {
        Ready {
            node: node.map(str::to_owned),
            http: format!("http://{addr}"),
            pid: std::process::id(),
        }
    }

    /// The same, for a listener that serves HTTPS (`https://ADDR`).
    pub fn over_tls(mut self, tls: bool) -> Self {
        if tls {
            if let Some(rest) = self.http.strip_prefix("http://") {
                self.http = format!("https://{rest}");
            }
        }
        self
    }

    /// Writes `dir/ready.json` atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{READY_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(tmp, dir.join(READY_FILE))
    }

    /// Reads `dir/ready.json`: `None` while it is absent or not (yet) a ready file.
    pub fn read(dir: &Path) -> Option<Ready> {
        let text = std::fs::read(dir.join(READY_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Removes `dir/ready.json` (at shutdown, or before a restart so a stale one is not read).
    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(READY_FILE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_reads_back_and_garbage_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Ready::read(dir.path()), None);
        let r = Ready::for_this_process(Some("eu"), "127.0.0.1:7000".parse().unwrap());
        r.write(dir.path()).unwrap();
        assert_eq!(Ready::read(dir.path()), Some(r));
        std::fs::write(dir.path().join(READY_FILE), "{\"http\":").unwrap();
        assert_eq!(Ready::read(dir.path()), None);
        Ready::remove(dir.path());
        assert!(!dir.path().join(READY_FILE).exists());
    }
}
