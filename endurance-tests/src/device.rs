//! Device registration: flags need a device registered with the node and its secret.

use anyhow::{bail, Context, Result};
use docfed_shared::wire::{DeviceRegistration, RegisterDevice};

/// Registers a device named `name` at the node `url` with the operator `token`.
pub async fn register(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    name: &str,
) -> Result<DeviceRegistration> {
    let resp = http
        .post(format!("{url}/v1/devices"))
        .bearer_auth(token)
        .json(&RegisterDevice {
            name: Some(name.to_owned()),
        })
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!(
            "HTTP {status}: device registration: {}",
            text.chars().take(200).collect::<String>()
        );
    }
    resp.json().await.context("device registration answer")
}
