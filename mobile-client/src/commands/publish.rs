//! `docfed publish`: publishes files and folders through a primary's bulk API
//! (`POST /v1/documents/batch`), in requests of at most [`REQUEST_FILES`] files or
//! [`REQUEST_BYTES`] bytes (a larger file goes alone), each file streamed from disk as the
//! request is sent. Every file gets one line (or one JSON object): published, or why not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytesize::ByteSize;
use docfed_shared::wire::batch::{BatchResponse, ItemOutcome};
use docfed_shared::wire::{ErrorCode, PublishResponse};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::multipart::{Form, Part};
use tokio::io::AsyncReadExt;

use super::Ctx;
use crate::client::Client;
use crate::error::CliError;
use crate::walk::{self, Found};
use crate::PublishArgs;

/// Most files in one request (the node takes up to 10,000).
const REQUEST_FILES: usize = 1000;
/// Most bytes of files in one request, so that a request that fails costs little to resend.
const REQUEST_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes read from a file at a time.
const READ_SIZE: usize = 64 * 1024;

/// What came of one file.
enum Outcome {
    Published(PublishResponse),
    Failed { why: String, kind: Failure },
}

/// Why a file was not published, for the exit code: the worst of all files decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    /// The file could not be read here (exit 1).
    Local,
    /// The node refused it (exit 6).
    Refused,
    /// The node could not be reached or failed (exit 4).
    Network,
}

/// `docfed publish`.
pub async fn run(ctx: &Ctx, a: PublishArgs) -> Result<(), CliError> {
    let token = a.token.filter(|t| !t.is_empty());
    // As for `register`: the operator's token goes only to a node the user named.
    if token.is_some() && ctx.server.is_none() {
        return Err(CliError::Usage(
            "publish --token sends the node's operator token: name the primary with --server \
             URL (or DOCFED_SERVER); the token is never sent to a server found over mDNS or \
             among the fallbacks"
                .into(),
        ));
    }
    let found = walk::files(&a.paths);
    if found.is_empty() {
        return Err(CliError::Usage(
            "nothing to publish: the folders given hold no files".into(),
        ));
    }
    let client = ctx.online().await?;
    let total: u64 = found.iter().filter_map(|f| f.size.as_ref().ok()).sum();
    let bar = ctx.progress(a.quiet).then(|| progress_bar(total));
    let mut report = Report::new(ctx.json, bar.clone());
    let mut query = Vec::new();
    if let Some(s) = a.scope {
        query.push(("scope", s));
    }
    if let Some(t) = a.tags {
        query.push(("tags", t));
    }

    let mut stopped: Option<(String, Failure)> = None;
    for group in requests(&found) {
        let sendable: Vec<&Found> = group.iter().filter(|f| f.size.is_ok()).collect();
        let mut answers: Vec<Option<Outcome>> = Vec::new();
        if let Some((why, kind)) = &stopped {
            answers.resize_with(sendable.len(), || {
                Some(Outcome::Failed {
                    why: format!("not sent: {why}"),
                    kind: *kind,
                })
            });
        } else if !sendable.is_empty() {
            match send(&client, token.as_deref(), &query, &sendable, bar.as_ref()).await {
                Ok(a) => answers = a,
                // Refused whole, or unreachable, before anything was published: the error is
                // the answer.
                Err(Sent::Refused(e)) if report.published == 0 && report.failed == 0 => {
                    if let Some(b) = &bar {
                        b.finish_and_clear();
                    }
                    return Err(e);
                }
                Err(Sent::Refused(e)) => {
                    let kind = kind_of(&e);
                    let why = e.to_string();
                    answers.resize_with(sendable.len(), || {
                        Some(Outcome::Failed {
                            why: why.clone(),
                            kind,
                        })
                    });
                    stopped = Some((why, kind));
                }
                Err(Sent::Broken { why, unsent, stop }) => {
                    answers.resize_with(sendable.len(), || {
                        Some(Outcome::Failed {
                            why: why.clone(),
                            kind: Failure::Network,
                        })
                    });
                    if let Some((path, e)) = unsent {
                        for (slot, f) in answers.iter_mut().zip(&sendable) {
                            if f.path == path {
                                *slot = Some(Outcome::Failed {
                                    why: e.clone(),
                                    kind: Failure::Local,
                                });
                            }
                        }
                    }
                    if stop {
                        stopped = Some((why, Failure::Network));
                    }
                }
            }
        }
        let mut answers = answers.into_iter();
        for f in group {
            let outcome = match &f.size {
                Err(why) => Outcome::Failed {
                    why: why.clone(),
                    kind: Failure::Local,
                },
                Ok(_) => answers.next().flatten().unwrap_or_else(|| Outcome::Failed {
                    why: "the node's answer does not mention this file".into(),
                    kind: Failure::Network,
                }),
            };
            report.add(&f.path, outcome);
        }
        report.print_lines()?;
    }
    report.finish()
}

