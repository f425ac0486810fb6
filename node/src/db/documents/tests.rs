use super::*;
use docfed_test_kit::content::Xorshift;
use std::collections::BTreeSet;

/// What the oracle knows of a document: its current row, read back from the tables.
#[derive(Debug, sqlx::FromRow)]
struct Doc {
    rid: i64,
    id: String,
    title: String,
    scope: String,
    author: String,
    source: String,
    content_type: String,
    deleted: bool,
    published_at: i64,
    /// JSON array.
    tags: String,
}

// Only titles carry these words, so a document matches a word exactly when its title does.
const WORDS: [&str; 4] = ["alpha", "beta", "gamma", "gamut"];

async fn directory(seed: u64) -> (tempfile::TempDir, Db, Vec<Doc>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("node.sqlite")).await.unwrap();
    let mut rng = Xorshift::new(seed);
    let mut tx = db.begin_write().await.unwrap();
    for _ in 0..60 {
        let id = DocId::new();
        for version in 1..=1 + rng.below(3) as i64 {
            let deleted = version > 1 && rng.below(3) == 0;
            let v = DocumentVersion {
                id,
                version,
                origin: "primary-a".to_owned(),
                title: format!("{} {}", rng.pick(&WORDS), rng.pick(&WORDS)),
                description: String::new(),
                tags: (0..rng.below(3))
                    .map(|_| rng.pick(&["t1", "t2", "t3"]).to_string())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                filename: "f.bin".to_owned(),
                source: rng.pick(&["s1", "s2"]).to_string(),
                scope: rng
                    .pick(&["global", "region:eu", "region:asia"])
                    .parse()
                    .unwrap(),
                content_type: rng
                    .pick(&["text/plain", "text/plain; charset=utf-8", "application/pdf"])
                    .to_string(),
                md5: Md5Hex::from_digest(md5::compute(rng.below(1 << 30).to_be_bytes()).0),
                size: 1,
                deleted,
                created_at: Timestamp(1_700_000_000_000 + rng.below(1_000) as i64),
                author: rng.pick(&["a1", "a2", "a3"]).to_string(),
                sha256: None,
                signature: None,
                lazy: false,
            };
            let kind = match (version, deleted) {
                (_, true) => ChangeKind::Deleted,
                (1, _) => ChangeKind::Published,
                _ => ChangeKind::Updated,
            };
            record_version(&mut tx, &v, kind).await.unwrap();
        }
    }
    let docs: Vec<Doc> = sqlx::query_as(
        "SELECT rid, doc_id AS id, title, scope, author, source, content_type, deleted, \
         published_at, tags FROM documents",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (dir, db, docs)
}

fn matches(d: &Doc, f: &ListFilter) -> bool {
    let words: Vec<&str> = d.title.split(' ').collect();
    let text = match f.fts.as_deref() {
        None => true,
        Some("\"alpha\"") => words.contains(&"alpha"),
        Some("\"gam\"*") => words.iter().any(|w| w.starts_with("gam")),
        Some(other) => unreachable!("{other}"),
    };
    let deleted = match f.deleted {
        DeletedFilter::Exclude => !d.deleted,
        DeletedFilter::Only => d.deleted,
        DeletedFilter::Include => true,
    };
    text && deleted
        && f.scope.as_ref().is_none_or(|s| s.to_string() == d.scope)
        && f.tag.as_ref().is_none_or(|t| {
            serde_json::from_str::<Vec<String>>(&d.tags)
                .unwrap()
                .contains(t)
        })
        && f.author.as_ref().is_none_or(|a| *a == d.author)
        && f.source.as_ref().is_none_or(|s| *s == d.source)
        && f.content_type
            .as_ref()
            .is_none_or(|ct| d.content_type == *ct || d.content_type.starts_with(&format!("{ct};")))
        && f.since.is_none_or(|t| d.published_at >= t)
        && f.until.is_none_or(|t| d.published_at < t)
}

