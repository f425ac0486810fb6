//! Devices and their flags (README "Devices"):
//! * `POST /v1/devices` registers a device: the node's token, or anyone with
//!   `--open-enrollment` (up to `--max-devices` active devices); answers the device's id and its
//!   secret, which the node keeps only as a SHA-256.
//! * `GET /v1/devices` lists them, `DELETE /v1/devices/{device}` revokes one (its flags go and
//!   what only they kept is released): the node's token.
//! * `PUT`/`DELETE /v1/devices/{device}/flags/{id}` and `GET /v1/devices/{device}/flags`: the
//!   device's secret as a bearer token, or the node's token. A flagged document's content is
//!   kept on this node (pulled now if needed, and every new version too) so the device can get
//!   it whenever it connects; a flag counts against the device's quotas
//!   (`--max-flags-per-device`, `--max-flagged-bytes-per-device`: 429 beyond). Unflagging
//!   releases what nothing else here needs (`federation::release`).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytesize::ByteSize;
use docfed_shared::messages::Notification;
use docfed_shared::wire::devices::{
    DeviceInfo, DeviceList, DeviceRegistration, DeviceRevoked, Flagged, FlaggedDocuments,
    RegisterDevice, Unflagged,
};
use docfed_shared::wire::{ChangeKind, DocumentMeta, ErrorCode, Timestamp};

use docfed_shared::secrets::constant_time_eq;

use super::{carries_token, parse_id, AppState, Authorized, JsonBody};
use crate::db::devices::{
    device_active, flag_usage, has_flag, new_device_id, new_secret, revoke_device, secret_hash,
    RegisterError,
};
use crate::db::documents::{current_version, object_known};
use crate::error::ApiError;
use crate::federation::release::release;

/// Longest device name, in characters.
const MAX_NAME: usize = 100;

fn parse_device(raw: &str) -> Result<String, ApiError> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::invalid(
            "device",
            "must be 1-64 characters of A-Z, a-z, 0-9, `-`, `_`, `.`",
        ))
    }
}

/// Who may register a device: the operator (the node's token), or anyone when the node has
/// open enrollment. Checked before the body is read.
pub struct Enrollment {
    by_operator: bool,
}

impl FromRequestParts<AppState> for Enrollment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &AppState) -> Result<Self, ApiError> {
        let by_operator = carries_token(&parts.headers, node);
        if by_operator || node.config.devices.open_enrollment {
            Ok(Enrollment { by_operator })
        } else {
            Err(ApiError::EnrollmentClosed)
        }
    }
}

/// `POST /v1/devices`.
pub async fn register(
    State(node): State<AppState>,
    enrollment: Enrollment,
    JsonBody(body): JsonBody<Option<RegisterDevice>>,
) -> Result<(StatusCode, Json<DeviceRegistration>), ApiError> {
    let name = body.and_then(|b| b.name).unwrap_or_default();
    let name = name.trim();
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            format!("at most {MAX_NAME} characters, no control characters"),
        ));
    }
    let (id, secret) = (new_device_id(), new_secret());
    let max = node.config.devices.max_devices;
    let created = match node
        .db
        .register_device(&id, name, &secret_hash(&secret), max)
        .await
    {
        Ok(at) => at,
        Err(RegisterError::Full { active }) => {
            tracing::warn!(
                active,
                max,
                "device registration refused: --max-devices reached"
            );
            return Err(ApiError::LimitReached {
                code: ErrorCode::DeviceLimit,
                limit: "max_devices",
                value: max.to_string(),
                message: format!(
                    "this node has {active} active devices, the most it registers; an operator \
                     can revoke unused ones (DELETE /v1/devices/{{device}})"
                ),
            });
        }
        Err(RegisterError::Db(e)) => return Err(e.into()),
    };
    tracing::info!(device = %id, name, by_operator = enrollment.by_operator, "device registered");
    Ok((
        StatusCode::CREATED,
        Json(DeviceRegistration {
            device: id,
            secret,
            name: name.to_owned(),
            created_at: Timestamp(created),
        }),
    ))
}

