//! The publish form's text fields: validated against the bounds the node enforces (shared
//! `limits`), so the portal never sends what a primary would refuse; file names and media types
//! cleaned.

use docfed_shared::limits::{
    MAX_DESCRIPTION, MAX_FILENAME, MAX_SOURCE, MAX_TAG, MAX_TAGS, MAX_TITLE,
};
use docfed_shared::Scope;

use crate::views::{FieldError, FormValues};

/// Checks the publish form's text fields against the bounds the node enforces (shared
/// `limits`), so the portal never sends what a primary would refuse: every problem, or the
/// metadata to send.
pub(super) fn validate_form(
    v: &FormValues,
    regions: &[String],
    filename: Option<&str>,
) -> Result<Meta, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut err = |field: &'static str, message: String| errors.push(FieldError { field, message });
    let title = v.title.trim();
    if title.is_empty() {
        err("title", "Enter a title.".into());
    } else if title.chars().count() > MAX_TITLE {
        err(
            "title",
            format!("The title is longer than {MAX_TITLE} characters."),
        );
    } else if title.chars().any(char::is_control) {
        err("title", "The title must be one line of text.".into());
    }
    if v.description.chars().count() > MAX_DESCRIPTION {
        err(
            "description",
            format!("The description is longer than {MAX_DESCRIPTION} characters."),
        );
    } else if v
        .description
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        err(
            "description",
            "The description contains control characters.".into(),
        );
    }
    let source = v.source.trim();
    if source.chars().count() > MAX_SOURCE {
        err(
            "source",
            format!("The source is longer than {MAX_SOURCE} characters."),
        );
    } else if source.chars().any(char::is_control) {
        err("source", "The source must be one line of text.".into());
    }
    let mut tags: Vec<String> = Vec::new();
    for t in v.tags.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let t = t.to_lowercase();
        if t.chars().count() > MAX_TAG || t.chars().any(char::is_control) {
            err(
                "tags",
                format!("Each tag must be one line of at most {MAX_TAG} characters."),
            );
            break;
        }
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.len() > MAX_TAGS {
        err("tags", format!("At most {MAX_TAGS} tags."));
    }
    let scope = v.scope.trim();
    let scope_ok = match scope.parse::<Scope>() {
        Ok(Scope::Global) => true,
        Ok(Scope::Region(r)) => regions.contains(&r),
        Err(_) => false,
    };
    if !scope_ok {
        err(
            "scope",
            if regions.is_empty() {
                "Choose the scope: global.".to_owned()
            } else {
                format!(
                    "Choose the scope: global or one of the regions {}.",
                    regions.join(", ")
                )
            },
        );
    }
    if filename == Some("") {
        err("file", "Choose a file to publish.".into());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Meta {
        title: title.to_owned(),
        description: v.description.clone(),
        tags,
        source: source.to_owned(),
        scope: scope.to_owned(),
    })
}

pub(super) struct Meta {
    pub(super) title: String,
    pub(super) description: String,
    pub(super) tags: Vec<String>,
    pub(super) source: String,
    pub(super) scope: String,
}

pub(super) fn field_name(name: &str) -> &'static str {
    match name {
        "title" => "title",
        "description" => "description",
        "tags" => "tags",
        "source" => "source",
        "scope" => "scope",
        _ => "",
    }
}

pub(super) fn label(name: &str) -> &'static str {
    match name {
        "title" => "The title",
        "description" => "The description",
        "tags" => "The tags",
        "source" => "The source",
        "scope" => "The scope",
        _ => "A form field",
    }
}

/// The file name as metadata: the last path component (old browsers send a full path), one
/// line, at most 255 characters.
pub(super) fn clean_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    base.chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A media type the node will accept (`type/subtype`, token characters); anything else is left
/// out and the node guesses from the file name.
pub(super) fn plausible_media_type(ct: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    ct.len() <= 255 && matches!(ct.split_once('/'), Some((t, s)) if token(t) && token(s))
}

#[cfg(test)]
mod tests {
    use docfed_shared::Md5Hex;

    use super::*;

    #[test]
    fn filenames() {
        assert_eq!(clean_filename("C:\\Users\\me\\report.pdf"), "report.pdf");
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("a\nb.txt"), "ab.txt");
        assert_eq!(clean_filename(""), "");
        assert_eq!(clean_filename(&"x".repeat(300)).len(), 255);
    }

    use proptest::prelude::*;

    /// Any text, control characters, combining marks and characters whose lower case is longer
    /// included, at lengths around the limits.
    fn text(max: usize) -> impl Strategy<Value = String> {
        let chars = |c: Vec<char>| c.into_iter().collect::<String>();
        prop_oneof![
            proptest::collection::vec(any::<char>(), 0..max).prop_map(chars),
            proptest::collection::vec(prop_oneof![Just('İ'), Just('a'), Just(' ')], 0..max)
                .prop_map(chars),
            (0..max).prop_map(|n| "x".repeat(n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever an author types, the form is either refused with a reason or yields metadata
        /// the node accepts: the portal never sends a publication a primary refuses for its
        /// fields.
        #[test]
        fn accepted_forms_pass_the_nodes_bounds(
            title in text(600),
            description in text(20_100),
            tags in prop_oneof![text(200), proptest::collection::vec(text(70), 0..60).prop_map(|t| t.join(","))],
            source in text(600),
            scope in prop_oneof![Just("global".to_owned()), Just("region:na".to_owned()), text(20)],
            filename in text(400),
        ) {
            let values = FormValues { title, description, tags, source, scope };
            let regions = vec!["na".to_owned()];
            let clean = clean_filename(&filename);
            prop_assert!(clean.chars().count() <= MAX_FILENAME);
            prop_assert!(!clean.contains(['/', '\\']));
            if let Ok(meta) = validate_form(&values, &regions, Some(&filename)) {
                let v = docfed_shared::wire::DocumentVersion {
                    id: docfed_shared::DocId::new(),
                    version: 1,
                    origin: "primary".into(),
                    title: meta.title,
                    description: meta.description,
                    tags: meta.tags,
                    filename: clean,
                    source: meta.source,
                    scope: meta.scope.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?,
                    content_type: "application/octet-stream".into(),
                    md5: Md5Hex::empty(),
                    size: 0,
                    deleted: false,
                    created_at: docfed_shared::wire::Timestamp(0),
                    author: String::new(),
                    sha256: None,
                    signature: None,
                    lazy: false,
                };
                prop_assert_eq!(docfed_shared::limits::check_version(&v), Ok(()));
            }
        }

        /// A media type the portal passes on is one the node's bounds accept.
        #[test]
        fn plausible_media_types_fit_the_node(ct in text(300)) {
            if plausible_media_type(&ct) {
                prop_assert!(ct.len() <= docfed_shared::limits::MAX_CONTENT_TYPE && ct.is_ascii());
            }
        }
    }

    #[test]
    fn media_types() {
        assert!(plausible_media_type("application/pdf"));
        assert!(plausible_media_type("image/svg+xml"));
        assert!(!plausible_media_type("nonsense"));
        assert!(!plausible_media_type("text/plain; charset=\"x\""));
    }
}