/// Every combination of the filters' values below: combination `i` takes one value of
/// each, as the digits of `i` in mixed radix.
fn every_filter(mid: i64) -> impl Iterator<Item = ListFilter> {
    let fts = [None, Some("\"alpha\""), Some("\"gam\"*")];
    let scopes = [None, Some("global"), Some("region:eu")];
    let dates = [(None, None), (Some(mid), None), (None, Some(mid))];
    let deleted = [
        DeletedFilter::Exclude,
        DeletedFilter::Only,
        DeletedFilter::Include,
    ];
    let count = 3 * 3 * 2 * 2 * 2 * 2 * 3 * 3;
    (0..count).map(move |mut i: usize| {
        let mut digit = |radix: usize| {
            let d = i % radix;
            i /= radix;
            d
        };
        let one_of = |d: usize, value: &str| (d == 1).then(|| value.to_owned());
        let (since, until) = dates[digit(3)];
        ListFilter {
            fts: fts[digit(3)].map(str::to_owned),
            scope: scopes[digit(3)].map(|s| s.parse().unwrap()),
            tag: one_of(digit(2), "t1"),
            author: one_of(digit(2), "a1"),
            source: one_of(digit(2), "s1"),
            content_type: one_of(digit(2), "text/plain"),
            since,
            until,
            deleted: deleted[digit(3)],
            limit: 1000,
            cursor: None,
        }
    })
}

/// Every combination of full text and filters, with and without tombstones, finds exactly
/// the documents that match (full text with filters is decided from the FTS table and the
/// filters' indexes; listings from the rows), and a listing is newest first.
#[tokio::test]
async fn every_combination_of_filters_finds_exactly_the_matching_documents() {
    for seed in 1..=3u64 {
        let (_dir, db, docs) = directory(seed).await;
        let mut matched_some = 0;
        for f in every_filter(1_700_000_000_500) {
            let got: Vec<String> = db
                .list(&f)
                .await
                .unwrap()
                .documents
                .iter()
                .map(|d| d.current.id.to_string())
                .collect();
            let mut expected: Vec<&Doc> = docs.iter().filter(|d| matches(d, &f)).collect();
            expected.sort_by_key(|d| std::cmp::Reverse(d.rid));
            let expected: Vec<String> = expected.iter().map(|d| d.id.clone()).collect();
            if f.fts.is_some() {
                // Ranked: the same documents, each once, in rank order (not checked here).
                let unique: BTreeSet<_> = got.iter().collect();
                assert_eq!(unique.len(), got.len(), "seed {seed}: {f:?}");
                assert_eq!(unique, expected.iter().collect(), "seed {seed}: {f:?}");
            } else {
                assert_eq!(got, expected, "seed {seed}: {f:?}");
            }
            matched_some += usize::from(!expected.is_empty());
        }
        // The directory is rich enough that many combinations match something.
        assert!(
            matched_some > 300,
            "seed {seed}: only {matched_some} combinations matched anything"
        );
    }
}

/// A search past its deadline is interrupted by SQLite and reported as such; the connection it
/// ran on goes back to the pool without the deadline, so what runs next is not interrupted.
#[tokio::test]
async fn a_search_past_its_deadline_is_interrupted_and_leaves_no_trace() {
    let (_dir, mut db, _) = directory(1).await;
    let search = ListFilter {
        fts: Some("\"gam\"*".to_owned()),
        scope: None,
        tag: None,
        author: None,
        source: None,
        content_type: None,
        since: None,
        until: None,
        deleted: DeletedFilter::Include,
        limit: 1000,
        cursor: None,
    };
    db.set_search_deadline(std::time::Duration::ZERO);
    for _ in 0..3 {
        let e = db.list(&search).await.unwrap_err();
        assert!(crate::db::is_interrupted(&e), "{e:?}");
    }
    db.set_search_deadline(crate::db::DEFAULT_SEARCH_DEADLINE);
    // More queries than the pool has readers: every connection is used again.
    for _ in 0..20 {
        assert!(!db.list(&search).await.unwrap().documents.is_empty());
    }
}
