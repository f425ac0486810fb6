//! Messages between nodes, carried by RabbitMQ. They are small: a notification carries what a
//! node needs to decide whether and where to pull (ARCHITECTURE.md §3), and the content itself
//! only when it is at most the federation's `inline_max` (§2a).
//!
//! Every message is an [`Envelope`] serialised as JSON. `schema` lets a node refuse (dead-letter)
//! messages of a format it does not understand instead of misreading them; `id` is the same on
//! every redundant copy of one logical message, so receivers can deduplicate.

use serde::{Deserialize, Serialize};

use crate::wire::{ChangeKind, DocumentVersion, Timestamp};
use crate::{DocId, Md5Hex};

/// AMQP header carrying the sender's signature (hex ed25519) of [`signing_input`].
pub const SIGNATURE_HEADER: &str = "x-docfed-signature";

/// What a sender signs: the receiving node's id and the exact message bytes, so a signed
/// message cannot be replayed into another node's inbox as if it had been sent there.
pub fn signing_input(to: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(to.len() + 1 + payload.len());
    v.extend_from_slice(to.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(payload);
    v
}

/// AMQP content type of a message that carries several envelopes for one receiver: a JSON
/// array of envelopes, as a relay sends the rows it found queued together (ARCHITECTURE.md §2.3).
/// One signature, one broker round trip and one acknowledgement then cover them all.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.docfed.batch+json";

/// The most envelopes one batch message may carry; a receiver dead-letters a larger one whole.
pub const MAX_BATCH: usize = 256;

/// The most bytes a relay puts in one batch message (an envelope larger than this travels
/// alone, as a plain message).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// Joins serialised envelopes into a batch payload (see [`BATCH_CONTENT_TYPE`]).
pub fn join_batch<'a>(envelopes: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, e) in envelopes.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.push(b']');
    out
}

/// Splits a batch payload into its envelopes' bytes, each to be parsed (and, if it must be,
/// refused) on its own with [`Envelope::parse`]. Fails for anything but a JSON array of 1 to
/// [`MAX_BATCH`] JSON values.
pub fn split_batch(bytes: &[u8]) -> Result<Vec<&[u8]>, MessageError> {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    /// Collects the elements' raw bytes, refusing the array at its element past `MAX_BATCH`
    /// rather than after collecting however many a hostile sender packed in.
    struct Elements;
    impl<'de> Visitor<'de> for Elements {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an array of 1-{MAX_BATCH} messages")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                if items.len() == MAX_BATCH {
                    return Err(serde::de::Error::custom(format!(
                        "a batch carries at most {MAX_BATCH} messages"
                    )));
                }
                items.push(item);
            }
            if items.is_empty() {
                return Err(serde::de::Error::custom("an empty batch"));
            }
            Ok(items)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let items = (&mut de).deserialize_seq(Elements)?;
    de.end()?;
    Ok(items.into_iter().map(|raw| raw.get().as_bytes()).collect())
}

/// The message format this build writes when a message carries no inline content; what every
/// earlier release reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The format of a notification that carries its content inline. A release that does not know
/// it dead-letters the message instead of recording a version whose bytes it dropped; this build
/// reads both (README "Upgrading").
pub const SCHEMA_INLINE: u32 = 2;

/// The default of the topology's `inline_max`: content up to this size travels inside its
/// notification. 64 KiB: a pull per node costs far more than these bytes twice on the wire.
pub const DEFAULT_INLINE_MAX: u64 = 64 * 1024;

/// The most content a notification may carry inline (the topology's `inline_max` cannot be
/// set higher): base64 makes it a third larger, and a batch message is at most
/// [`MAX_BATCH_BYTES`].
pub const MAX_INLINE: u64 = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub schema: u32,
    /// Identifies the logical message across redundant copies and redeliveries.
    pub id: String,
    /// The node that sent this copy.
    pub from: String,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// Boxed: a notification carries a whole document version and dwarfs the other messages.
    Notify(Box<Notification>),
    Receipt(Receipt),
    Annotation(Annotation),
    Decision(Decision),
}