/// `GET /v1/devices` (token).
pub async fn list(
    State(node): State<AppState>,
    _: Authorized,
) -> Result<Json<DeviceList>, ApiError> {
    let devices: Vec<DeviceInfo> = node
        .db
        .devices()
        .await?
        .into_iter()
        .map(|d| DeviceInfo {
            id: d.id,
            name: d.name,
            created_at: Timestamp(d.created_at),
            revoked: d.revoked.map(Timestamp),
            flags: d.flags.max(0) as u64,
        })
        .collect();
    Ok(Json(DeviceList { devices }))
}

/// `DELETE /v1/devices/{device}` (token): the device's secret stops working, its flags go and
/// the content only they kept here is released.
pub async fn revoke(
    State(node): State<AppState>,
    _: Authorized,
    Path(device): Path<String>,
) -> Result<Json<DeviceRevoked>, ApiError> {
    let device = parse_device(&device)?;
    let mut tx = node.db.begin_write().await?;
    let Some(docs) = revoke_device(&mut tx, &device).await? else {
        return Err(ApiError::not_found(format!("device {device}")));
    };
    let released = release(&node, &mut tx, &docs).await?;
    tx.commit().await?;
    let objects = released.objects();
    released.finish(&node).await;
    tracing::info!(device = %device, flags_removed = docs.len(), objects_released = objects, "device revoked");
    Ok(Json(DeviceRevoked {
        device,
        revoked: true,
        flags_removed: docs.len() as u64,
        objects_released: objects as u64,
    }))
}

/// Lets a request act on `device`'s flags: the device's own secret, or the node's token. An
/// unknown or revoked device gets the same 401 as a wrong secret, so ids cannot be probed;
/// the operator, who may list devices anyway, is told plainly.
async fn authorize(node: &AppState, headers: &HeaderMap, device: &str) -> Result<(), ApiError> {
    let stored = node.db.active_device_hash(device).await?;
    if carries_token(headers, node) {
        return match stored {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found(format!(
                "active device {device} (unknown or revoked)"
            ))),
        };
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    // Hash and compare even when there is nothing to compare with (a stand-in that matches no
    // hash), so an unknown device takes as long as a wrong secret.
    let presented = secret_hash(presented);
    let expected = stored.unwrap_or_else(|| "-".repeat(64));
    if constant_time_eq(presented, expected) {
        Ok(())
    } else {
        Err(ApiError::DeviceUnauthorized)
    }
}

/// `PUT /v1/devices/{device}/flags/{id}`: 201 for a new flag, 200 if it was flagged already
/// (counted once).
pub async fn flag(
    State(node): State<AppState>,
    Path((device, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Flagged>), ApiError> {
    let device = parse_device(&device)?;
    let id = parse_id(&id)?;
    authorize(&node, &headers, &device).await?;
    let mut tx = node.db.begin_write().await?;
    // Revoked since `authorize` looked: no flag for it.
    if !device_active(&mut tx, &device).await? {
        return Err(ApiError::DeviceUnauthorized);
    }
    // The current version as the writer sees it: a version recorded after a read outside this
    // transaction would find no flag (the inbox pulls only flagged documents' new versions),
    // and this flag would queue the version before it; the current bytes would never be pulled
    // nor their receipt sent.
    let current = current_version(&mut tx, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("document {id}")))?;
    let new = !has_flag(&mut *tx, &device, &id).await?;
    if new {
        let limits = node.config.devices;
        let usage = flag_usage(&mut tx, &device).await?;
        if usage.flags + 1 > limits.max_flags {
            return Err(ApiError::LimitReached {
                code: ErrorCode::FlagQuota,
                limit: "max_flags_per_device",
                value: limits.max_flags.to_string(),
                message: format!(
                    "device {device} flags {} documents already, the most this node allows; \
                     unflag one first",
                    usage.flags
                ),
            });
        }
        let size = current.size;
        if usage.bytes.saturating_add(size) > limits.max_flagged_bytes {
            return Err(ApiError::LimitReached {
                code: ErrorCode::FlagQuota,
                limit: "max_flagged_bytes_per_device",
                value: format!(
                    "{} ({} bytes)",
                    ByteSize(limits.max_flagged_bytes),
                    limits.max_flagged_bytes
                ),
                message: format!(
                    "device {device}'s flagged documents hold {} bytes; this one ({size} bytes) \
                     would take them over the most this node keeps per device",
                    usage.bytes
                ),
            });
        }
        check_node_total(&node, &mut tx, &id, &current).await?;
        crate::db::devices::add_flag(&mut *tx, &device, &id).await?;
    }
    let mut pulling = false;
    if let Some(fed) = node.federation() {
        let d = &current;
        if !d.deleted && !object_known(&mut tx, &d.md5).await? {
            let sources = crate::federation::ondemand::queue_sources(&node, d);
            if let Some(origin) = sources.first() {
                let n = Notification {
                    document: d.clone(),
                    kind: ChangeKind::Updated,
                    origin_url: origin.clone(),
                    targets: Vec::new(),
                    content: None,
                };
                crate::federation::fetch::enqueue_fetch(&mut tx, fed, &n, &[]).await?;
                pulling = true;
            }
        }
    }
    tx.commit().await?;
    if pulling {
        node.fetch_wake.notify_one();
    }
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Flagged {
            device,
            id,
            flagged: true,
            pulling,
        }),
    ))
}

