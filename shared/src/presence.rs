//! What a node advertises over mDNS, so that nodes and devices that browse for it agree on the
//! names: the service type and the keys of its TXT record.

/// The DNS-SD service type every docfed node registers.
pub const SERVICE_TYPE: &str = "_docfed._tcp.local.";

/// TXT keys: the node's id, its tier (`Tier`'s name), its region (empty for none) and the base
/// URL of its HTTP API.
pub const TXT_ID: &str = "id";
pub const TXT_TIER: &str = "tier";
pub const TXT_REGION: &str = "region";
pub const TXT_HTTP: &str = "http";
