//! Turning what a person types into a safe FTS5 query.
//!
//! FTS5 has its own syntax (`"`, `*`, `-`, `:`, `^`, `AND`/`OR`/`NOT`/`NEAR`, parentheses); a
//! search box must never produce an SQL error. Every word becomes a quoted string (so operators
//! and punctuation are literal), words are ANDed, and a trailing `*` on a word is kept as a prefix
//! search because people expect it.

/// Returns `None` when the text holds nothing searchable.
pub fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
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
    }
}
