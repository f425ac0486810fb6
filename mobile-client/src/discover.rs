//! Finding a regional node: the `--server` flag or `DOCFED_SERVER`, else mDNS
//! (`_docfed._tcp.local.`, regional nodes only), else the configured fallbacks. Every step
//! that was tried is remembered so a failure can say exactly what was attempted.

use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent};

use crate::error::CliError;

const SERVICE_TYPE: &str = "_docfed._tcp.local.";

/// Default fallback: the demo federation's `na` node.
pub const DEFAULT_FALLBACKS: &str = "http://127.0.0.1:7121";

pub struct Resolved {
    pub url: String,
    /// What was tried, for error messages.
    pub tried: Vec<String>,
}

pub async fn resolve(
    explicit: Option<&str>,
    fallbacks: &str,
    mdns_wait: Duration,
    http: &reqwest::Client,
) -> Result<Resolved, CliError> {
    if let Some(url) = explicit {
        return Ok(Resolved {
            url: url.trim_end_matches('/').to_owned(),
            tried: vec![format!("--server {url}")],
        });
    }
    let mut tried = Vec::new();
    match browse(mdns_wait).await {
        Some(url) => {
            if healthy(http, &url).await {
                tried.push(format!("mDNS found {url}"));
                return Ok(Resolved { url, tried });
            }
            tried.push(format!("mDNS found {url}, which did not answer"));
        }
        None => tried.push(format!(
            "mDNS: no regional node answered within {mdns_wait:?}"
        )),
    }
    for url in fallbacks
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        let url = url.trim_end_matches('/').to_owned();
        if healthy(http, &url).await {
            tried.push(format!("fallback {url}"));
            return Ok(Resolved { url, tried });
        }
        tried.push(format!("fallback {url}: unreachable"));
    }
    Err(CliError::Network(format!(
        "no docfed server found; tried: {}. Use --server URL or set DOCFED_SERVER.",
        tried.join("; ")
    )))
}

async fn healthy(http: &reqwest::Client, url: &str) -> bool {
    http.get(format!("{url}/v1/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// The first regional node advertised over mDNS (lowest id, so the choice is stable).
async fn browse(wait: Duration) -> Option<String> {
    let daemon = ServiceDaemon::new().ok()?;
    let rx = daemon.browse(SERVICE_TYPE).ok()?;
    let deadline = Instant::now() + wait;
    let mut found: Vec<(String, String)> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, rx.recv_async()).await {
            Ok(Ok(ServiceEvent::ServiceResolved(s))) => {
                let txt = |k: &str| s.txt_properties.get_property_val_str(k).map(str::to_owned);
                if txt("tier").as_deref() == Some("regional") {
                    if let (Some(id), Some(http)) = (txt("id"), txt("http")) {
                        found.push((id, http));
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
    found.into_iter().next().map(|(_, http)| http)
}
