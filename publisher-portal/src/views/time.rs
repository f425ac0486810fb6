//! Times as pages show them: relative ("3 min ago") with the exact time on hover.

use maud::{html, Markup};

/// How long ago (or, for a clock that runs ahead, how far ahead) `ms` is from `now_ms`, in the
/// largest unit that fits: "just now", "40 s ago", "3 min ago", "5 h ago", "2 days ago",
/// "4 months ago", "2 years ago".
pub fn relative(ms: i64, now_ms: i64) -> String {
    let d = now_ms - ms;
    let s = d.unsigned_abs() / 1000;
    if s < 10 {
        return "just now".into();
    }
    let (n, unit) = match s {
        s if s < 60 => (s, "s"),
        s if s < 3600 => (s / 60, "min"),
        s if s < 86_400 => (s / 3600, "h"),
        s if s < 60 * 86_400 => (s / 86_400, if s < 2 * 86_400 { "day" } else { "days" }),
        s if s < 730 * 86_400 => (s / (30 * 86_400), "months"),
        s => (s / (365 * 86_400), "years"),
    };
    if d >= 0 {
        format!("{n} {unit} ago")
    } else {
        format!("in {n} {unit}")
    }
}

/// The exact time, as the hover text shows it: `2026-11-23 08:46:02 UTC`.
pub fn exact(ms: i64) -> String {
    let iso = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string();
    format!("{} UTC", iso.trim_end_matches('Z').replacen('T', " ", 1))
}

/// A point in time as a page shows it: `<time datetime="ISO" title="exact">3 min ago</time>`.
/// `portal.js` rewrites the title in the browser's time zone.
pub fn when(ms: i64) -> Markup {
    html! {
        time datetime=(fmt_ms(ms)) title=(exact(ms)) { (relative(ms, crate::db::now_ms())) }
    }
}

/// [`when`] of an RFC 3339 string from a node; the string itself if it cannot be read.
pub fn when_str(iso: &str) -> Markup {
    match parse_iso(iso) {
        Some(ms) => when(ms),
        None => html! { (iso) },
    }
}

/// Unix milliseconds of an RFC 3339 time.
pub fn parse_iso(iso: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(iso).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

pub fn fmt_ms(ms: i64) -> String {
    docfed_shared::wire::Timestamp(ms).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const DAY: i64 = 86_400_000;

    #[test]
    fn relative_times_use_the_largest_unit_that_fits() {
        let now = 1_800_000_000_000;
        let ago = |ms: i64| relative(now - ms, now);
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(9_999), "just now");
        assert_eq!(ago(40_000), "40 s ago");
        assert_eq!(ago(3 * MIN + 20_000), "3 min ago");
        assert_eq!(ago(5 * 60 * MIN), "5 h ago");
        assert_eq!(ago(DAY + 1), "1 day ago");
        assert_eq!(ago(2 * DAY), "2 days ago");
        assert_eq!(ago(120 * DAY), "4 months ago");
        assert_eq!(ago(800 * DAY), "2 years ago");
        // A clock running ahead of the portal's.
        assert_eq!(ago(-3 * MIN), "in 3 min");
    }

    #[test]
    fn times_render_as_time_elements_with_the_exact_time_on_hover() {
        assert_eq!(exact(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(exact(1_763_887_562_123), "2025-11-23 08:46:02 UTC");
        let t = when(1_763_887_562_123).into_string();
        assert!(
            t.starts_with(
                "<time datetime=\"2025-11-23T08:46:02.123Z\" title=\"2025-11-23 08:46:02 UTC\">"
            ),
            "{t}"
        );
        assert!(t.ends_with(" ago</time>"), "{t}");
        assert_eq!(
            parse_iso("2025-11-23T08:46:02.123Z"),
            Some(1_763_887_562_123)
        );
        assert_eq!(when_str("not a time").into_string(), "not a time");
    }
}
