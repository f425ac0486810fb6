use super::*;
use docfed_shared::topology::Tier;

#[test]
fn policy_values_parse_with_their_words() {
    assert_eq!(parse_count_or_all("3"), Ok(Some(3)));
    assert_eq!(parse_count_or_all("all"), Ok(None));
    assert!(parse_count_or_all("-1").is_err());
    assert_eq!(
        parse_duration_or_forever("2h"),
        Ok(Some(Duration::from_secs(7200)))
    );
    assert_eq!(parse_duration_or_forever("forever"), Ok(None));
    assert!(parse_duration_or_forever("soon").is_err());
    assert_eq!(parse_interval("off"), Ok(None));
    assert!(parse_interval("0s").is_err());
}

/// Doc a: v1 (seq 1), v2 the winner (seq 2, current), then a concurrent v2 that lost
/// (seq 3). Doc b: v1, v2 (seq 4, 5). Compacting up to seq 5 keeps a's winner and loser and
/// b's v2.
#[tokio::test]
async fn compaction_keeps_the_current_versions_change_when_a_loser_came_later() {
    let db = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE changes (seq INTEGER PRIMARY KEY, doc_id TEXT NOT NULL); \
         CREATE TABLE documents (doc_id TEXT NOT NULL UNIQUE, last_seq INTEGER NOT NULL); \
         INSERT INTO changes VALUES (1, 'a'), (2, 'a'), (3, 'a'), (4, 'b'), (5, 'b'); \
         INSERT INTO documents VALUES ('a', 2), ('b', 5);",
    )
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(&format!(
        "DELETE FROM changes WHERE seq IN (SELECT c.seq FROM changes c \
         WHERE c.seq > 0 AND c.seq <= 5 AND {FOLDED})"
    ))
    .execute(&db)
    .await
    .unwrap();
    let left: Vec<i64> = sqlx::query_scalar("SELECT seq FROM changes ORDER BY seq")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(left, [2, 3, 5]);
}

#[test]
fn primaries_keep_the_record_and_regionals_do_not() {
    let p = Policy::for_tier(Some(Tier::Primary));
    assert_eq!(
        (p.keep_versions, p.version_grace, p.tombstone_grace),
        (None, None, None)
    );
    let r = Policy::for_tier(Some(Tier::Regional));
    assert_eq!(r.keep_versions, Some(1));
    assert!(r.tombstone_grace.is_some());
}
