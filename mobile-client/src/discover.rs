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
/// `mdns_wait` is zero: `--no-mdns`), else the first of `fallbacks` that answers.
pub async fn resolve(
    explicit: Option<&str>,
    fallbacks: &str,
    mdns_wait: Duration,
    http: &reqwest::Client,
) -> Result<Resolved, CliError> {
    if let Some(url) = explicit {
        return Ok(Resolved {
            url: url.trim_end_matches('/').to_owned(),
            mdns_id: None,
            tried: vec![format!("--server {url}")],
        });
    }
    let mut tried = Vec::new();
    if mdns_wait.is_zero() {
        tried.push("mDNS: off (--no-mdns)".to_owned());
    } else {
        match browse(mdns_wait).await.into_iter().next() {
            Some((id, url)) => {
                if healthy(http, &url).await {
                    tried.push(format!("mDNS found {id} at {url}"));
                    return Ok(Resolved {
                        url,
                        mdns_id: Some(id),
                        tried,
                    });
                }
                tried.push(format!("mDNS found {id} at {url}, which did not answer"));
            }
            None => tried.push(format!(
                "mDNS: no regional node answered within {mdns_wait:?}"
            )),
        }
    }
    for url in split_urls(fallbacks) {
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

/// The regional nodes advertised over mDNS within `wait` as (id, URL), by id so that the first
/// choice is stable.
pub async fn browse(wait: Duration) -> Vec<(String, String)> {
    let Ok(daemon) = ServiceDaemon::new() else {
        return Vec::new();
    };
    let Ok(rx) = daemon.browse(SERVICE_TYPE) else {
        let _ = daemon.shutdown();
        return Vec::new();
    };
    let deadline = Instant::now() + wait;
    let mut found: Vec<(String, String)> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, rx.recv_async()).await {
            Ok(Ok(ServiceEvent::ServiceResolved(s))) => {
                let txt = |k: &str| s.txt_properties.get_property_val_str(k).map(str::to_owned);
                if txt(TXT_TIER).as_deref() == Some(Tier::Regional.as_str()) {
                    if let (Some(id), Some(http)) = (txt(TXT_ID), txt(TXT_HTTP)) {
                        found.push((id, http.trim_end_matches('/').to_owned()));
                        // One answer is enough once a little time passed for others to arrive.
                        if wait.saturating_sub(left) > Duration::from_millis(300) {
                            break;
                        }
                    }
                }
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let _ = daemon.shutdown();
    found.sort();
    found.dedup();
    found
}
