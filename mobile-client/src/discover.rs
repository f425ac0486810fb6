//! Finding a regional node: the `--server` flag or `DOCFED_SERVER`, else mDNS
//! (`_docfed._tcp.local.`, regional nodes only), else the configured fallbacks. Every step
//! that was tried is remembered so a failure can say exactly what was attempted.

use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent};

use docfed_shared::presence::{SERVICE_TYPE, TXT_HTTP, TXT_ID, TXT_TIER};
use docfed_shared::Tier;

use crate::error::CliError;

/// Default fallback: the demo federation's `na` node.
pub const DEFAULT_FALLBACKS: &str = "https://127.0.0.1:7121,http://127.0.0.1:7121";

pub struct Resolved {
    pub url: String,
    /// The node's id when mDNS found it, so the user can be told which node answered.
    pub mdns_id: Option<String>,
    /// What was tried, for error messages.
    pub tried: Vec<String>,
}

/// The first server that answers: `explicit`, else a regional node found over mDNS (unless
/// `mdns_wait` is zero: `--no-mdns`) that proves it is a node of the federation
/// ([`check_advertised`]), else the first of `fallbacks` that answers. With a CA in force, no
/// `http://` URL is used, however it was named.
pub async fn resolve(
    explicit: Option<&str>,
    fallbacks: &str,
    mdns_wait: Duration,
    http: &reqwest::Client,
) -> Result<Resolved, CliError> {
    if let Some(url) = explicit {
        crate::client::check_scheme(url).map_err(|e| CliError::Usage(format!("--server {e}")))?;
        return Ok(Resolved {
            url: url.trim_end_matches('/').to_owned(),
            mdns_id: None,
            tried: vec![format!("--server {url}")],
        });
    }
    let mut tried = Vec::new();
    if mdns_wait.is_zero() {
        tried.push("mDNS: off (--no-mdns)".to_owned());
    } else if !crate::client::ca_in_force() {
        // Nothing found there could prove it is the federation's: not even looked for.
        tried.push(format!("mDNS: not used: {NO_CA_FOR_MDNS}"));
    } else {
        let probe = discovery_client()?;
        let mut refused = Vec::new();
        let found = browse_until(mdns_wait, async |id: &str, url: &str| {
            match check_advertised(&probe, id, url).await {
                Ok(()) => true,
                Err(why) => {
                    // Said at once: something on this network advertises what is not a node
                    // of the federation (or a node that is down), which its user should know.
                    eprintln!("docfed: not using {id} at {url}, found over mDNS: {why}");
                    refused.push(format!("mDNS found {id} at {url}, not used: {why}"));
                    false
                }
            }
        })
        .await;
        tried.extend(refused);
        match found {
            Some((id, url)) => {
                tried.push(format!("mDNS found {id} at {url}"));
                return Ok(Resolved {
                    url,
                    mdns_id: Some(id),
                    tried,
                });
            }
            None => tried.push(format!(
                "mDNS: no regional node of the federation answered within {mdns_wait:?}"
            )),
        }
    }
    for url in split_urls(fallbacks) {
        if let Err(why) = crate::client::check_scheme(&url) {
            tried.push(format!("fallback {url}: not used: {why}"));
            continue;
        }
        match health(http, &url).await {
            Ok(()) => {
                tried.push(format!("fallback {url}"));
                return Ok(Resolved {
                    url,
                    mdns_id: None,
                    tried,
                });
            }
            Err(why) => tried.push(format!("fallback {url}: {why}")),
        }
    }
    Err(CliError::Network(format!(
        "no docfed server found; tried: {}. Use --server URL or set DOCFED_SERVER.",
        tried.join("; ")
    )))
}

/// Why mDNS is of no use without a CA.
const NO_CA_FOR_MDNS: &str = "a server found over mDNS must present a certificate of the \
     federation, and no federation CA is pinned (`docfed --ca FILE --server URL register` pins \
     one); or name the server with --server";

/// A client for checking advertised nodes: it keeps the server's certificate.
pub fn discovery_client() -> Result<reqwest::Client, CliError> {
    crate::client::http_client_builder()
        .tls_info(true)
        .build()
        .map_err(|e| CliError::Local(e.to_string()))
}

