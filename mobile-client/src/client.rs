//! The node HTTP API as the command line uses it, with errors mapped to exit codes.

use std::time::Duration;

use docfed_shared::wire::{DocumentList, DocumentMeta, ErrorBody, ErrorCode, VersionList};
use serde::de::DeserializeOwned;

use crate::error::CliError;

/// The TLS configuration of every client of this process: trusting the federation CA only, when
/// one was given (`--ca`, `DOCFED_CA`).
static TLS: std::sync::OnceLock<Option<rustls::ClientConfig>> = std::sync::OnceLock::new();

/// Trusts `ca` (a PEM file) for every https:// server from now on, and of its certificates only
/// nodes' ones not revoked by the federation's CRL: `DOCFED_CRL`, else `crl.pem` beside the CA
/// (where `docfed-topology certs` writes both). Without a CA, the system's trust store (rustls'
/// platform verifier) decides, which a private federation CA is not in.
pub fn trust_ca(ca: Option<std::path::PathBuf>) -> Result<(), CliError> {
    let config = match ca {
        Some(path) => {
            let crl = crl_for(&path);
            Some(
                docfed_http::tls::Trust::load(&path, crl.as_deref())
                    .and_then(|t| t.client_config_for(None, docfed_http::tls::Expect::AnyNode))
                    .map_err(|e| CliError::Local(format!("--ca: {e}")))?,
            )
        }
        None => None,
    };
    let _ = TLS.set(config);
    Ok(())
}

/// Whether a federation CA is in force (given or pinned): then only `https://` servers are
/// used, whoever names them.
pub fn ca_in_force() -> bool {
    TLS.get().is_some_and(Option::is_some)
}

/// Refuses `url` when it is plain `http://` and a CA is in force: what a pinned CA protects
/// would otherwise be given to anyone on the path (or on the LAN, through mDNS).
pub fn check_scheme(url: &str) -> Result<(), String> {
    if ca_in_force() && !url.starts_with("https://") {
        return Err(format!(
            "{url} is not https://, and this device trusts the federation's CA (--ca, or pinned \
             at registration): a pinned CA never allows plain http://; use the node's https:// URL"
        ));
    }
    Ok(())
}

/// Where the federation CA is pinned when this device registers with `--ca`:
/// `$XDG_CONFIG_HOME/docfed/ca.pem`.
pub fn pinned_ca_path() -> Result<std::path::PathBuf, CliError> {
    Ok(crate::device::config_dir()?.join("ca.pem"))
}

/// The CA to trust: `given` (`--ca`, `DOCFED_CA`), else the one pinned at registration. A
/// given CA other than the pinned one is refused (a server presenting another federation's
/// certificates, or a changed CA, must not be trusted by a mistyped path), unless `repin`:
/// registering again is how a device moves to a new CA.
pub fn choose_ca(
    given: Option<std::path::PathBuf>,
    repin: bool,
) -> Result<Option<std::path::PathBuf>, CliError> {
    let pinned = pinned_ca_path()?;
    if !pinned.exists() {
        return Ok(given);
    }
    let Some(given) = given else {
        return Ok(Some(pinned));
    };
    if repin {
        return Ok(Some(given));
    }
    let load = |p: &std::path::Path| {
        docfed_http::tls::load_certs(p, "CA certificate")
            .map_err(|e| CliError::Local(format!("--ca: {e}")))
    };
    if load(&given)? != load(&pinned)? {
        return Err(CliError::Local(format!(
            "--ca {} is not the federation CA this device pinned when it registered ({}); to \
             trust the new one, register again with it (`docfed --ca FILE register`)",
            given.display(),
            pinned.display()
        )));
    }
    Ok(Some(given))
}

/// The revocation list that goes with `ca`: `DOCFED_CRL`, else `crl.pem` beside it if there
/// is one.
fn crl_for(ca: &std::path::Path) -> Option<std::path::PathBuf> {
    match std::env::var_os("DOCFED_CRL") {
        Some(crl) => Some(std::path::PathBuf::from(crl)),
        None => Some(ca.with_file_name("crl.pem")).filter(|p| p.exists()),
    }
}

/// Pins `ca` for later commands (written beside this device's registrations), with its
/// revocation list when there is one ([`crl_for`]): pinned as `crl.pem` beside the pinned CA,
/// where [`trust_ca`] finds it, so a command run without `--ca` still refuses the nodes revoked
/// when the device registered. A later list needs registering again, or `DOCFED_CRL`. A CRL
/// pinned with an earlier CA goes: it would not verify against this one.
pub fn pin_ca(ca: &std::path::Path) -> Result<(), CliError> {
    let pinned = pinned_ca_path()?;
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).map_err(|e| CliError::Local(format!("{what} {}: {e}", p.display())))
    };
    let text = read(ca, "--ca")?;
    let crl = crl_for(ca)
        .map(|p| read(&p, "the revocation list"))
        .transpose()?;
    let pinned_crl = pinned.with_file_name("crl.pem");
    let write = || -> std::io::Result<()> {
        write_pinned(&pinned, &text)?;
        match &crl {
            Some(crl) => write_pinned(&pinned_crl, crl),
            None => match std::fs::remove_file(&pinned_crl) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    };
    write().map_err(|e| CliError::Local(format!("cannot pin the CA in {}: {e}", pinned.display())))
}