/// The files in groups of one request each (files that cannot be published go with the group
/// they come in, to be reported in order).
fn requests(found: &[Found]) -> Vec<&[Found]> {
    let mut groups = Vec::new();
    let (mut start, mut files, mut bytes) = (0, 0usize, 0u64);
    for (i, f) in found.iter().enumerate() {
        let size = *f.size.as_ref().unwrap_or(&0);
        if files > 0 && (files == REQUEST_FILES || bytes + size > REQUEST_BYTES) {
            groups.push(&found[start..i]);
            (start, files, bytes) = (i, 0, 0);
        }
        if f.size.is_ok() {
            files += 1;
            bytes += size;
        }
    }
    groups.push(&found[start..]);
    groups
}

/// A request that brought no per-file answer.
enum Sent {
    /// The node refused the request as a whole (no token, not a primary...), or could not be
    /// reached: none of its files was published.
    Refused(CliError),
    /// The request broke off: which of its files the node published is not known. `unsent`: a
    /// file that could not be read while it was sent (the cause); `stop`: no later request can
    /// succeed either (the node is unreachable).
    Broken {
        why: String,
        unsent: Option<(PathBuf, String)>,
        stop: bool,
    },
}

/// Sends `files` in one request; the answer for each, in order.
async fn send(
    client: &Client,
    token: Option<&str>,
    query: &[(&str, String)],
    files: &[&Found],
    bar: Option<&ProgressBar>,
) -> Result<Vec<Option<Outcome>>, Sent> {
    let unreadable: Arc<Mutex<Option<(PathBuf, String)>>> = Arc::default();
    let mut form = Form::new();
    for f in files {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The name travels in the `meta` part, as JSON, whatever its characters; the part's
        // own `filename=` is only a plain fallback.
        let meta = serde_json::json!({ "title": name, "filename": name }).to_string();
        form = form
            .part(
                "meta",
                Part::text(meta)
                    .mime_str("application/json")
                    .expect("a valid media type"),
            )
            .part(
                "file",
                Part::stream(file_body(f.path.clone(), bar.cloned(), unreadable.clone()))
                    .file_name(plain_name(&name)),
            );
    }
    let mut req = client
        .http
        .post(client.url("/v1/documents/batch"))
        .query(query)
        .multipart(form);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => {
            let unsent = unreadable.lock().expect("not poisoned").take();
            let why = match &unsent {
                Some((path, _)) => format!(
                    "the request broke off when {} could not be read; whether the node \
                     published the files sent before it is not known (see `docfed search`)",
                    path.display()
                ),
                None if e.is_connect() => return Err(Sent::Refused(client.network(e))),
                None => format!(
                    "{}; whether the node published it is not known (see `docfed search`)",
                    client.network(e)
                ),
            };
            let stop = unsent.is_none();
            return Err(Sent::Broken { why, unsent, stop });
        }
    };
    let resp = client.check(resp).await.map_err(|e| match e {
        CliError::Unauthorized(m) => Sent::Refused(CliError::Unauthorized(format!(
            "{m}; pass the node's operator token with --token (or DOCFED_TOKEN)"
        ))),
        e => Sent::Refused(e),
    })?;
    let answer: BatchResponse = resp.json().await.map_err(|e| Sent::Broken {
        why: format!(
            "{}; whether the node published these files is not known (see `docfed search`)",
            client.interrupted(&e)
        ),
        unsent: None,
        stop: true,
    })?;
    let mut outcomes: Vec<Option<Outcome>> = Vec::new();
    outcomes.resize_with(files.len(), || None);
    for item in answer.items {
        let Some(slot) = outcomes.get_mut(item.index) else {
            continue;
        };
        *slot = Some(match item.outcome {
            ItemOutcome::Published(p) => Outcome::Published(p),
            ItemOutcome::Refused { error } => Outcome::Failed {
                why: error.message,
                kind: if error.code.is_transient() || error.code == ErrorCode::Internal {
                    Failure::Network
                } else {
                    Failure::Refused
                },
            },
        });
    }
    Ok(outcomes)
}