/// A version of a document exists; pull its bytes from `origin_url` if you need them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub document: DocumentVersion,
    pub kind: ChangeKind,
    /// Base URL (`http://host:port`) of the node to pull the bytes from.
    pub origin_url: String,
    /// The final destinations this copy is routed to; the receiver forwards toward them.
    #[serde(default)]
    pub targets: Vec<String>,
    /// The content itself, when it is at most the federation's `inline_max`: whoever needs it
    /// stores it from here, and nobody pulls it. Checked against the version's MD5 and SHA-256
    /// (which the origin signed) before anything is recorded.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "inline_bytes"
    )]
    pub content: Option<bytes::Bytes>,
}

/// Inline content as base64 text in the JSON of a notification.
mod inline_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<bytes::Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bytes::Bytes>, D::Error> {
        let Some(text) = Option::<std::borrow::Cow<'de, str>>::deserialize(d)? else {
            return Ok(None);
        };
        // Bounded before decoding: a hostile sender's megabytes of text are refused unread.
        if text.len() as u64 > super::MAX_INLINE.div_ceil(3) * 4 {
            return Err(serde::de::Error::custom(format!(
                "inline content is larger than {} bytes",
                super::MAX_INLINE
            )));
        }
        let content = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("inline content is not base64: {e}")))?;
        if content.len() as u64 > super::MAX_INLINE {
            return Err(serde::de::Error::custom(format!(
                "inline content is larger than {} bytes",
                super::MAX_INLINE
            )));
        }
        Ok(Some(bytes::Bytes::from(content)))
    }
}

/// Node `node` holds version (`version`, `origin`) of `doc_id`: its metadata, and its content too
/// when `content` is true. Travels upward to the primaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub doc_id: DocId,
    pub version: i64,
    pub origin: String,
    pub md5: Md5Hex,
    pub node: String,
    pub content: bool,
    pub at: Timestamp,
}

/// A reader's note on a document, travelling upward to its author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    pub id: String,
    pub doc_id: DocId,
    pub doc_version: i64,
    pub author: String,
    pub text: String,
    pub created_at: Timestamp,
    /// The node where the annotation was written.
    pub node: String,
}

/// An author's verdict on an annotation, taken at primary `by` and sent from there to every
/// other node, so that every node (and the reader, wherever they ask) sees it. It carries the
/// annotation, so nodes it never passed through can show it too. The latest decision wins
/// (`decided_at`, then `by`), the same on every node. The annotation's `node` is the deciding
/// primary (where it was first written is not kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub annotation: Annotation,
    pub state: AnnotationState,
    pub decided_at: Timestamp,
    pub by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnotationState {
    Accepted,
    Rejected,
}

impl AnnotationState {
    pub fn as_str(self) -> &'static str {
        match self {
            AnnotationState::Accepted => "accepted",
            AnnotationState::Rejected => "rejected",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not a docfed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("message schema {found} is not supported (this node reads schema {SCHEMA_VERSION})")]
    UnsupportedSchema { found: u32 },
    #[error("invalid message: {0}")]
    Invalid(String),
}

// Message ids are what receivers deduplicate by: the same fact sent twice (the redundant
// second notification, a resend after a crash, a relay's copy) carries the same id.

impl Notification {
    /// `n:{doc}:{version}:{origin}`: one per version, whoever relays it.
    pub fn message_id(&self) -> String {
        let d = &self.document;
        format!("n:{}:{}:{}", d.id, d.version, d.origin)
    }
}

impl Receipt {
    /// `node`'s receipt for version `v`, stamped now: its content when `content`, else its
    /// metadata only.
    pub fn of(v: &DocumentVersion, node: &str, content: bool) -> Receipt {
        Receipt {
            doc_id: v.id,
            version: v.version,
            origin: v.origin.clone(),
            md5: v.md5.clone(),
            node: node.to_owned(),
            content,
            at: Timestamp::now(),
        }
    }

    /// `r:{node}:{doc}:{version}:{origin}:{c|m}`: one per node and version, `c` when the node
    /// holds the content, `m` when it keeps the metadata only.
    pub fn message_id(&self) -> String {
        let kind = if self.content { "c" } else { "m" };
        format!(
            "r:{}:{}:{}:{}:{kind}",
            self.node, self.doc_id, self.version, self.origin
        )
    }
}

impl Annotation {
    /// `a:{annotation id}`.
    pub fn message_id(&self) -> String {
        format!("a:{}", self.id)
    }
}