/// Refuses a new flag that would make this node keep more than `max_flagged_bytes` for devices
/// alone: content its routing keeps anyway costs nothing more, and neither does a document
/// another device flags already. Open enrolment lets anyone add devices, so the per-device
/// quotas alone would add up to every region's content.
async fn check_node_total(
    node: &AppState,
    tx: &mut crate::db::WriteTx,
    id: &docfed_shared::DocId,
    current: &docfed_shared::wire::DocumentVersion,
) -> Result<(), ApiError> {
    let Some(fed) = node.federation() else {
        // A standalone node holds every document already.
        return Ok(());
    };
    if fed.keeps_content(&current.scope)
        || crate::db::devices::flagged_by_any(&mut **tx, id).await?
    {
        return Ok(());
    }
    let kept_for_devices: u64 = crate::db::devices::flagged_bytes_by_scope(tx)
        .await?
        .into_iter()
        .filter(|(scope, _)| {
            scope
                .parse()
                .map_or(true, |scope| !fed.keeps_content(&scope))
        })
        .map(|(_, bytes)| bytes)
        .sum();
    let max = node.config.devices.max_flagged_bytes_total;
    if kept_for_devices.saturating_add(current.size) > max {
        tracing::warn!(
            kept_for_devices,
            max,
            document = %id,
            "flag refused: --max-flagged-bytes reached"
        );
        return Err(ApiError::LimitReached {
            code: ErrorCode::FlagQuota,
            limit: "max_flagged_bytes",
            value: format!("{} ({max} bytes)", ByteSize(max)),
            message: format!(
                "this node keeps {kept_for_devices} bytes of other regions' content for its \
                 devices' flags; this document ({} bytes) would take it over the most it keeps \
                 for all devices together",
                current.size
            ),
        });
    }
    Ok(())
}

/// `DELETE /v1/devices/{device}/flags/{id}`: removes the flag and releases what only it kept.
pub async fn unflag(
    State(node): State<AppState>,
    Path((device, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Unflagged>, ApiError> {
    let device = parse_device(&device)?;
    let id = parse_id(&id)?;
    authorize(&node, &headers, &device).await?;
    let mut tx = node.db.begin_write().await?;
    if !crate::db::devices::remove_flag(&mut *tx, &device, &id).await? {
        return Err(ApiError::not_found(format!(
            "flag of document {id} by device {device}"
        )));
    }
    let released = release(&node, &mut tx, &[id]).await?;
    tx.commit().await?;
    let objects = released.objects();
    released.finish(&node).await;
    Ok(Json(Unflagged {
        device,
        id,
        flagged: false,
        objects_released: objects as u64,
    }))
}

/// `GET /v1/devices/{device}/flags`: the flagged documents, oldest flag first.
pub async fn flags(
    State(node): State<AppState>,
    Path(device): Path<String>,
    headers: HeaderMap,
) -> Result<Json<FlaggedDocuments>, ApiError> {
    let device = parse_device(&device)?;
    authorize(&node, &headers, &device).await?;
    let ids = crate::db::devices::flags_of(node.db.reader(), &device).await?;
    let mut documents: Vec<DocumentMeta> = Vec::with_capacity(ids.len());
    for id in ids {
        if let Ok(id) = id.parse() {
            if let Some(mut d) = node.db.document(&id).await? {
                d.available_at = node.holders(&d.current.scope);
                documents.push(d);
            }
        }
    }
    Ok(Json(FlaggedDocuments { device, documents }))
}
