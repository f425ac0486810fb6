//! This device's registrations: one per node (a device registers with the node it flags
//! documents on), kept in `$XDG_CONFIG_HOME/docfed/devices.json` (default
//! `~/.config/docfed/devices.json`), mode 0600: it holds the secrets.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// What `docfed register` got from a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub device: String,
    pub secret: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    /// Node base URL → this device's registration there.
    #[serde(default)]
    servers: BTreeMap<String, Registration>,
}

/// The directory of the client's configuration.
pub(crate) fn config_dir() -> Result<PathBuf, CliError> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("docfed"))
        .ok_or_else(|| {
            CliError::Local("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep this device's registration".into())
        })
}

/// Where registrations are kept.
pub fn path() -> Result<PathBuf, CliError> {
    Ok(config_dir()?.join("devices.json"))
}

fn read() -> Result<File, CliError> {
    let path = path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| CliError::Local(format!("{} is not readable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(CliError::Local(format!("{}: {e}", path.display()))),
    }
}

/// This device's registration with the node at `server`, if any.
pub fn load(server: &str) -> Result<Option<Registration>, CliError> {
    Ok(read()?.servers.get(server).cloned())
}

/// The name this device registered under anywhere, to enrol under the same name elsewhere.
pub fn any_name() -> Result<Option<String>, CliError> {
    Ok(read()?
        .servers
        .into_values()
        .map(|r| r.name)
        .find(|n| !n.is_empty()))
}

/// The registration with `server`, or an error that says how to register (exit code 6, as
/// the node itself would refuse the request).
pub fn require(server: &str) -> Result<Registration, CliError> {
    load(server)?.ok_or_else(|| {
        CliError::Refused(format!(
            "this device is not registered with {server}: run `docfed --server {server} register` \
             first (with --token or DOCFED_TOKEN, the node's operator token, unless the node has \
             open enrollment)"
        ))
    })
}

/// Keeps the registration with `server`, replacing an earlier one. Written to a temporary file
/// (mode 0600 from the start), fsynced, then renamed over the old one.
pub fn save(server: &str, reg: &Registration) -> Result<PathBuf, CliError> {
    let dir = config_dir()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let mut file = read()?;
    file.servers.insert(server.to_owned(), reg.clone());
    let path = dir.join("devices.json");
    let tmp = dir.join(format!("devices.json.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(
            serde_json::to_string_pretty(&file)
                .expect("serialisable")
                .as_bytes(),
        )?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(CliError::Local(format!("{}: {e}", path.display())));
    }
    Ok(path)
}