impl Decision {
    /// `d:{annotation id}:{deciding primary}:{decided_at ms}`: a later decision is a new message.
    pub fn message_id(&self) -> String {
        format!(
            "d:{}:{}:{}",
            self.annotation.id,
            self.by,
            self.decided_at.millis()
        )
    }
}

impl Envelope {
    pub fn new(id: String, from: &str, body: Body) -> Self {
        let inline = matches!(&body, Body::Notify(n) if n.content.is_some());
        Envelope {
            schema: if inline {
                SCHEMA_INLINE
            } else {
                SCHEMA_VERSION
            },
            id,
            from: from.to_owned(),
            body,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("messages serialise")
    }

    /// Parses and validates a message; any error means the message goes to the dead-letter
    /// queue.
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        // Read the schema first, so a future format fails as "unsupported", not "malformed".
        #[derive(Deserialize)]
        struct SchemaOnly {
            schema: u32,
        }
        let probe: SchemaOnly = serde_json::from_slice(bytes)?;
        if probe.schema != SCHEMA_VERSION && probe.schema != SCHEMA_INLINE {
            return Err(MessageError::UnsupportedSchema {
                found: probe.schema,
            });
        }
        let env: Envelope = serde_json::from_slice(bytes)?;
        env.validate()?;
        Ok(env)
    }

    fn validate(&self) -> Result<(), MessageError> {
        let invalid = |m: String| Err(MessageError::Invalid(m));
        if self.id.is_empty() || self.id.len() > 200 {
            return invalid("id must be 1-200 characters".into());
        }
        if !crate::scope::is_valid_region(&self.from) {
            return invalid(format!("bad sender id {:?}", self.from));
        }
        match &self.body {
            Body::Notify(n) => {
                let d = &n.document;
                if let Err(e) = crate::limits::check_version(d) {
                    return invalid(e);
                }
                if !crate::scope::is_valid_region(&d.origin) {
                    return invalid(format!("bad origin node {:?}", d.origin));
                }
                if !(n.origin_url.starts_with("http://") || n.origin_url.starts_with("https://")) {
                    return invalid(format!("origin_url {:?} is not an http URL", n.origin_url));
                }
                if let Some(t) = n.targets.iter().find(|t| !crate::scope::is_valid_region(t)) {
                    return invalid(format!("bad target node {t:?}"));
                }
                match &n.content {
                    Some(content) => {
                        if self.schema != SCHEMA_INLINE {
                            return invalid(format!(
                                "inline content in a schema {} message",
                                self.schema
                            ));
                        }
                        check_inline(d, content)?;
                    }
                    None if self.schema == SCHEMA_INLINE => {
                        return invalid("a schema 2 message without inline content".into());
                    }
                    None => {}
                }
            }
            Body::Receipt(r) => {
                if !crate::scope::is_valid_region(&r.node) {
                    return invalid(format!("bad node {:?}", r.node));
                }
                if !crate::scope::is_valid_region(&r.origin) {
                    return invalid(format!("bad origin node {:?}", r.origin));
                }
                if !(1..=crate::limits::MAX_VERSION).contains(&r.version) {
                    return invalid(format!("receipt version {} out of range", r.version));
                }
            }
            Body::Annotation(a) => check_annotation(a)?,
            Body::Decision(d) => {
                check_annotation(&d.annotation)?;
                if !crate::scope::is_valid_region(&d.by) {
                    return invalid(format!("bad deciding node {:?}", d.by));
                }
            }
        }
        Ok(())
    }
}

/// Inline content must be the version's content: its size, its MD5 and, when the version
/// carries one (always in a keyed federation, where the origin signed it), its SHA-256. A
/// relay can then not substitute the bytes of a version it passes on.
fn check_inline(d: &DocumentVersion, content: &[u8]) -> Result<(), MessageError> {
    let invalid = |m: String| Err(MessageError::Invalid(m));
    if d.deleted || d.lazy {
        return invalid("a tombstone or a lazy version carries no content".into());
    }
    if content.len() as u64 != d.size {
        return invalid(format!(
            "inline content of {} bytes for a version of {} bytes",
            content.len(),
            d.size
        ));
    }
    let mut hasher = crate::ContentHasher::new();
    crate::hashing::StreamHash::update(&mut hasher, content);
    let digests = hasher.finish();
    if digests.md5 != d.md5 {
        return invalid(format!(
            "inline content has MD5 {}, not the version's {}",
            digests.md5, d.md5
        ));
    }
    if d.sha256.as_ref().is_some_and(|s| *s != digests.sha256) {
        return invalid("inline content does not match the version's signed SHA-256".into());
    }
    Ok(())
}