/// Writes what a device pins (CA, CRL, primaries' keys) at `path` whole or not at all: a
/// temporary file beside it, flushed, then renamed over it.
pub(crate) fn write_pinned(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The HTTP client every command uses: a connection must open within 5 s, and a transfer that
/// receives nothing for 60 s counts as broken.
pub fn http_client() -> Result<reqwest::Client, CliError> {
    http_client_builder()
        .build()
        .map_err(|e| CliError::Local(e.to_string()))
}

/// The builder of [`http_client`]: with a CA in force, https:// only (redirects included),
/// so no request can leave in clear whatever URL it was given.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let builder = match TLS.get().and_then(Option::as_ref) {
        Some(config) => {
            docfed_http::tls::client_builder().tls_backend_preconfigured(config.clone())
        }
        None => docfed_http::tls::client_builder(),
    };
    builder
        .https_only(ca_in_force())
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(60))
}

pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    /// How the server was chosen (flag, mDNS, fallback), for error messages.
    pub found_by: String,
}

impl Client {
    pub fn new(base: String, http: reqwest::Client, found_by: String) -> Self {
        Self {
            base,
            http,
            found_by,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request that failed on its way: by its causes, and for a certificate not trusted,
    /// how to trust it (`transport::describe`).
    pub fn network(&self, e: reqwest::Error) -> CliError {
        CliError::Network(format!(
            "{} (chosen by: {}): {}",
            self.base,
            self.found_by,
            crate::transport::describe(&e)
        ))
    }

    /// Turns a non-success response into the matching error, with the server's message.
    pub async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, CliError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let (msg, code) = serde_json::from_str::<ErrorBody>(&body)
            .map(|e| (e.error, e.code))
            .unwrap_or_else(|_| (format!("HTTP {status}"), ErrorCode::Unknown));
        let code = code.or_from_status(status.as_u16());
        Err(match code {
            ErrorCode::Unauthorized => CliError::Unauthorized(msg),
            ErrorCode::NotFound => CliError::NotFound(msg),
            c if c.is_transient() || status.is_server_error() => {
                CliError::Network(format!("{}: {msg}", self.base))
            }
            _ => CliError::Refused(msg),
        })
    }

    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CliError> {
        self.send_json(self.http.get(self.url(path)).query(query))
            .await
    }

    /// A body that broke off while it arrived from this server, with its cause.
    pub fn interrupted(&self, e: &reqwest::Error) -> CliError {
        CliError::Network(format!(
            "{}: transfer interrupted: {}",
            self.base,
            crate::transport::causes(e)
        ))
    }

    /// Sends `req` and reads its answer as `T` (a body of `shared::wire`, or `Value` where the
    /// answer is printed as the node sent it).
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CliError> {
        let resp = req
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.network(e))?;
        let resp = self.check(resp).await?;
        resp.json().await.map_err(|e| self.network(e))
    }

    /// `GET` of version `v`'s content from byte `from` on: with `Range` and an `If-Range` on
    /// its MD5 (the node's ETag) when resuming, so a changed content comes back whole (200).
    pub fn content_request(
        &self,
        v: &docfed_shared::wire::DocumentVersion,
        from: u64,
    ) -> reqwest::RequestBuilder {
        let req = self
            .http
            .get(self.url(&format!("/v1/documents/{}/content", v.id)))
            .query(&[("version", v.version.to_string())]);
        if from == 0 {
            return req;
        }
        req.header("Range", format!("bytes={from}-"))
            .header("If-Range", format!("\"{}\"", v.md5))
    }

    /// Search results: those whose version the pinned keys refuse are left out, each said on
    /// stderr (`trust`).
    pub async fn search(&self, query: &[(&str, String)]) -> Result<DocumentList, CliError> {
        let mut list: DocumentList = self.get_json("/v1/documents", query).await?;
        list.documents
            .retain(|d| match crate::trust::check(&d.current, &self.base) {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("docfed: {e}");
                    false
                }
            });
        Ok(list)
    }

    /// A document's metadata, refused (exit 5) unless the pinned keys accept its version.
    pub async fn info(&self, id: &str) -> Result<DocumentMeta, CliError> {
        let meta: DocumentMeta = self
            .get_json(&format!("/v1/documents/{}", check_id(id)?), &[])
            .await?;
        crate::trust::check(&meta.current, &self.base)?;
        Ok(meta)
    }

    /// A document's versions, refused (exit 5) unless the pinned keys accept every one.
    pub async fn versions(&self, id: &str) -> Result<VersionList, CliError> {
        let list: VersionList = self
            .get_json(&format!("/v1/documents/{}/versions", check_id(id)?), &[])
            .await?;
        for e in &list.versions {
            crate::trust::check(&e.version, &self.base)?;
        }
        Ok(list)
    }
}

/// Refuses a malformed id before any request, with the not-found exit code.
pub fn check_id(id: &str) -> Result<&str, CliError> {
    id.parse::<docfed_shared::DocId>()
        .map(|_| id)
        .map_err(|_| CliError::NotFound(format!("{id:?} is not a document id")))
}
