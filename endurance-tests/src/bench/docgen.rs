//! Realistic directory metadata, generated from a seed, and the mix of searches over it.

use anyhow::Result;
use bytes::Bytes;
use docfed_bench_kit::content::Xorshift;

use super::client::import_body;

/// Realistic directory metadata: 4-word titles and 12-word descriptions from a 3,000-word
/// vocabulary, 1-2 of 50 tags, 20 sources, 100 authors, 4 scopes; document `i` of `n` is
/// created `n - i` seconds ago.
#[derive(Clone)]
pub(crate) struct DocGen {
    pub words: std::sync::Arc<Vec<String>>,
    pub tags: std::sync::Arc<Vec<String>>,
    n: u64,
    now: i64,
}

impl DocGen {
    pub fn new(n: u64, rng: &mut Xorshift) -> Self {
        Self {
            words: std::sync::Arc::new(vocabulary(3000, rng)),
            tags: std::sync::Arc::new((0..50).map(|i| format!("tag{i}")).collect()),
            n,
            now: docfed_shared::wire::Timestamp::now().millis(),
        }
    }

    pub fn make(
        &self,
        i: u64,
        version: i64,
        rng: &mut Xorshift,
    ) -> docfed_shared::wire::DocumentVersion {
        use docfed_shared::wire::{DocumentVersion, Timestamp};
        use docfed_shared::{DocId, Md5Hex, Scope};
        const SCOPES: [&str; 4] = ["global", "region:na", "region:eu", "region:asia"];
        let mut phrase = |k: usize| {
            (0..k)
                .map(|_| rng.pick(&self.words).clone())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let title = phrase(4);
        let description = phrase(12);
        let filename = format!("{}.pdf", phrase(1));
        let t1 = rng.pick(&self.tags).clone();
        let t2 = rng.pick(&self.tags).clone();
        let mut digest = [0u8; 16];
        digest[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        digest[8..].copy_from_slice(&i.to_le_bytes());
        DocumentVersion {
            id: DocId::new(),
            version,
            origin: "bench".into(),
            title,
            description,
            tags: if t1 == t2 { vec![t1] } else { vec![t1, t2] },
            filename,
            source: format!("source-{}", i % 20),
            scope: SCOPES[(i % 4) as usize].parse::<Scope>().expect("valid"),
            content_type: "application/pdf".into(),
            md5: Md5Hex::from_digest(digest),
            size: 10_000 + i % 1_000_000,
            deleted: false,
            created_at: Timestamp(self.now - (self.n as i64 - i as i64) * 1000),
            author: format!("author-{}", i % 100),
            sha256: None,
            signature: None,
            lazy: false,
        }
    }

    /// Loads documents `0..n` into the node at `url` through `POST /v1/admin/import`, as JSON
    /// lines generated while they are sent (1,000 per chunk).
    pub async fn import(&self, http: &reqwest::Client, url: &str, token: &str) -> Result<()> {
        let (gen, n) = (self.clone(), self.n);
        let stream = futures::stream::unfold((0u64, Xorshift::new(42)), move |(i, mut rng)| {
            let gen = gen.clone();
            async move {
                if i >= n {
                    return None;
                }
                let end = (i + 1000).min(n);
                let mut chunk = Vec::with_capacity(1000 * 400);
                for j in i..end {
                    serde_json::to_writer(&mut chunk, &gen.make(j, 1, &mut rng))
                        .expect("serialises");
                    chunk.push(b'\n');
                }
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (end, rng)))
            }
        });
        import_body(http, url, token, reqwest::Body::wrap_stream(stream)).await
    }
}

fn vocabulary(n: usize, rng: &mut Xorshift) -> Vec<String> {
    const SYL: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ber", "dan", "fel", "gor", "hal", "jin",
        "kor", "lum", "mar", "nor", "pel", "quin", "ros", "sul", "tar", "wen",
    ];
    let mut words = std::collections::BTreeSet::new();
    while words.len() < n {
        let k = 2 + rng.next_u64() % 3;
        let w: String = (0..k)
            .map(|_| SYL[(rng.next_u64() % SYL.len() as u64) as usize])
            .collect();
        words.insert(w);
    }
    words.into_iter().collect()
}

/// The kinds of query in the directory's search mix, in the order they cycle.
pub(crate) const SEARCH_KINDS: [&str; 8] = [
    "word",
    "two words",
    "prefix",
    "word + tag",
    "word + region",
    "tag",
    "region + author",
    "date + source",
];

/// "word 12, two words 3, …": the slowest query of each kind of the mix, in ms.
pub(crate) fn slowest_by_kind(slowest: &[f64; 8]) -> String {
    SEARCH_KINDS
        .iter()
        .zip(slowest)
        .map(|(k, ms)| format!("{k} {ms:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Query `i` of the search mix (kind `i % 8` of [`SEARCH_KINDS`]) as `GET /v1/documents`
/// parameters, words and tags drawn from `rng`.
pub(crate) fn search_query(
    i: u64,
    rng: &mut Xorshift,
    words: &[String],
    tags: &[String],
) -> Vec<(&'static str, String)> {
    let w1 = rng.pick(words).clone();
    let w2 = rng.pick(words).clone();
    let tag = rng.pick(tags).clone();
    match i % 8 {
        0 => vec![("q", w1)],
        1 => vec![("q", format!("{w1} {w2}"))],
        2 => vec![("q", format!("{}*", &w1[..w1.len().min(4)]))],
        3 => vec![("q", w1), ("tag", tag)],
        4 => vec![("q", w1), ("region", "eu".into())],
        5 => vec![("tag", tag)],
        6 => vec![
            ("region", "asia".into()),
            ("author", format!("author-{}", i % 100)),
        ],
        _ => vec![
            ("since", "2026-01-01".into()),
            ("source", format!("source-{}", i % 20)),
        ],
    }
}
