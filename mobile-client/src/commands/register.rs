//! `docfed register`: registers this device with the node, unless it is registered there
//! already (and the node still accepts its secret), keeps the id and secret, and pins the CA it
//! was given.

use std::time::Duration;

use super::Ctx;
use crate::client::{self, Client};
use crate::error::CliError;
use crate::{device, output};

/// `docfed register`.
pub async fn run(ctx: &Ctx, name: Option<String>, token: Option<String>) -> Result<(), CliError> {
    // The operator's token goes only where the user sent it: a server found over mDNS (anyone
    // on the LAN may advertise one) or among the fallbacks is asked nothing with it.
    if token.as_deref().is_some_and(|t| !t.is_empty()) && ctx.server.is_none() {
        return Err(CliError::Usage(
            "register --token sends the node's operator token: name the node with --server URL \
             (or DOCFED_SERVER); the token is never sent to a server found over mDNS or among \
             the fallbacks"
                .into(),
        ));
    }
    let client = ctx.online().await?;
    let (v, human) = register(&client, name, token).await?;
    let printed = output::value(&v, ctx.json, &human);
    // Enrolled through this CA: later commands trust it without --ca, and no other (even when
    // nobody read what was printed). The same for the primaries' keys.
    if let Some(ca) = &ctx.given_ca {
        client::pin_ca(ca)?;
    }
    if let Some(keys) = &ctx.given_keys {
        crate::trust::pin(keys)?;
    }
    printed
}

/// The registration with `client`'s node, new or kept: what `register` prints, as JSON and for
/// people.
async fn register(
    client: &Client,
    name: Option<String>,
    token: Option<String>,
) -> Result<(serde_json::Value, String), CliError> {
    let server = client.base.clone();
    if let Some(reg) = device::load(&server)? {
        let resp = client
            .http
            .get(client.url(&format!("/v1/devices/{}/flags", reg.device)))
            .bearer_auth(&reg.secret)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| client.network(e))?;
        if resp.status().is_success() {
            let v = serde_json::json!({
                "device": reg.device, "server": server, "name": reg.name, "new": false,
                "credentials": device::path()?,
            });
            let human = format!("already registered with {server} as device {}", reg.device);
            return Ok((v, human));
        }
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            client.check(resp).await?;
        }
        // Revoked, or the node lost its database: register anew.
    }
    let mut req = client
        .http
        .post(client.url("/v1/devices"))
        .json(&docfed_shared::wire::RegisterDevice { name });
    if let Some(t) = token.as_deref().filter(|t| !t.is_empty()) {
        req = req.bearer_auth(t);
    }
    let v = client
        .send_json::<serde_json::Value>(req)
        .await
        .map_err(|e| match e {
            CliError::Unauthorized(m) => CliError::Unauthorized(format!(
                "{m}; pass the node's operator token with --token (or DOCFED_TOKEN)"
            )),
            e => e,
        })?;
    let got: docfed_shared::wire::DeviceRegistration = serde_json::from_value(v)
        .map_err(|e| CliError::Network(format!("{server}: unexpected answer: {e}")))?;
    let path = device::save(
        &server,
        &device::Registration {
            device: got.device.clone(),
            secret: got.secret,
            name: got.name.clone(),
        },
    )?;
    // The secret stays in the file: never printed.
    let v = serde_json::json!({
        "device": got.device, "server": server, "name": got.name, "new": true,
        "credentials": path,
    });
    let human = format!(
        "registered with {server} as device {}; its secret is kept in {}",
        got.device,
        path.display()
    );
    Ok((v, human))
}

/// A 401 on a device's request: its secret no longer works there.
pub fn revoked_hint(e: CliError, server: &str) -> CliError {
    match e {
        CliError::Unauthorized(m) => CliError::Unauthorized(format!(
            "{m}. If an operator revoked this device, register it again: docfed --server {server} register"
        )),
        e => e,
    }
}
