//! The retention policy (ARCHITECTURE.md §4.4): the tier's defaults, overlaid by the merged
//! `[retention]` settings, each validated with the name of the setting it came from.

use docfed_shared::topology::Tier;

use super::{ConfigError, RetentionSettings};

/// The tier's retention defaults, overlaid by the merged settings (flags over the file's
/// `[retention]`).
pub(super) fn policy(
    tier: Option<Tier>,
    settings: &RetentionSettings,
) -> Result<crate::retention::Policy, ConfigError> {
    use crate::retention::{parse_count_or_all, parse_duration_or_forever, parse_interval};
    let bad = |what: &str, e: String| ConfigError::Retention(format!("{what}: {e}"));
    let mut p = crate::retention::Policy::for_tier(tier);
    if let Some(text) = &settings.keep_versions {
        p.keep_versions = parse_count_or_all(text).map_err(|e| bad("keep_versions", e))?;
    }
    let graces = [
        (
            "version_grace",
            &settings.version_grace,
            &mut p.version_grace,
        ),
        (
            "tombstone_grace",
            &settings.tombstone_grace,
            &mut p.tombstone_grace,
        ),
        ("feed_horizon", &settings.feed_horizon, &mut p.feed_horizon),
    ];
    for (what, text, slot) in graces {
        if let Some(text) = text {
            *slot = parse_duration_or_forever(text).map_err(|e| bad(what, e))?;
        }
    }
    if let Some(d) = settings.log_retention {
        p.log_retention = d;
    }
    if let Some(d) = settings.dead_letter_retention {
        p.dead_letter_retention = d;
    }
    if let Some(text) = &settings.gc_interval {
        p.interval = parse_interval(text).map_err(|e| bad("gc_interval", e))?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::layer::Layer;
    use crate::config::Settings;

    #[test]
    fn retention_follows_the_tier_then_the_file_then_the_flags() {
        let file = Settings::from_toml(
            "[retention]\nkeep_versions = 3\ntombstone_grace = \"forever\"\ngc_interval = \"off\"",
        )
        .unwrap()
        .retention;
        let flags = RetentionSettings {
            tombstone_grace: Some("2h".into()),
            ..RetentionSettings::default()
        };
        let p = policy(Some(Tier::Regional), &flags.over(file)).unwrap();
        assert_eq!(p.keep_versions, Some(3));
        assert_eq!(p.tombstone_grace, Some(Duration::from_secs(7200)));
        assert_eq!(p.version_grace, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(p.interval, None);
        let p = policy(Some(Tier::Primary), &RetentionSettings::default()).unwrap();
        assert_eq!((p.keep_versions, p.tombstone_grace), (None, None));
        let bad = RetentionSettings {
            keep_versions: Some("lots".into()),
            ..RetentionSettings::default()
        };
        let e = policy(Some(Tier::Regional), &bad).unwrap_err();
        assert!(e.to_string().contains("keep_versions"), "{e}");
        assert!(Settings::from_toml("[retention]\nkeep = 1").is_err());
    }
}
