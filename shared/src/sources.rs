//! Reachback sources (ARCHITECTURE.md §2.9): the `[[source]]` tables of a topology file, which
//! name external data that a primary publishes into the federation without an author.
//!
//! ```toml
//! [[source]]
//! name = "inbox"
//! kind = "watch"              # watch | http | exec
//! path = "/srv/docfed/inbox"
//! scope = "global"            # or "region:na"
//! tags = ["dropped"]
//! subfolders = "tags"         # each folder of a file's path becomes a tag
//! on_remove = "tombstone"     # or "keep"
//! ```
//!
//! One flat table per source, whose kind decides which options apply: an option of another kind
//! is an error, never silently ignored. Each external item becomes the document
//! [`item_id`]`(source, key)`, so a restart or the other primary taking over finds the same
//! document again instead of making a second one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{DocId, Scope};

/// How a source finds its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A directory watched in real time; each file is an item keyed by its relative path.
    Watch,
    /// A URL polled with conditional requests; the body is one item or a feed of items.
    Http,
    /// An operator's program that prints items as JSON lines.
    Exec,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Watch => "watch",
            SourceKind::Http => "http",
            SourceKind::Exec => "exec",
        }
    }
}

/// What happens to an item's document when the item is gone from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRemove {
    /// The document is deleted (a tombstone version).
    #[default]
    Tombstone,
    /// The document stays as it was last seen.
    Keep,
}

/// How a watched file's folders (relative to the watched path) become metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subfolders {
    /// Each folder name on the way to the file becomes a tag.
    #[default]
    Tags,
    /// Folders only make the key unique.
    Ignore,
}

/// What an `http` source's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    /// The whole body is one document.
    #[default]
    Document,
    /// An Atom or RSS feed; each entry is a document.
    Feed,
    /// JSON whose array at `items` holds the documents (e.g. GeoJSON's `/features`).
    Json,
}

/// Default quiet time before a watched file that was not closed after writing is taken.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
/// Default time between two polls of an `http` source and two runs of an `exec` source.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default time between two full rescans of a watched folder (events cover the rest).
pub const DEFAULT_RESCAN: Duration = Duration::from_secs(300);

/// One `[[source]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// 1-64 characters of `a-z`, `0-9`, `-`, `_`; part of every item's document id and of the
    /// lease's queue name, so renaming a source makes new documents.
    pub name: String,
    pub kind: SourceKind,
    /// Scope of the source's documents (default `global`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// Tags every document of the source gets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Author recorded on the source's documents (default `source:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub on_remove: OnRemove,

    /// `watch`: the folder; a relative path is relative to the topology file's folder
    /// ([`SourceSpec::resolve_path`]; `docfed-topology up`: to its run directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `watch`: what subfolders mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subfolders: Option<Subfolders>,
    /// `watch`: how long a file must stay unchanged before it is taken when no close was seen.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub settle: Option<Duration>,
    /// `watch`: time between full rescans.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub rescan: Option<Duration>,

    /// `http`: the URL polled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `http`: what the body is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FeedFormat>,
    /// `http` with `format = "json"`: JSON pointer to the array of items (e.g. `/features`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// `http` with `format = "json"`: JSON pointer, within an item, to its key (e.g. `/id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_key: Option<String>,
    /// `http` with `format = "json"`: JSON pointer, within an item, to its title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_title: Option<String>,
    /// `http` with `format = "json"`: metadata name -> JSON pointer within an item; the values
    /// become the document's description (`name: value` lines) and are searchable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,

    /// `exec`: the program and its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// `http` and `exec`: time between runs.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// `watch` and `exec`: the source's items are lazy: their bytes stay at the source until a
    /// node is first asked for them (an `exec` line may also say `"lazy": true` itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lazy: Option<bool>,
    /// Largest item accepted, in bytes (default: the node's upload limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_item_size: Option<u64>,
}

impl SourceSpec {
    pub fn scope(&self) -> Scope {
        self.scope.clone().unwrap_or(Scope::Global)
    }

    pub fn author(&self) -> String {
        self.author
            .clone()
            .unwrap_or_else(|| format!("source:{}", self.name))
    }

