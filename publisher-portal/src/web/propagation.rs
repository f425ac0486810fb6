//! Where a document has got to: each node's state (down, slow, waiting, done) from what the
//! primaries know, for the document page, its live JSON and the list's summary column.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use docfed_shared::topology::Tier;

use crate::db::{now_ms, DocRow};
use docfed_shared::wire::propagation::Propagation;

use crate::primaries::Presence;
use crate::views::{self, PropRow, PropView};

use super::*;

/// The propagation of each listed document, asked of the primaries a few at a time. What has
/// not come back within two seconds is left out (the list shows "–"), so a slow or dead primary
/// never holds the list back for long; no primary is asked while all are known to be down.
pub(super) async fn list_propagation(
    st: &AppState,
    rows: &[DocRow],
) -> std::collections::HashMap<String, PropView> {
    use futures::StreamExt;
    if rows.is_empty()
        || st
            .primaries
            .all()
            .iter()
            .all(|p| p.status().up == Some(false))
    {
        return Default::default();
    }
    let presence = st.primaries.presence().await;
    // Owned items: a stream of borrowed rows makes the handler's future not general enough
    // for axum.
    let items: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|d| (d.doc_id.clone(), d.version, d.updated_at))
        .collect();
    futures::stream::iter(items)
        .map(|(id, version, updated_at)| {
            let (st, presence) = (st.clone(), presence.clone());
            async move {
                let path = format!("/v1/documents/{id}/propagation");
                let (p, _) = st
                    .primaries
                    .get_json::<Propagation>(&path, &[])
                    .await
                    .ok()?;
                let published = (version == p.version).then_some(updated_at);
                let view = prop_view(&st, p, Some(&presence), published, &[]);
                Some((id, view))
            }
        })
        .buffer_unordered(8)
        .filter_map(|v| async move { v })
        .take_until(tokio::time::sleep(Duration::from_secs(2)))
        .collect()
        .await
}

/// A node that has not reported the current version this long after it was published counts
/// as slow rather than merely waiting.
pub(super) const SLOW_AFTER_MS: i64 = 60_000;

/// Rows for every node: those that reported, and those the primary lists as not holding the
/// current version yet. A node that has not caught up is `down` when the primaries' presence
/// says so, `slow` once the version is older than [`SLOW_AFTER_MS`], `waiting` before that
/// (`older` when it holds an earlier version). `published_ms` is when the current version was
/// published, `tombstones` the versions that are tombstones (from the version list, when at
/// hand; the current one is known from the answer).
pub(super) fn prop_view(
    st: &AppState,
    p: Propagation,
    presence: Option<&Presence>,
    published_ms: Option<i64>,
    tombstones: &[i64],
) -> PropView {
    build_prop_view(
        p,
        &st.config.tiers,
        &|n| presence.is_some_and(|pr| pr.is_down(&st.primaries, n)),
        published_ms,
        tombstones,
        now_ms(),
    )
}

