//! Turning what a person types into a safe FTS5 query: the node's directory search and the
//! device replica's offline search use the same rule.
//!
//! FTS5 has its own syntax (`"`, `*`, `-`, `:`, `^`, `AND`/`OR`/`NOT`/`NEAR`, parentheses); a
//! search box must never produce an SQL error. Every word becomes a quoted string (so operators
//! and punctuation are literal), words are ANDed, and a trailing `*` on a word is kept as a prefix
//! search because people expect it.

/// Most characters of a search a server accepts.
pub const MAX_QUERY_CHARS: usize = 500;
/// Most words of a search a server accepts: every word is one more doclist to intersect.
pub const MAX_QUERY_TERMS: usize = 16;
/// Most prefix words (`rep*`) of a search a server accepts: a prefix can expand into thousands of
/// index terms, each read and merged, and several of them multiply the work.
pub const MAX_PREFIX_TERMS: usize = 4;

/// [`fts_query`] within the bounds a server applies to a search from the network: the text,
/// its words and its prefix words are counted, and a search beyond them is refused with the
/// reason rather than cut short, so nobody is shown the answer to a search they did not type.
pub fn bounded_fts_query(text: &str) -> Result<Option<String>, String> {
    if text.chars().count() > MAX_QUERY_CHARS {
        return Err(format!("is longer than {MAX_QUERY_CHARS} characters"));
    }
    let terms = terms(text);
    if terms.len() > MAX_QUERY_TERMS {
        return Err(format!(
            "has {} words; a search may have at most {MAX_QUERY_TERMS}",
            terms.len()
        ));
    }
    let prefixes = terms.iter().filter(|t| t.prefix).count();
    if prefixes > MAX_PREFIX_TERMS {
        return Err(format!(
            "has {prefixes} prefix searches (`word*`); a search may have at most \
             {MAX_PREFIX_TERMS}"
        ));
    }
    Ok(join(terms))
}

/// Returns `None` when the text holds nothing searchable.
pub fn fts_query(text: &str) -> Option<String> {
    join(terms(text))
}

/// One word of a search, quoted for FTS5.
struct Term {
    quoted: String,
    prefix: bool,
}

fn terms(text: &str) -> Vec<Term> {
    // Control characters separate words too: FTS5 cannot take a NUL even inside a quoted
    // string (found by the property test: a NUL in the search box was a 500).
    text.split(|c: char| c.is_whitespace() || c.is_control())
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
            Some(Term {
                quoted: format!("\"{}\"", core.replace('"', "\"\"")),
                prefix,
            })
        })
        .collect()
}

fn join(terms: Vec<Term>) -> Option<String> {
    if terms.is_empty() {
        return None;
    }
    let parts: Vec<String> = terms
        .into_iter()
        .map(|t| {
            if t.prefix {
                format!("{}*", t.quoted)
            } else {
                t.quoted
            }
        })
        .collect();
    Some(parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_beyond_the_bounds_is_refused_with_the_reason() {
        let words: Vec<String> = (0..MAX_QUERY_TERMS).map(|i| format!("w{i}")).collect();
        assert!(bounded_fts_query(&words.join(" ")).unwrap().is_some());
        let one_more = format!("{} extra", words.join(" "));
        assert!(bounded_fts_query(&one_more).unwrap_err().contains("words"));
        let prefixes: Vec<String> = (0..=MAX_PREFIX_TERMS).map(|i| format!("ab{i}*")).collect();
        assert!(bounded_fts_query(&prefixes.join(" "))
            .unwrap_err()
            .contains("prefix"));
        // A quote or a star inside a word is part of the word, not a term boundary.
        assert_eq!(
            bounded_fts_query(r#"a"* b"*c rep*"#).unwrap().unwrap(),
            r#""a""" "b""*c" "rep"*"#
        );
        assert!(bounded_fts_query(&"x".repeat(MAX_QUERY_CHARS + 1)).is_err());
        assert_eq!(bounded_fts_query("  -- ").unwrap(), None);
    }
}
