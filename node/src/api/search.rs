//! Directory search: the query rule lives in `docfed_shared::search`, shared with the device
//! replica; its tests against real SQLite FTS5 stay here.

pub use docfed_shared::search::bounded_fts_query;
#[cfg(test)]
pub use docfed_shared::search::fts_query;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_become_literals() {
        assert_eq!(fts_query("annual report").unwrap(), r#""annual" "report""#);
        assert_eq!(fts_query("rep*").unwrap(), r#""rep"*"#);
        assert_eq!(fts_query("re*").unwrap(), r#""re"*"#);
        assert_eq!(fts_query("r*").unwrap(), r#""r""#);
        assert_eq!(
            fts_query(r#"a"b NEAR -c"#).unwrap(),
            r#""a""b" "NEAR" "-c""#
        );
        assert_eq!(fts_query("  * - \" () "), None);
        assert_eq!(fts_query("a\0b\u{7}c").unwrap(), r#""a" "b" "c""#);
    }

    proptest::proptest! {
        /// Every term of the query is a quoted string (with an optional prefix star), so nothing
        /// a person types reaches FTS5 as syntax.
        #[test]
        fn every_term_is_quoted(text in ".{0,80}") {
            if let Some(q) = fts_query(&text) {
                let mut rest = q.as_str();
                while !rest.is_empty() {
                    proptest::prop_assert!(rest.starts_with('"'), "{q}");
                    // Skip the quoted string: "" inside it is an escaped quote.
                    let mut i = 1;
                    let b = rest.as_bytes();
                    loop {
                        proptest::prop_assert!(i < b.len(), "unterminated: {q}");
                        if b[i] == b'"' {
                            if b.get(i + 1) == Some(&b'"') { i += 2; continue; }
                            break;
                        }
                        i += 1;
                    }
                    rest = &rest[i + 1..];
                    rest = rest.strip_prefix('*').unwrap_or(rest);
                    rest = rest.strip_prefix(' ').unwrap_or(rest);
                }
            }
        }
    }
}