/// A file's bytes as a request body, read from disk as the request is sent (the file is opened
/// only then, so a request of a thousand files holds one open at a time). A read error is
/// kept in `unreadable` and breaks the request off.
fn file_body(
    path: PathBuf,
    bar: Option<ProgressBar>,
    unreadable: Arc<Mutex<Option<(PathBuf, String)>>>,
) -> reqwest::Body {
    enum State {
        Closed(PathBuf),
        Open(tokio::fs::File),
        Done,
    }
    let fail = move |path: PathBuf, e: std::io::Error| {
        *unreadable.lock().expect("not poisoned") = Some((path, format!("cannot read: {e}")));
        e
    };
    let stream = futures::stream::unfold(State::Closed(path.clone()), move |state| {
        let bar = bar.clone();
        let fail = fail.clone();
        let path = path.clone();
        async move {
            let mut file = match state {
                State::Done => return None,
                State::Open(file) => file,
                State::Closed(p) => match tokio::fs::File::open(&p).await {
                    Ok(file) => file,
                    Err(e) => return Some((Err(fail(p, e)), State::Done)),
                },
            };
            let mut buf = vec![0u8; READ_SIZE];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    if let Some(b) = &bar {
                        b.inc(n as u64);
                    }
                    Some((Ok(buf), State::Open(file)))
                }
                Err(e) => Some((Err(fail(path, e)), State::Done)),
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// `name` with only characters that need no quoting in a part's header.
fn plain_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn kind_of(e: &CliError) -> Failure {
    match e {
        CliError::Network(_) => Failure::Network,
        CliError::Local(_) => Failure::Local,
        _ => Failure::Refused,
    }
}

/// The bytes sent so far on stderr.
fn progress_bar(total: u64) -> ProgressBar {
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(
            "publishing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b
}

/// The lines (or JSON objects) of every file, the counts, and the exit code they make.
struct Report {
    json: bool,
    bar: Option<ProgressBar>,
    entries: Vec<serde_json::Value>,
    /// Lines not printed yet: a request's, printed together (one redraw of the bar).
    lines: Vec<String>,
    published: usize,
    failed: usize,
    bytes: u64,
    worst: Option<Failure>,
}

impl Report {
    fn new(json: bool, bar: Option<ProgressBar>) -> Self {
        Report {
            json,
            bar,
            entries: Vec::new(),
            lines: Vec::new(),
            published: 0,
            failed: 0,
            bytes: 0,
            worst: None,
        }
    }

    fn add(&mut self, path: &Path, outcome: Outcome) {
        let shown = path.display();
        let (entry, line) = match outcome {
            Outcome::Published(p) => {
                self.published += 1;
                self.bytes += p.size;
                let line = format!(
                    "published {shown}  {}  v{}  {}",
                    p.id,
                    p.version,
                    ByteSize(p.size)
                );
                let entry = serde_json::json!({
                    "path": shown.to_string(), "id": p.id, "version": p.version, "md5": p.md5, "size": p.size,
                });
                (entry, line)
            }
            Outcome::Failed { why, kind } => {
                self.failed += 1;
                self.worst = self.worst.max(Some(kind));
                let line = format!("refused {shown}: {why}");
                (
                    serde_json::json!({ "path": shown.to_string(), "error": why }),
                    line,
                )
            }
        };
        if self.json {
            self.entries.push(entry);
        } else {
            self.lines.push(line);
        }
    }

    fn print_lines(&mut self) -> Result<(), CliError> {
        let lines = std::mem::take(&mut self.lines);
        self.print(&lines)
    }

    fn print(&self, lines: &[String]) -> Result<(), CliError> {
        use std::io::Write;
        let write = || {
            let mut out = std::io::stdout().lock();
            lines
                .iter()
                .try_for_each(|l| writeln!(out, "{l}"))
                .and_then(|()| out.flush())
                .map_err(CliError::stdout)
        };
        match &self.bar {
            Some(b) => b.suspend(write),
            None => write(),
        }
    }

    fn finish(self) -> Result<(), CliError> {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.json {
            crate::output::value(&serde_json::Value::Array(self.entries.clone()), true, "")?;
        } else {
            let mut summary = format!(
                "published {} of {} documents ({})",
                self.published,
                self.published + self.failed,
                ByteSize(self.bytes)
            );
            if self.failed > 0 {
                summary.push_str(&format!("; {} not published", self.failed));
            }
            self.print(&[summary])?;
        }
        let why = format!(
            "{} of {} documents were not published",
            self.failed,
            self.published + self.failed
        );
        match self.worst {
            None => Ok(()),
            Some(Failure::Network) => Err(CliError::Network(why)),
            Some(Failure::Refused) => Err(CliError::Refused(why)),
            Some(Failure::Local) => Err(CliError::Local(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(sizes: &[Option<u64>]) -> Vec<Found> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, s)| Found {
                path: PathBuf::from(format!("f{i}")),
                size: s.ok_or_else(|| "unreadable".to_owned()),
            })
            .collect()
    }

    #[test]
    fn requests_hold_at_most_their_files_and_bytes_and_a_large_file_goes_alone() {
        let mib = 1024 * 1024;
        let f = found(&[
            Some(10 * mib),
            Some(60 * mib),
            None,
            Some(100 * mib),
            Some(1),
        ]);
        let sizes: Vec<usize> = requests(&f).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, [1, 2, 1, 1]);
        let many = found(&vec![Some(1); 2500]);
        let sizes: Vec<usize> = requests(&many).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[test]
    fn part_names_are_plain() {
        assert_eq!(plain_name("a \"b\"\\%é.txt"), "a__b____.txt");
    }
}
