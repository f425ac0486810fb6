//! Devices and their flags (README "Devices"): `POST /v1/devices`, `GET /v1/devices`,
//! `DELETE /v1/devices/{device}`, `PUT`/`DELETE /v1/devices/{device}/flags/{id}` and
//! `GET /v1/devices/{device}/flags`.

use serde::{Deserialize, Serialize};

use super::{DocumentMeta, Timestamp};
use crate::DocId;

/// `POST /v1/devices` body: everything optional (an empty body registers a nameless device).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevice {
    /// Free text to tell devices apart in the operator's list, e.g. "Ana's phone".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/devices` answer (201). The secret is shown this once: the node keeps only its
/// SHA-256. Flag requests of the device send it as `Authorization: Bearer <secret>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRegistration {
    /// The id the node gave the device (a UUID), used in `/v1/devices/{device}/...` paths.
    pub device: String,
    /// 64 hex digits.
    pub secret: String,
    #[serde(default)]
    pub name: String,
    pub created_at: Timestamp,
}

/// One device in `GET /v1/devices` (operators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
    /// When the device was revoked; absent while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Timestamp>,
    /// Documents it flags now.
    pub flags: u64,
}

/// `GET /v1/devices` (operators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
}

/// `DELETE /v1/devices/{device}`: the device's secret stops working, its flags go and the
/// content only they kept is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRevoked {
    pub device: String,
    pub revoked: bool,
    pub flags_removed: u64,
    pub objects_released: u64,
}

/// `PUT /v1/devices/{device}/flags/{id}` (201 for a new flag, 200 for one that existed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flagged {
    pub device: String,
    pub id: DocId,
    pub flagged: bool,
    /// The node is pulling the content now (it did not hold it).
    #[serde(default)]
    pub pulling: bool,
}

/// `DELETE /v1/devices/{device}/flags/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unflagged {
    pub device: String,
    pub id: DocId,
    pub flagged: bool,
    pub objects_released: u64,
}

/// `GET /v1/devices/{device}/flags`: the flagged documents, oldest flag first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlaggedDocuments {
    pub device: String,
    pub documents: Vec<DocumentMeta>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::DocumentVersion;

    fn round_trip<T>(v: &T) -> String
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_string(v).unwrap();
        assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), v, "{json}");
        json
    }

    #[test]
    fn every_device_body_round_trips() {
        let id = DocId::new();
        let at = Timestamp(1_763_768_000_123);
        assert_eq!(round_trip(&RegisterDevice::default()), "{}");
        round_trip(&DeviceRegistration {
            device: "d".into(),
            secret: "ab".repeat(32),
            name: "Ana's phone".into(),
            created_at: at,
        });
        let listed = round_trip(&DeviceList {
            devices: vec![DeviceInfo {
                id: "d".into(),
                name: String::new(),
                created_at: at,
                revoked: None,
                flags: 2,
            }],
        });
        assert!(!listed.contains("revoked"));
        round_trip(&DeviceRevoked {
            device: "d".into(),
            revoked: true,
            flags_removed: 2,
            objects_released: 1,
        });
        round_trip(&Flagged {
            device: "d".into(),
            id,
            flagged: true,
            pulling: true,
        });
        round_trip(&Unflagged {
            device: "d".into(),
            id,
            flagged: false,
            objects_released: 0,
        });
        let version: DocumentVersion = serde_json::from_value(serde_json::json!({
            "id": id, "version": 1, "origin": "p", "title": "t", "description": "",
            "tags": [], "filename": "f", "source": "", "scope": "global",
            "content_type": "text/plain", "md5": "0".repeat(32), "size": 0,
            "deleted": false, "created_at": at, "author": ""
        }))
        .unwrap();
        round_trip(&FlaggedDocuments {
            device: "d".into(),
            documents: vec![DocumentMeta {
                current: version,
                published_at: at,
                available_here: true,
                available_at: vec!["eu".into()],
            }],
        });
    }
}
