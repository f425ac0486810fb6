//! Turning what a person types into a safe FTS5 query: the node's directory search and the
//! device replica's offline search use the same rule.
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
            let core = word.trim_end_matches('*');
            // A one-character prefix would match a large share of any directory and has no
            // prefix index (prefixes of 2-4 characters do): it is searched as a word.
            let prefix =
                word.ends_with('*') && core.chars().filter(|c| c.is_alphanumeric()).count() >= 2;
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
