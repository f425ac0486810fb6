//! The directory as read offline: full-text search and filters (as a node answers them), a
//! document and its versions.

use docfed_shared::search::fts_query;
use docfed_shared::wire::{DocumentList, DocumentMeta, VersionEntry, VersionList};

use super::{meta, parse_version, Replica};
use crate::error::CliError;

/// How many of its newest matches a full-text search with no other filter ranks, as on the
/// node: bm25 for every match of a broad word was the slow tail at a million documents.
const FTS_CANDIDATES: u32 = 10_000;

/// The search of `docfed search`, answered locally.
#[derive(Debug, Default)]
pub struct SearchQuery {
    pub text: String,
    pub scope: Option<String>,
    pub tag: Option<String>,
    pub source: Option<String>,
    pub author: Option<String>,
    pub deleted: bool,
    pub limit: u32,
    pub cursor: Option<String>,
}

impl Replica {
    pub async fn search(&self, q: &SearchQuery) -> Result<DocumentList, CliError> {
        let offset: u64 = match q.cursor.as_deref() {
            None => 0,
            Some(c) => c
                .strip_prefix("replica:")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    CliError::Refused(format!(
                        "cursor {c:?} does not come from a search of the replica"
                    ))
                })?,
        };
        let fts = fts_query(&q.text);
        // The inner query finds and orders row ids only; the page's JSON is read afterwards.
        // A full-text search without filters ranks from the FTS table alone and tells tombstones
        // by their row ids (as the node does: a join per match was the slow tail).
        let fts_only = fts.is_some()
            && q.scope.is_none()
            && q.source.is_none()
            && q.author.is_none()
            && q.tag.is_none();
        let mut qb =
            sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT d.json, d.published_at FROM (");
        if fts_only {
            // The newest matches only, as the node ranks them (`Db::FTS_CANDIDATES` there).
            qb.push(
                "SELECT rid, score FROM (SELECT documents_fts.rowid AS rid, \
                 documents_fts.rank AS score FROM documents_fts WHERE 1 = 1",
            );
        } else if fts.is_some() {
            qb.push(
                "SELECT d.rid AS rid, documents_fts.rank AS score FROM documents d \
                 JOIN documents_fts ON documents_fts.rowid = d.rid WHERE 1 = 1",
            );
        } else {
            qb.push("SELECT d.rid AS rid, 0 AS score FROM documents d WHERE 1 = 1");
        }
        if let Some(f) = &fts {
            qb.push(" AND documents_fts MATCH ").push_bind(f.clone());
        }
        if !q.deleted {
            qb.push(if fts_only {
                " AND documents_fts.rowid NOT IN (SELECT rid FROM documents WHERE deleted = 1)"
            } else {
                " AND d.deleted = 0"
            });
        }
        if fts_only {
            qb.push(format!(
                " ORDER BY documents_fts.rowid DESC LIMIT {FTS_CANDIDATES})"
            ));
        } else {
            for (col, val) in [
                ("d.scope", &q.scope),
                ("d.source", &q.source),
                ("d.author", &q.author),
            ] {
                if let Some(v) = val {
                    qb.push(format!(" AND {col} = ")).push_bind(v.clone());
                }
            }
            if let Some(tag) = &q.tag {
                qb.push(" AND EXISTS (SELECT 1 FROM json_each(d.json, '$.tags') WHERE value = ")
                    .push_bind(tag.clone())
                    .push(")");
            }
        }
        qb.push(match (fts_only, fts.is_some()) {
            (true, _) => " ORDER BY score, rid DESC",
            (false, true) => " ORDER BY documents_fts.rank, d.rid DESC",
            (false, false) => " ORDER BY d.rid DESC",
        });
        qb.push(" LIMIT ")
            .push_bind(i64::from(q.limit) + 1)
            .push(" OFFSET ")
            .push_bind(offset as i64);
        qb.push(") top JOIN documents d ON d.rid = top.rid ORDER BY top.score, d.rid DESC");
        let rows: Vec<(String, i64)> = qb.build_query_as().fetch_all(&self.read).await?;
        let more = rows.len() > q.limit as usize;
        let mut documents = Vec::with_capacity(rows.len());
        for (json, published) in rows.into_iter().take(q.limit as usize) {
            let mut d = meta(&json, published)?;
            d.available_here = self.holds_current(&d).await?;
            documents.push(d);
        }
        Ok(DocumentList {
            documents,
            next_cursor: more.then(|| format!("replica:{}", offset + u64::from(q.limit))),
        })
    }

    pub async fn document(&self, id: &str) -> Result<Option<DocumentMeta>, CliError> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT json, published_at FROM documents WHERE doc_id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
        let Some(mut d) = row.map(|(j, p)| meta(&j, p)).transpose()? else {
            return Ok(None);
        };
        d.available_here = self.holds_current(&d).await?;
        Ok(Some(d))
    }

    /// Whether `files/` holds the current version of `d`: offline, "here" is this device, so
    /// that `info` and `flags` answered from the replica agree with each other and with the
    /// local file they show.
    pub(super) async fn holds_current(&self, d: &DocumentMeta) -> Result<bool, CliError> {
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM files WHERE doc_id = ? AND md5 = ?")
                .bind(d.current.id.to_string())
                .bind(d.current.md5.as_str())
                .fetch_optional(&self.read)
                .await?;
        Ok(!d.current.deleted && name.is_some_and(|n| self.files_dir().join(n).is_file()))
    }

    pub async fn versions(&self, id: &str) -> Result<Option<VersionList>, CliError> {
        let Some(current) = self.document(id).await? else {
            return Ok(None);
        };
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT json FROM versions WHERE doc_id = ? ORDER BY version, origin")
                .bind(id)
                .fetch_all(&self.read)
                .await?;
        let versions = rows
            .into_iter()
            .map(|(j,)| {
                let v = parse_version(&j)?;
                Ok(VersionEntry {
                    current: v.version == current.current.version
                        && v.origin == current.current.origin,
                    available_here: false,
                    version: v,
                })
            })
            .collect::<Result<_, CliError>>()?;
        Ok(Some(VersionList {
            id: current.current.id,
            versions,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{page, version};
    use super::*;

    /// Offline full-text search: alone (ranked from the index) and with a filter (joined to the
    /// documents) it agrees on tombstones, and pages through every match.
    #[tokio::test]
    async fn offline_full_text_search_agrees_with_and_without_filters() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path()).await.unwrap();
        let (live, gone) = (docfed_shared::DocId::new(), docfed_shared::DocId::new());
        let mut vs = vec![
            version(live, 1, "p-a", false),
            version(gone, 1, "p-a", false),
        ];
        vs.push(version(gone, 2, "p-a", true));
        for _ in 0..5 {
            vs.push(version(docfed_shared::DocId::new(), 3, "p-b", false));
        }
        r.apply_page("http://n", &page(8, &vs)).await.unwrap();
        let search = |text: &str, tag: Option<&str>, deleted: bool, cursor: Option<String>| {
            let q = SearchQuery {
                text: text.into(),
                tag: tag.map(Into::into),
                deleted,
                limit: 2,
                cursor,
                ..Default::default()
            };
            let r = &r;
            async move { r.search(&q).await.unwrap() }
        };
        let ids = |l: &DocumentList| -> Vec<String> {
            l.documents
                .iter()
                .map(|d| d.current.id.to_string())
                .collect()
        };
        // "v1" is in the title of `live` (and of `gone`'s first version, no longer current).
        assert_eq!(
            ids(&search("v1", None, false, None).await),
            [live.to_string()]
        );
        assert_eq!(
            ids(&search("v1", Some("t"), false, None).await),
            [live.to_string()]
        );
        assert_eq!(
            ids(&search("v2", None, false, None).await),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(&search("v2", None, true, None).await),
            [gone.to_string()]
        );
        assert_eq!(
            ids(&search("v2", Some("t"), true, None).await),
            [gone.to_string()]
        );
        // Five matches of "p-b", two per page.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = search("v3", None, false, cursor).await;
            seen.extend(ids(&page));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn search_words_are_literal() {
        assert_eq!(fts_query("annual rep*").unwrap(), r#""annual" "rep"*"#);
        assert_eq!(fts_query(" * - "), None);
    }
}