/// Whether the node advertised over mDNS as `id` at `url` is one of the federation's: anyone on
/// the network can advertise anything, so only a server that presents a certificate of the
/// federation CA (in force: `--ca` or pinned) naming that very node, over `https://`,
/// qualifies, and only if it answers its health check. `probe` is a [`discovery_client`].
pub async fn check_advertised(probe: &reqwest::Client, id: &str, url: &str) -> Result<(), String> {
    if !crate::client::ca_in_force() {
        return Err(NO_CA_FOR_MDNS.into());
    }
    crate::client::check_scheme(url)?;
    let resp = probe
        .get(format!("{url}/v1/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| crate::transport::describe(&e))?;
    if !resp.status().is_success() {
        return Err(format!("its health check answered HTTP {}", resp.status()));
    }
    let named = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .and_then(|der| {
            docfed_http::tls::node_id_of(&rustls::pki_types::CertificateDer::from(der))
        });
    match named {
        Some(n) if n == id => Ok(()),
        Some(n) => Err(format!(
            "its certificate is node {n}'s, not {id}'s (the node it was advertised as)"
        )),
        None => Err("its certificate names no node of the federation".into()),
    }
}

/// The URLs of a comma-separated list, without trailing slashes.
pub fn split_urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect()
}

/// Whether the node at `url` answers its health check within 2 s.
pub async fn healthy(http: &reqwest::Client, url: &str) -> bool {
    health(http, url).await.is_ok()
}

/// The node at `url`'s health within 2 s, or why not; a server whose certificate is not
/// trusted is named as such, since the remedy (`--ca`) differs from an unreachable one.
pub async fn health(http: &reqwest::Client, url: &str) -> Result<(), String> {
    match http
        .get(format!("{url}/v1/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) if crate::transport::untrusted_certificate(&e) => Err(format!(
            "its TLS certificate is not trusted ({}): {}",
            crate::transport::root_cause(&e),
            crate::transport::TRUST_HINT
        )),
        Err(e) => Err(format!(
            "unreachable ({})",
            crate::transport::root_cause(&e)
        )),
    }
}

/// Listens for regional nodes advertised over mDNS for at most `wait`, handing each new one
/// (id, URL) to `accept`; returns the first accepted, once a little time passed for others to
/// arrive too (the one with the lowest id among those accepted by then, so the choice is
/// stable), else `None` at the end of `wait`.
pub async fn browse_until(
    wait: Duration,
    mut accept: impl AsyncFnMut(&str, &str) -> bool,
) -> Option<(String, String)> {
    let Ok(daemon) = ServiceDaemon::new() else {
        return None;
    };
    let Ok(rx) = daemon.browse(SERVICE_TYPE) else {
        let _ = daemon.shutdown();
        return None;
    };
    let started = Instant::now();
    let deadline = started + wait;
    let mut seen = std::collections::HashSet::new();
    let mut accepted: Vec<(String, String)> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        // One answer is enough once a little time passed for others to arrive.
        let left = if accepted.is_empty() {
            left
        } else {
            (started + Duration::from_millis(300))
                .checked_duration_since(Instant::now())
                .unwrap_or_default()
                .min(left)
        };
        match tokio::time::timeout(left, rx.recv_async()).await {
            Ok(Ok(ServiceEvent::ServiceResolved(s))) => {
                let txt = |k: &str| s.txt_properties.get_property_val_str(k).map(str::to_owned);
                if txt(TXT_TIER).as_deref() != Some(Tier::Regional.as_str()) {
                    continue;
                }
                let (Some(id), Some(http)) = (txt(TXT_ID), txt(TXT_HTTP)) else {
                    continue;
                };
                let url = http.trim_end_matches('/').to_owned();
                if seen.insert((id.clone(), url.clone())) && accept(&id, &url).await {
                    accepted.push((id, url));
                }
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let _ = daemon.shutdown();
    accepted.sort();
    accepted.into_iter().next()
}