    pub fn settle(&self) -> Duration {
        self.settle.unwrap_or(DEFAULT_SETTLE)
    }

    pub fn rescan(&self) -> Duration {
        self.rescan.unwrap_or(DEFAULT_RESCAN)
    }

    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }

    /// Makes a relative `path` relative to `base` (the topology file's folder).
    pub fn resolve_path(&mut self, base: &std::path::Path) {
        if let Some(p) = &self.path {
            if p.is_relative() {
                self.path = Some(base.join(p));
            }
        }
    }

    /// Every problem of this table, each a sentence naming the option.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !crate::topology::is_valid_node_id(&self.name) {
            out.push("the name must be 1-64 characters of a-z, 0-9, `-`, `_`".to_owned());
        }
        for t in &self.tags {
            if t.is_empty()
                || t.chars().count() > crate::limits::MAX_TAG
                || t.chars().any(char::is_control)
            {
                out.push(format!(
                    "tag {t:?} is empty, too long or has control characters"
                ));
            }
        }
        if self.tags.len() > crate::limits::MAX_TAGS {
            out.push(format!("more than {} tags", crate::limits::MAX_TAGS));
        }
        let given = |set: bool, option: &str| set.then(|| option.to_owned());
        let options = [
            given(self.path.is_some(), "path"),
            given(self.subfolders.is_some(), "subfolders"),
            given(self.settle.is_some(), "settle"),
            given(self.rescan.is_some(), "rescan"),
            given(self.url.is_some(), "url"),
            given(self.format.is_some(), "format"),
            given(self.items.is_some(), "items"),
            given(self.item_key.is_some(), "item_key"),
            given(self.item_title.is_some(), "item_title"),
            given(!self.fields.is_empty(), "fields"),
            given(!self.command.is_empty(), "command"),
            given(self.interval.is_some(), "interval"),
            given(self.lazy.is_some(), "lazy"),
        ];
        let allowed: &[&str] = match self.kind {
            SourceKind::Watch => &["path", "subfolders", "settle", "rescan", "lazy"],
            SourceKind::Http => &[
                "url",
                "format",
                "items",
                "item_key",
                "item_title",
                "fields",
                "interval",
            ],
            SourceKind::Exec => &["command", "interval", "lazy"],
        };
        for option in options.into_iter().flatten() {
            if !allowed.contains(&option.as_str()) {
                out.push(format!(
                    "`{option}` is not an option of a {} source",
                    self.kind.as_str()
                ));
            }
        }
        match self.kind {
            SourceKind::Watch => {
                if self.path.is_none() {
                    out.push("a watch source needs `path`, the folder to watch".to_owned());
                }
            }
            SourceKind::Http => {
                match self.url.as_deref().map(url::Url::parse) {
                    None => out.push("an http source needs `url`".to_owned()),
                    Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => {}
                    Some(_) => out.push("`url` must be an http(s) URL".to_owned()),
                }
                let json = self.format == Some(FeedFormat::Json);
                for (set, option) in [
                    (self.items.is_some(), "items"),
                    (self.item_key.is_some(), "item_key"),
                    (self.item_title.is_some(), "item_title"),
                    (!self.fields.is_empty(), "fields"),
                ] {
                    if set && !json {
                        out.push(format!("`{option}` applies only with format = \"json\""));
                    }
                }
                if json && self.item_key.is_none() {
                    out.push(
                        "format = \"json\" needs `item_key`, a JSON pointer such as \"/id\""
                            .to_owned(),
                    );
                }
                let pointers = self
                    .items
                    .iter()
                    .chain(&self.item_key)
                    .chain(&self.item_title)
                    .chain(self.fields.values());
                for p in pointers {
                    if !p.is_empty() && !p.starts_with('/') {
                        out.push(format!("{p:?} is not a JSON pointer (it starts with `/`)"));
                    }
                }
            }
            SourceKind::Exec => {
                if self.command.is_empty() || self.command[0].is_empty() {
                    out.push("an exec source needs `command`, e.g. [\"/usr/local/bin/feed\", \"--json\"]".to_owned());
                }
            }
        }
        if matches!(self.interval, Some(d) if d < Duration::from_secs(1)) {
            out.push("`interval` must be at least 1s".to_owned());
        }
        if matches!(self.max_item_size, Some(0)) {
            out.push("`max_item_size` must be at least 1".to_owned());
        }
        out
    }
}

