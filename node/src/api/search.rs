//! Turning what a person types into a safe FTS5 query.
//!
//! FTS5 has its own syntax (`"`, `*`, `-`, `:`, `^`, `AND`/`OR`/`NOT`/`NEAR`, parentheses); a
//! search box must never produce an SQL error. Every word becomes a quoted string (so operators
//! and punctuation are literal), words are ANDed, and a trailing `*` on a word is kept as a prefix
//! search because people expect it.

/// Returns `None` when the text holds nothing searchable.
pub fn fts_query(text: &str) -> Option<String> {
    // Control characters separate words too: FTS5 cannot take a NUL even inside a quoted
    // string (found by the property test: a NUL in the search box was a 500).
    let terms: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .filter_map(|word| {
            let prefix = word.ends_with('*');
            let core = word.trim_end_matches('*');
            // Words with no letters or digits would match nothing (the tokenizer drops them).
            if !core.chars().any(char::is_alphanumeric) {
                return None;
            }
            let quoted = format!("\"{}\"", core.replace('"', "\"\""));
            Some(if prefix { format!("{quoted}*") } else { quoted })
        })
        .collect();
    if terms.is_empty() {
        None
    } else {
        Some(terms.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_become_literals() {
        assert_eq!(fts_query("annual report").unwrap(), r#""annual" "report""#);
        assert_eq!(fts_query("rep*").unwrap(), r#""rep"*"#);
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
