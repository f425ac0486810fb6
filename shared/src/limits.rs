//! Bounds on document metadata and versions: the node enforces them on publication, the portal
//! on its forms, and every node again on versions that arrive by message, so no peer can make
//! another store a megabyte title or a version number that overflows the next edit.

/// Characters in a title.
pub const MAX_TITLE: usize = 500;
/// Characters in a description (multi-line).
pub const MAX_DESCRIPTION: usize = 20_000;
/// Characters in the author's file name.
pub const MAX_FILENAME: usize = 255;
/// Characters in the free-form `source` and `author` fields.
pub const MAX_SOURCE: usize = 500;
/// Tags on one document.
pub const MAX_TAGS: usize = 50;
/// Characters in one tag.
pub const MAX_TAG: usize = 64;
/// Bytes in a media type.
pub const MAX_CONTENT_TYPE: usize = 255;
/// Characters in an annotation's text.
pub const MAX_ANNOTATION: usize = 20_000;
/// Characters in an annotation's author name.
pub const MAX_ANNOTATION_AUTHOR: usize = 200;
/// Highest version number a node accepts: far beyond any real history (a version a millisecond
/// for 285,000 years) and far enough below `i64::MAX` that `version + 1` never overflows.
pub const MAX_VERSION: i64 = 1 << 53;
/// Largest content size a version may declare: sizes are stored as SQLite integers (i64).
pub const MAX_SIZE: u64 = i64::MAX as u64;

/// Checks a version's metadata against the bounds above; the error names the field.
pub fn check_version(d: &crate::wire::DocumentVersion) -> Result<(), String> {
    if !(1..=MAX_VERSION).contains(&d.version) {
        return Err(format!(
            "version {} is outside 1..={MAX_VERSION}",
            d.version
        ));
    }
    if d.size > MAX_SIZE {
        return Err(format!("size {} is too large", d.size));
    }
    let chars = |field: &str, v: &str, max: usize, multiline: bool| {
        if v.chars().count() > max {
            return Err(format!("{field} is longer than {max} characters"));
        }
        let bad = |c: char| c.is_control() && !(multiline && matches!(c, '\n' | '\t' | '\r'));
        if v.chars().any(bad) {
            return Err(format!("{field} contains control characters"));
        }
        Ok(())
    };
    chars("title", &d.title, MAX_TITLE, false)?;
    chars("description", &d.description, MAX_DESCRIPTION, true)?;
    chars("filename", &d.filename, MAX_FILENAME, false)?;
    chars("source", &d.source, MAX_SOURCE, false)?;
    chars("author", &d.author, MAX_SOURCE, false)?;
    if d.content_type.len() > MAX_CONTENT_TYPE || !d.content_type.is_ascii() {
        return Err(format!(
            "content_type must be at most {MAX_CONTENT_TYPE} ASCII bytes"
        ));
    }
    chars("content_type", &d.content_type, MAX_CONTENT_TYPE, false)?;
    if d.tags.len() > MAX_TAGS {
        return Err(format!("more than {MAX_TAGS} tags"));
    }
    for t in &d.tags {
        chars("tag", t, MAX_TAG, false)?;
    }
    if let Some(sig) = &d.signature {
        if sig.len() != 128 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("signature must be 128 hexadecimal digits".into());
        }
    }
    Ok(())
}