/// [`prop_view`] with its inputs spelled out: the tier of each node, whether the primaries see
/// a node as down, and the time now.
pub(super) fn build_prop_view(
    p: Propagation,
    tiers: &std::collections::HashMap<String, String>,
    is_down: &dyn Fn(&str) -> bool,
    published_ms: Option<i64>,
    tombstones: &[i64],
    now: i64,
) -> PropView {
    let tier_of = |n: &str| tiers.get(n).cloned().unwrap_or_default();
    let behind_ms = published_ms.map(|t| now - t).unwrap_or(0);
    let lagging = |n: &str, older: bool| -> (&'static str, String) {
        if is_down(n) {
            ("down", "✗ down (not answering)".into())
        } else if behind_ms > SLOW_AFTER_MS {
            let since = views::relative(now - behind_ms, now);
            ("slow", format!("slow: published {since}, not here yet"))
        } else if older {
            ("older", "older version…".into())
        } else {
            ("waiting", "waiting…".into())
        }
    };
    let mut rows: Vec<PropRow> = p
        .nodes
        .iter()
        .map(|h| {
            let tombstone = (h.current && p.deleted) || tombstones.contains(&h.version);
            let (state, label) = if h.current {
                ("current", "✓ current".to_owned())
            } else {
                lagging(&h.node, true)
            };
            let at = h.at.map(|t| t.to_string()).unwrap_or_default();
            let at_ms = h.at.map(|t| t.millis());
            PropRow {
                node: h.node.clone(),
                tier: tier_of(&h.node),
                version: Some(h.version),
                holds: if tombstone {
                    "tombstone"
                } else if h.content {
                    "bytes"
                } else {
                    "metadata only"
                }
                .into(),
                at_rel: at_ms.map(|t| views::relative(t, now)).unwrap_or_default(),
                at_exact: at_ms.map(views::exact).unwrap_or_default(),
                at,
                state: state.into(),
                label,
            }
        })
        .collect();
    for n in &p.not_yet_current {
        if !rows.iter().any(|r| &r.node == n) {
            let (state, label) = lagging(n, false);
            rows.push(PropRow {
                node: n.clone(),
                tier: tier_of(n),
                version: None,
                holds: "–".into(),
                at: String::new(),
                at_rel: String::new(),
                at_exact: String::new(),
                state: state.into(),
                label,
            });
        }
    }
    // Top of the tree first; a tier this portal does not know (a newer node) last.
    let rank = |t: &str| {
        let tier = t.parse::<Tier>().ok();
        (tier.is_none(), tier)
    };
    rows.sort_by(|a, b| (rank(&a.tier), &a.node).cmp(&(rank(&b.tier), &b.node)));
    let current = rows.iter().filter(|r| r.state == "current").count();
    let down = rows.iter().filter(|r| r.state == "down").count();
    let slow = rows.iter().filter(|r| r.state == "slow").count();
    let complete = p.not_yet_current.is_empty();
    let mut short = format!("{current}/{} nodes", rows.len());
    if down > 0 {
        short += &format!(", {down} down");
    }
    if slow > 0 {
        short += &format!(", {slow} slow");
    }
    PropView {
        version: p.version,
        deleted: p.deleted,
        summary: format!(
            "{current} of {} nodes hold version {}{}{}{}",
            rows.len(),
            p.version,
            if p.deleted { " (a tombstone)" } else { "" },
            if down > 0 {
                format!("; {down} down")
            } else {
                String::new()
            },
            if complete {
                "."
            } else {
                "; still spreading…"
            }
        ),
        short,
        complete,
        down,
        rows,
    }
}