/// The document that item `key` of source `source` becomes: a UUID (version 8) made of the
/// SHA-256 of both, the same on every node and after every restart, and never a time-ordered
/// (version 7) id that a publication through the API gets.
pub fn item_id(source: &str, key: &str) -> DocId {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"docfed reachback item\0");
    h.update((source.len() as u64).to_be_bytes());
    h.update(source.as_bytes());
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    DocId::from_uuid(uuid::Uuid::new_v8(bytes))
}

/// The `source` field of an item's document: `<source>:<key>`, which says where it came from and
/// lets a primary list a source's documents (with [`item_id`] to tell them from an author's
/// document that merely names the same source).
pub fn item_source_field(source: &str, key: &str) -> String {
    format!("{source}:{key}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(extra: &str) -> SourceSpec {
        toml::from_str(&format!("name = \"inbox\"\n{extra}")).unwrap()
    }

    #[test]
    fn item_ids_are_stable_and_distinct() {
        assert_eq!(item_id("inbox", "a.txt"), item_id("inbox", "a.txt"));
        assert_ne!(item_id("inbox", "a.txt"), item_id("inbox", "b.txt"));
        // The length prefix keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(item_id("ab", "c"), item_id("a", "bc"));
        let text = item_id("inbox", "a.txt").to_string();
        assert_eq!(&text[14..15], "8", "a version 8 UUID: {text}");
        assert_eq!(text.parse::<DocId>().unwrap(), item_id("inbox", "a.txt"));
    }

    #[test]
    fn a_watch_source_needs_a_path_and_only_its_options() {
        assert!(parse("kind = \"watch\"\npath = \"/srv/in\"")
            .problems()
            .is_empty());
        let mut relative = parse("kind = \"watch\"\npath = \"in\"");
        relative.resolve_path(Path::new("/etc/docfed"));
        assert_eq!(relative.path.as_deref(), Some(Path::new("/etc/docfed/in")));
        let p = parse("kind = \"watch\"\npath = \"in\"\nurl = \"http://x\"").problems();
        assert!(
            p.iter()
                .any(|m| m.contains("`url` is not an option of a watch")),
            "{p:?}"
        );
        assert!(!parse("kind = \"watch\"").problems().is_empty());
    }

    #[test]
    fn http_sources_check_url_and_pointers() {
        let ok = parse(
            "kind = \"http\"\nurl = \"https://example.org/q.geojson\"\nformat = \"json\"\n\
             items = \"/features\"\nitem_key = \"/id\"\nfields = { magnitude = \"/properties/mag\" }",
        );
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        let p = parse("kind = \"http\"\nurl = \"ftp://x\"\nitem_key = \"id\"").problems();
        assert!(p.iter().any(|m| m.contains("http(s)")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("only with format")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("JSON pointer")), "{p:?}");
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_refused() {
        assert!(
            toml::from_str::<SourceSpec>("name = \"a\"\nkind = \"watch\"\npth = \"/x\"").is_err()
        );
        assert!(
            toml::from_str::<SourceSpec>("name = \"a\"\nkind = \"watch\"\nsettle = \"soon\"")
                .is_err()
        );
        let s = parse("kind = \"watch\"\npath = \"/x\"\nsettle = \"500ms\"");
        assert_eq!(s.settle(), Duration::from_millis(500));
        let back: SourceSpec = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn exec_needs_a_command() {
        assert!(!parse("kind = \"exec\"").problems().is_empty());
        assert!(
            parse("kind = \"exec\"\ncommand = [\"/bin/feed\"]\ninterval = \"5s\"")
                .problems()
                .is_empty()
        );
        assert!(
            !parse("kind = \"exec\"\ncommand = [\"/bin/feed\"]\ninterval = \"5ms\"")
                .problems()
                .is_empty()
        );
    }
}
