//! The content keys that seal content at rest, read from their files (or `DOCFED_CONTENT_KEY`).

use std::path::PathBuf;

use super::ConfigError;

/// The content keys from `--content-key-file` or `DOCFED_CONTENT_KEY`, and old ones.
pub(super) fn content_keys(
    file: Option<&std::path::Path>,
    old: &[PathBuf],
) -> Result<Option<crate::atrest::Keys>, ConfigError> {
    use crate::atrest::ContentKey;
    let current = match (file, std::env::var("DOCFED_CONTENT_KEY").ok()) {
        (Some(path), _) => ContentKey::load(path),
        (None, Some(hex)) => {
            ContentKey::from_hex(&hex).map_err(|e| format!("DOCFED_CONTENT_KEY: {e}"))
        }
        (None, None) => return Ok(None),
    }
    .map_err(ConfigError::ContentKey)?;
    let old = old
        .iter()
        .map(|p| ContentKey::load(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConfigError::ContentKey)?;
    Ok(Some(crate::atrest::Keys { current, old }))
}