fn check_annotation(a: &Annotation) -> Result<(), MessageError> {
    use crate::limits::{MAX_ANNOTATION, MAX_ANNOTATION_AUTHOR};
    let invalid = |m: String| Err(MessageError::Invalid(m));
    if a.id.parse::<crate::DocId>().is_err() {
        return invalid(format!("annotation id {:?} is not a UUID", a.id));
    }
    if a.text.is_empty() || a.text.chars().count() > MAX_ANNOTATION {
        return invalid(format!(
            "annotation text must be 1-{MAX_ANNOTATION} characters"
        ));
    }
    if a.author.chars().count() > MAX_ANNOTATION_AUTHOR || a.author.chars().any(char::is_control) {
        return invalid(format!(
            "annotation author must be at most {MAX_ANNOTATION_AUTHOR} printable characters"
        ));
    }
    if !(1..=crate::limits::MAX_VERSION).contains(&a.doc_version) {
        return invalid(format!("annotated version {} out of range", a.doc_version));
    }
    if !crate::scope::is_valid_region(&a.node) {
        return invalid(format!("bad node {:?}", a.node));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_splits_into_the_envelopes_it_joined() {
        let a = notify().to_bytes();
        let mut second = notify();
        second.id = "a:2".into();
        let b = second.to_bytes();
        let joined = join_batch([a.as_slice(), b.as_slice()]);
        let parts = split_batch(&joined).unwrap();
        assert_eq!(parts, vec![a.as_slice(), b.as_slice()]);
        assert_eq!(Envelope::parse(parts[1]).unwrap().id, "a:2");
    }

    #[test]
    fn a_batch_that_is_not_an_array_of_one_to_max_is_refused() {
        let one = notify().to_bytes();
        let too_many = join_batch(std::iter::repeat_n(one.as_slice(), MAX_BATCH + 1));
        for bad in [&b"[]"[..], b"{}", b"[1,", b"not json", &too_many] {
            assert!(
                split_batch(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // An element that is not an envelope is refused on its own, by `Envelope::parse`.
        let parts = split_batch(br#"[1, {"x": 2}]"#).unwrap();
        assert!(parts.iter().all(|p| Envelope::parse(p).is_err()));
    }

    /// The ids are a contract between releases: a node deduplicates what an older or newer
    /// peer sends by them.
    #[test]
    fn message_ids_keep_their_format() {
        let Body::Notify(n) = notify().body else {
            unreachable!()
        };
        let d = &n.document;
        assert_eq!(n.message_id(), format!("n:{}:1:primary-a", d.id));
        let mut r = Receipt {
            doc_id: d.id,
            version: 1,
            origin: "primary-a".into(),
            md5: d.md5.clone(),
            node: "eu".into(),
            content: true,
            at: Timestamp(5),
        };
        assert_eq!(r.message_id(), format!("r:eu:{}:1:primary-a:c", d.id));
        r.content = false;
        assert!(r.message_id().ends_with(":m"));
        let a = Annotation {
            id: "a1".into(),
            doc_id: d.id,
            doc_version: 1,
            author: "x".into(),
            text: "y".into(),
            created_at: Timestamp(1),
            node: "eu".into(),
        };
        assert_eq!(a.message_id(), "a:a1");
        let dec = Decision {
            annotation: a,
            state: AnnotationState::Accepted,
            decided_at: Timestamp(42),
            by: "primary-b".into(),
        };
        assert_eq!(dec.message_id(), "d:a1:primary-b:42");
    }

    fn notify() -> Envelope {
        Envelope::new(
            "m1".into(),
            "primary-a",
            Body::Notify(Box::new(Notification {
                document: DocumentVersion {
                    id: DocId::new(),
                    version: 1,
                    origin: "primary-a".into(),
                    title: "t".into(),
                    description: String::new(),
                    tags: vec![],
                    filename: "f".into(),
                    source: String::new(),
                    scope: crate::Scope::Global,
                    content_type: "text/plain".into(),
                    md5: Md5Hex::empty(),
                    size: 0,
                    deleted: false,
                    created_at: Timestamp(0),
                    author: String::new(),
                    sha256: None,
                    signature: None,
                    lazy: false,
                },
                kind: ChangeKind::Published,
                origin_url: "http://127.0.0.1:1".into(),
                targets: vec!["na".into()],
                content: None,
            })),
        )
    }

    /// A notification carrying `content` as its version's bytes, hashes and all.
    fn inline(content: &[u8]) -> Envelope {
        let mut h = crate::ContentHasher::new();
        crate::hashing::StreamHash::update(&mut h, content);
        let digests = h.finish();
        let Body::Notify(mut n) = notify().body else {
            unreachable!()
        };
        n.document.md5 = digests.md5;
        n.document.sha256 = Some(digests.sha256);
        n.document.size = content.len() as u64;
        n.content = Some(bytes::Bytes::copy_from_slice(content));
        Envelope::new("m1".into(), "primary-a", Body::Notify(n))
    }

    #[test]
    fn inline_content_travels_as_schema_2_and_must_be_the_versions_bytes() {
        for size in [0usize, 1, 100, MAX_INLINE as usize] {
            let content: Vec<u8> = (0..size).map(|i| (i % 7) as u8).collect();
            let m = inline(&content);
            assert_eq!(m.schema, SCHEMA_INLINE);
            let back = Envelope::parse(&m.to_bytes()).unwrap();
            assert_eq!(back, m, "{size}");
        }
        // Without content a notification is schema 1, as every earlier release wrote it.
        assert_eq!(notify().schema, SCHEMA_VERSION);
        // Bytes that are not the signed content: another byte, one byte more, a stale SHA-256.
        let mut m = inline(b"hello");
        doc(&mut m).size = 4;
        assert!(matches!(
            Envelope::parse(&m.to_bytes()),
            Err(MessageError::Invalid(_))
        ));
        let mut m = inline(b"hello");
        if let Body::Notify(n) = &mut m.body {
            n.content = Some(bytes::Bytes::from_static(b"hellO"));
        }
        let why = format!("{:?}", Envelope::parse(&m.to_bytes()).unwrap_err());
        assert!(why.contains("MD5"), "{why}");
        let mut m = inline(b"hello");
        doc(&mut m).sha256 = inline(b"other").body_version().sha256.clone();
        let why = format!("{:?}", Envelope::parse(&m.to_bytes()).unwrap_err());
        assert!(why.contains("SHA-256"), "{why}");
        // A tombstone carries nothing; schema 1 cannot carry content; schema 2 must.
        let mut m = inline(b"hello");
        doc(&mut m).deleted = true;
        assert!(Envelope::parse(&m.to_bytes()).is_err());
        let mut m = inline(b"hello");
        m.schema = SCHEMA_VERSION;
        assert!(Envelope::parse(&m.to_bytes()).is_err());
        let mut m = notify();
        m.schema = SCHEMA_INLINE;
        assert!(Envelope::parse(&m.to_bytes()).is_err());
        // Content above the bound is refused before it is decoded.
        let big = vec![1u8; MAX_INLINE as usize + 1];
        match Envelope::parse(&inline(&big).to_bytes()) {
            Err(e) => assert!(e.to_string().contains("larger than"), "{e}"),
            Ok(_) => panic!("content above MAX_INLINE accepted"),
        }
        let mut v: serde_json::Value = serde_json::from_slice(&inline(b"hi").to_bytes()).unwrap();
        v["body"]["content"] = "not base64!".into();
        assert!(Envelope::parse(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    impl Envelope {
        fn body_version(&self) -> &DocumentVersion {
            match &self.body {
                Body::Notify(n) => &n.document,
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn round_trips() {
        let m = notify();
        assert_eq!(Envelope::parse(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn a_lazy_version_signs_its_laziness_and_other_versions_sign_as_before() {
        let Body::Notify(n) = notify().body else {
            unreachable!()
        };
        let plain = n.document;
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("lazy").is_none(), "absent unless set: {json}");
        let lazy = DocumentVersion {
            lazy: true,
            ..plain.clone()
        };
        // A lazy version's input is the plain one's plus the flag, so no plain version's
        // signature can pass for a lazy one, and signatures made before the flag still verify.
        let (p, l) = (plain.signing_input(), lazy.signing_input());
        assert!(l.starts_with(&p) && l.len() > p.len());
        let back: DocumentVersion =
            serde_json::from_value(serde_json::to_value(&lazy).unwrap()).unwrap();
        assert!(back.lazy);
    }

    #[test]
    fn refuses_garbage_future_schemas_and_invalid_fields() {
        assert!(matches!(
            Envelope::parse(b"not json"),
            Err(MessageError::Malformed(_))
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&notify().to_bytes()).unwrap();
        v["schema"] = 3.into();
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            Envelope::parse(&bytes),
            Err(MessageError::UnsupportedSchema { found: 3 })
        ));
        let mut m = notify();
        if let Body::Notify(n) = &mut m.body {
            n.origin_url = "file:///etc/passwd".into();
        }
        assert!(matches!(
            Envelope::parse(&m.to_bytes()),
            Err(MessageError::Invalid(_))
        ));
    }

    fn refused(edit: impl FnOnce(&mut Envelope)) -> String {
        let mut m = notify();
        edit(&mut m);
        match Envelope::parse(&m.to_bytes()) {
            Err(MessageError::Invalid(why)) => why,
            other => panic!("accepted or misread: {other:?}"),
        }
    }

    fn doc(m: &mut Envelope) -> &mut DocumentVersion {
        match &mut m.body {
            Body::Notify(n) => &mut n.document,
            _ => unreachable!(),
        }
    }

    #[test]
    fn versions_and_fields_are_bounded() {
        // A version at i64::MAX would make the next edit overflow.
        assert!(refused(|m| doc(m).version = i64::MAX).contains("version"));
        assert!(refused(|m| doc(m).version = 0).contains("version"));
        assert!(refused(|m| doc(m).title = "x".repeat(1 << 20)).contains("title"));
        assert!(refused(|m| doc(m).title = "a\u{0}b".into()).contains("title"));
        assert!(refused(|m| doc(m).tags = vec!["t".into(); 51]).contains("tags"));
        assert!(refused(|m| doc(m).description = "d".repeat(20_001)).contains("description"));
        assert!(refused(|m| doc(m).size = u64::MAX).contains("size"));
        let mut ok = notify();
        doc(&mut ok).version = crate::limits::MAX_VERSION;
        doc(&mut ok).description = "line one\nline two".into();
        assert!(Envelope::parse(&ok.to_bytes()).is_ok());
    }

    #[test]
    fn annotation_ids_and_fields_are_checked() {
        let annotation = |id: &str, author: &str| Annotation {
            id: id.into(),
            doc_id: DocId::new(),
            doc_version: 1,
            author: author.into(),
            text: "note".into(),
            created_at: Timestamp(0),
            node: "na".into(),
        };
        let parse = |a: Annotation| {
            Envelope::parse(&Envelope::new("a:1".into(), "na", Body::Annotation(a)).to_bytes())
        };
        assert!(parse(annotation(&DocId::new().to_string(), "reader")).is_ok());
        for id in ["", "../../etc", "x'; DROP TABLE annotations; --"] {
            assert!(parse(annotation(id, "reader")).is_err(), "{id:?}");
        }
        assert!(parse(annotation(&DocId::new().to_string(), &"r".repeat(201))).is_err());
    }

    proptest::proptest! {
        /// Whatever bytes arrive, parsing returns (never panics), and what it accepts
        /// serialises back to a message that parses to the same thing.
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(env) = Envelope::parse(&bytes) {
                proptest::prop_assert_eq!(Envelope::parse(&env.to_bytes()).ok(), Some(env));
            }
        }

        /// Mutating one field of a valid message to arbitrary text is either refused with a
        /// reason or accepted within the bounds.
        #[test]
        fn mutated_titles_are_refused_or_bounded(title in ".{0,600}", version in proptest::num::i64::ANY) {
            let mut m = notify();
            doc(&mut m).title = title;
            doc(&mut m).version = version;
            if let Ok(env) = Envelope::parse(&m.to_bytes()) {
                let d = match &env.body { Body::Notify(n) => &n.document, _ => unreachable!() };
                proptest::prop_assert!(d.title.chars().count() <= crate::limits::MAX_TITLE);
                proptest::prop_assert!((1..=crate::limits::MAX_VERSION).contains(&d.version));
            }
        }
    }
}