pub(super) async fn propagation_json(
    State(st): State<AppState>,
    Author(s): Author,
    Path(id): Path<String>,
) -> Response {
    let json_error = |status: StatusCode, msg: &str| {
        (status, Json(serde_json::json!({ "error": msg }))).into_response()
    };
    let row = match st.db.owned_document(s.author_id, &id).await {
        Ok(Some(row)) => row,
        Ok(None) => return json_error(StatusCode::NOT_FOUND, "no such document of yours"),
        Err(e) => {
            tracing::error!(error = %e, "portal database");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "portal database unavailable",
            );
        }
    };
    let path = format!("/v1/documents/{id}/propagation");
    let (prop, presence) = tokio::join!(
        st.primaries.get_json::<Propagation>(&path, &[]),
        st.primaries.presence(),
    );
    match prop {
        Ok((p, _)) => {
            // The cached row's version may lag the primary's: its time is the current one's
            // only when the numbers match.
            let published = (row.version == p.version).then_some(row.updated_at);
            let mut r = Json(prop_view(&st, p, Some(&presence), published, &[])).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use docfed_shared::wire::propagation::Holding;
    use docfed_shared::wire::Timestamp;
    use docfed_shared::DocId;

    fn holding(node: &str, version: i64, current: bool) -> Holding {
        Holding {
            node: node.into(),
            version,
            origin: "pa".into(),
            md5: "0".repeat(32),
            content: true,
            // 2026-11-23T08:00:00Z
            at: Some(Timestamp(1_795_420_800_000)),
            current,
        }
    }

    /// pa and na hold version 2, pb holds version 1; eu and asia report nothing.
    fn spreading(deleted: bool) -> Propagation {
        Propagation {
            id: DocId::new(),
            version: 2,
            origin: "pa".into(),
            deleted,
            nodes: vec![
                holding("pa", 2, true),
                holding("na", 2, true),
                holding("pb", 1, false),
            ],
            not_yet_current: vec!["pb".into(), "eu".into(), "asia".into()],
        }
    }

    fn states(v: &PropView) -> Vec<(String, String)> {
        v.rows
            .iter()
            .map(|r| (r.node.clone(), r.state.clone()))
            .collect()
    }

    #[test]
    fn down_slow_waiting_and_done_are_told_apart() {
        let tiers: std::collections::HashMap<String, String> = [
            ("pa", "primary"),
            ("pb", "primary"),
            ("na", "regional"),
            ("eu", "regional"),
            ("asia", "regional"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let now = 1_800_000_000_000;
        let eu_down = |n: &str| n == "eu";
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());

        // Just published: whoever lacks it is waiting, unless the primaries see it down.
        let v = build_prop_view(
            spreading(false),
            &tiers,
            &eu_down,
            Some(now - 5_000),
            &[],
            now,
        );
        assert_eq!(
            states(&v),
            [
                pair("pa", "current"),
                pair("pb", "older"),
                pair("asia", "waiting"),
                pair("eu", "down"),
                pair("na", "current"),
            ]
        );
        assert_eq!(
            v.summary,
            "2 of 5 nodes hold version 2; 1 down; still spreading…"
        );
        assert_eq!(v.short, "2/5 nodes, 1 down");
        assert_eq!((v.down, v.complete), (1, false));
        assert!(v
            .rows
            .iter()
            .all(|r| r.label != "waiting…" || r.node == "asia"));

        // Published three minutes ago: reachable but behind is slow; down stays down.
        let v = build_prop_view(
            spreading(false),
            &tiers,
            &eu_down,
            Some(now - 180_000),
            &[],
            now,
        );
        assert_eq!(
            states(&v),
            [
                pair("pa", "current"),
                pair("pb", "slow"),
                pair("asia", "slow"),
                pair("eu", "down"),
                pair("na", "current"),
            ]
        );
        assert_eq!(v.short, "2/5 nodes, 1 down, 2 slow");
        let asia = v
            .rows
            .iter()
            .find(|r| r.node == "asia")
            .map(|r| r.label.as_str());
        assert_eq!(asia, Some("slow: published 3 min ago, not here yet"));

        // A tombstone is held as a tombstone, not as bytes; so is an older tombstone version.
        let v = build_prop_view(spreading(true), &tiers, &|_| false, None, &[1], now);
        assert!(v
            .rows
            .iter()
            .filter(|r| r.version.is_some())
            .all(|r| r.holds == "tombstone"));
        assert!(v
            .summary
            .starts_with("2 of 5 nodes hold version 2 (a tombstone)"));
        let v = build_prop_view(spreading(true), &tiers, &|_| false, None, &[], now);
        let pb = v
            .rows
            .iter()
            .find(|r| r.node == "pb")
            .map(|r| r.holds.as_str());
        assert_eq!(pb, Some("bytes"), "version 1 is no tombstone");

        // Everyone has it.
        let done = Propagation {
            not_yet_current: vec![],
            nodes: vec![holding("pa", 2, true), holding("pb", 2, true)],
            ..spreading(false)
        };
        let v = build_prop_view(done, &tiers, &eu_down, Some(now - 500_000), &[], now);
        assert_eq!(v.summary, "2 of 2 nodes hold version 2.");
        assert_eq!((v.short.as_str(), v.complete), ("2/2 nodes", true));
        assert_eq!(v.rows[0].at_exact, "2026-11-23 08:00:00 UTC");
    }
}
