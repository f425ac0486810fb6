//! The failover pair: which primary to talk to, and the HTTP calls the portal makes.
//!
//! Each primary has a health state, kept by a prober (`GET /v1/health` every
//! `--health-interval`) and by every request: a transport failure marks a primary down at once,
//! a good answer marks it up and makes it the preferred one, so the portal sticks to the last
//! primary that worked instead of flapping between the two. Requests try the preferred healthy
//! primary, then the others, then (health knowledge may be stale) those believed down.
//!
//! Reads and metadata-only writes (delete, reactivate, accept/reject) are retried on the next
//! primary when one cannot be reached; repeating them is harmless (a second tombstone of the same
//! document is refused with 409). Uploads are not: the browser's stream is consumed as it is
//! forwarded, so [`Primaries::upload`] targets exactly one primary and the caller reports the
//! outcome (see `upload/`).
//!
//! The bodies the primaries answer are `docfed_shared::wire`'s, the node's own types.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use docfed_shared::topology::Tier;
use docfed_shared::wire::annotations::{AnnotationEntry, AnnotationList};
use docfed_shared::wire::peers::{PeerState, PeersView};
use docfed_shared::wire::sources::SourcesView;
use docfed_shared::wire::{ErrorBody, ErrorCode, Health, PublishResponse};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PrimarySpec};

/// What the portal knows about one primary's health.
#[derive(Debug, Clone)]
pub struct Status {
    /// `None` until the first probe or request.
    pub up: Option<bool>,
    /// When `up` last changed.
    pub since: SystemTime,
    /// Why it is down.
    pub error: Option<String>,
}

pub struct Primary {
    pub name: String,
    pub url: String,
    status: Mutex<Status>,
    clients: Mutex<Clients>,
    /// Builds this primary's clients (again after the CRL changed).
    make: Box<dyn Fn() -> anyhow::Result<Clients> + Send + Sync>,
    trust: Option<Arc<docfed_http::tls::Trust>>,
}

impl std::fmt::Debug for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primary")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A primary's HTTP clients. Over HTTPS, with a topology, they accept only this primary's node
/// certificate, unrevoked.
struct Clients {
    /// The CRL generation they were built under: a connection kept alive is not checked again,
    /// so after a reload new clients (new connections) replace them.
    generation: u64,
    /// For metadata requests: bounded by `--request-timeout`.
    http: reqwest::Client,
    /// For uploads and downloads: no overall deadline (a large file takes as long as it takes);
    /// a connect deadline so a dead primary fails fast.
    upload_http: reqwest::Client,
}

impl Primary {
    /// The clients in force: rebuilt when the CRL changed since they were.
    fn clients(&self) -> (reqwest::Client, reqwest::Client) {
        let mut c = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(generation) = self.trust.as_ref().map(|t| t.generation()) {
            if generation != c.generation {
                match (self.make)() {
                    Ok(fresh) => *c = fresh,
                    // Not expected (they were built once); the old ones still check the CRL
                    // at every new connection.
                    Err(e) => {
                        tracing::error!(primary = %self.name, error = %e, "cannot rebuild HTTP clients")
                    }
                }
            }
        }
        (c.http.clone(), c.upload_http.clone())
    }

    fn http(&self) -> reqwest::Client {
        self.clients().0
    }

    fn upload_http(&self) -> reqwest::Client {
        self.clients().1
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, up: bool, error: Option<String>) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if s.up != Some(up) {
            if up {
                tracing::info!(primary = %self.name, "primary is reachable");
            } else {
                tracing::warn!(primary = %self.name, error = error.as_deref().unwrap_or(""), "primary is down");
            }
            s.since = SystemTime::now();
        }
        s.up = Some(up);
        s.error = error;
    }
}

/// A request to the primaries that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No primary could be reached (each one's name and why).
    #[error("no primary is reachable ({})", describe(.0))]
    Unavailable(Vec<(String, String)>),
    /// A primary answered with an error.
    #[error("primary {primary} refused: {error} (HTTP {status})")]
    Refused {
        primary: String,
        status: StatusCode,
        error: String,
        /// The node's code, or the one its status implies when the body is not a node's.
        code: ErrorCode,
    },
    /// A primary answered something the portal cannot read.
    #[error("primary {primary} gave an unreadable answer: {error}")]
    BadAnswer { primary: String, error: String },
}

fn describe(tried: &[(String, String)]) -> String {
    tried
        .iter()
        .map(|(n, e)| format!("{n}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl NodeError {
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            NodeError::Refused {
                code: ErrorCode::NotFound,
                ..
            }
        )
    }
}

/// What every primary said about the federation a moment ago: per primary (in configuration
/// order) its `/v1/peers` answer or why there is none.
#[derive(Debug, Clone)]
pub struct Presence {
    pub answers: Vec<Result<PeersView, String>>,
    /// Unix milliseconds when it was asked.
    pub at_ms: i64,
}

impl Presence {
    /// Whether the primaries that answered agree a node is down: every one that probes it
    /// counts it as down (and at least one does). A primary the portal cannot reach is down
    /// when the portal's own probes say so.
    pub fn is_down(&self, primaries: &Primaries, id: &str) -> bool {
        if let Some(p) = primaries.list.iter().find(|p| p.name == id) {
            return p.status().up == Some(false);
        }
        let views: Vec<&PeerState> = self
            .answers
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .filter_map(|a| a.peers.iter().find(|p| p.id == id))
            .filter(|p| p.healthy.is_some())
            .collect();
        !views.is_empty() && views.iter().all(|p| p.is_down())
    }
}

/// What every primary said about the sources: per primary (in configuration order) its
/// `/v1/sources` answer or why there is none.
#[derive(Debug, Clone)]
pub struct Sources {
    pub answers: Vec<Result<SourcesView, String>>,
    /// Unix milliseconds when it was asked.
    pub at_ms: i64,
}

/// A value fetched from the primaries and reused for a few seconds by every page.
struct Cached<T> {
    value: tokio::sync::Mutex<Option<(std::time::Instant, Arc<T>)>>,
}

impl<T> Cached<T> {
    fn new() -> Self {
        Cached {
            value: tokio::sync::Mutex::new(None),
        }
    }
}

/// How long a presence snapshot or the pending-annotation list is reused.
const CACHE_FOR: Duration = Duration::from_secs(3);

pub struct Primaries {
    list: Vec<Primary>,
    preferred: AtomicUsize,
    /// The federation CA and CRL the primaries' certificates are checked against, for HTTPS.
    trust: Option<Arc<docfed_http::tls::Trust>>,
    token: String,
    health_interval: Duration,
    presence: Cached<Presence>,
    /// Document id of every pending annotation (one entry per annotation).
    pending: Cached<Vec<String>>,
}

impl Primaries {
    /// A configuration with two primaries at loopback ports nothing listens on, and its
    /// `Primaries`, for unit tests of what pages make of their answers.
    #[cfg(test)]
    pub fn two_unreachable() -> (Config, Primaries) {
        use clap::Parser;
        let args = crate::config::Args::try_parse_from([
            "docfed-portal",
            "--primary",
            "http://127.0.0.1:9",
            "--primary",
            "http://127.0.0.1:10",
            "--token",
            "t",
        ])
        .expect("valid arguments");
        let config = Config::from_args("d".into(), args.serve).expect("valid configuration");
        let primaries = Primaries::new(&config).expect("a client builds");
        (config, primaries)
    }

    pub fn new(config: &Config) -> anyhow::Result<Primaries> {
        // HTTPS primaries are trusted through the federation CA only, minus its CRL, and each
        // must present its own node's certificate (any node's when only a URL names it).
        let trust = match &config.ca {
            Some(ca) => Some(docfed_http::tls::Trust::load(ca, config.crl.as_deref())?),
            None => None,
        };
        let maker = |name: &str| {
            let trust = trust.clone();
            let expect = if config.nodes.iter().any(|n| n.id == name) {
                docfed_http::tls::Expect::Node(name.to_owned())
            } else {
                docfed_http::tls::Expect::AnyNode
            };
            let timeout = config.request_timeout;
            move || -> anyhow::Result<Clients> {
                let base = || -> anyhow::Result<reqwest::ClientBuilder> {
                    let builder = match &trust {
                        Some(t) => t.reqwest_for(None, expect.clone())?,
                        None => docfed_http::tls::client_builder(),
                    };
                    Ok(builder
                        // The primaries are addressed directly; a proxy from the environment
                        // would only add a hop that can fail.
                        .no_proxy()
                        .connect_timeout(Duration::from_secs(5))
                        .user_agent(concat!("docfed-portal/", env!("CARGO_PKG_VERSION"))))
                };
                Ok(Clients {
                    // Read before building: a reload meanwhile makes the next call rebuild.
                    generation: trust.as_ref().map_or(0, |t| t.generation()),
                    http: base()?.timeout(timeout).build()?,
                    upload_http: base()?.build()?,
                })
            }
        };
        Ok(Primaries {
            list: config
                .primaries
                .iter()
                .map(|PrimarySpec { name, url }| {
                    let make = maker(name);
                    Ok(Primary {
                        name: name.clone(),
                        url: url.clone(),
                        status: Mutex::new(Status {
                            up: None,
                            since: SystemTime::now(),
                            error: None,
                        }),
                        clients: Mutex::new(make()?),
                        make: Box::new(make),
                        trust: trust.clone(),
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            preferred: AtomicUsize::new(0),
            trust,
            token: config.token.clone(),
            health_interval: config.health_interval,
            presence: Cached::new(),
            pending: Cached::new(),
        })
    }

    pub fn all(&self) -> &[Primary] {
        &self.list
    }

    pub fn get(&self, i: usize) -> &Primary {
        &self.list[i]
    }

    /// Indexes in the order requests should try them: the preferred primary if it is not known
    /// to be down, the other not-down ones, then the down ones as a last resort.
    pub fn order(&self) -> Vec<usize> {
        let pref = self
            .preferred
            .load(Ordering::Relaxed)
            .min(self.list.len() - 1);
        let mut idx: Vec<usize> = (0..self.list.len()).collect();
        idx.sort_by_key(|&i| (self.list[i].status().up == Some(false), i != pref));
        idx
    }

    fn mark_up(&self, i: usize) {
        self.list[i].set(true, None);
        self.preferred.store(i, Ordering::Relaxed);
    }

    /// Records that primary `i` failed; requests go elsewhere until it answers again.
    pub fn mark_down(&self, i: usize, error: String) {
        self.list[i].set(false, Some(error));
        if self.preferred.load(Ordering::Relaxed) == i {
            if let Some(other) =
                (0..self.list.len()).find(|&j| j != i && self.list[j].status().up != Some(false))
            {
                self.preferred.store(other, Ordering::Relaxed);
            }
        }
    }

    /// Text of the banner every page shows while a primary is down, if one is.
    pub fn banner(&self) -> Option<String> {
        let down: Vec<(&Primary, Status)> = self
            .list
            .iter()
            .map(|p| (p, p.status()))
            .filter(|(_, s)| s.up == Some(false))
            .collect();
        if down.is_empty() {
            return None;
        }
        // Relative, like every time the portal shows ("went down 3 min ago").
        let now = docfed_shared::wire::Timestamp::now().millis();
        let what = |(p, s): &(&Primary, Status)| {
            let since = s
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(now, |d| d.as_millis() as i64);
            format!(
                "{} ({}) is not reachable: it went down {} ({})",
                p.name,
                p.url,
                crate::views::relative(since, now),
                s.error.as_deref().unwrap_or("no answer")
            )
        };
        if down.len() == self.list.len() {
            return Some(format!(
                "No primary is reachable: {}. Publishing and changes are unavailable until one \
                 comes back; lists show what the portal last saw.",
                down.iter().map(what).collect::<Vec<_>>().join("; ")
            ));
        }
        let using: Vec<&str> = self
            .list
            .iter()
            .filter(|p| p.status().up != Some(false))
            .map(|p| p.name.as_str())
            .collect();
        Some(format!(
            "Primary {}. The portal uses {} meanwhile.",
            down.iter().map(what).collect::<Vec<_>>().join("; "),
            using.join(", ")
        ))
    }

    /// Probes every primary until cancelled, and follows the CRL meanwhile.
    pub async fn run_prober(self: Arc<Self>, cancel: CancellationToken) {
        if let Some(trust) = self.trust.clone().filter(|t| t.has_crl()) {
            // A failed reload keeps the last good list; watch_crl logs it.
            tokio::spawn(trust.watch_crl(cancel.clone(), |_| {}));
        }
        loop {
            self.probe_all().await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.health_interval) => {}
            }
        }
    }

    pub async fn probe_all(&self) {
        let probes = (0..self.list.len()).map(|i| self.probe(i));
        futures::future::join_all(probes).await;
    }

    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|p| p.name.clone()).collect()
    }

    /// Probes primary `i` and records the outcome; true when it is up.
    async fn probe(&self, i: usize) -> bool {
        let p = &self.list[i];
        let r = p
            .http()
            .get(format!("{}/v1/health", p.url))
            .timeout(
                Duration::from_secs(2).min(self.health_interval.max(Duration::from_millis(500))),
            )
            .send()
            .await;
        let outcome = match r {
            Err(e) => Err(transport_error(&e)),
            Ok(r) if !r.status().is_success() => Err(format!("health answers HTTP {}", r.status())),
            Ok(r) => match r.json::<Health>().await {
                Ok(h) if h.tier == Tier::Primary.as_str() => Ok(()),
                Ok(h) => Err(format!("{} is a {} node, not a primary", h.node, h.tier)),
                Err(e) => Err(format!("unreadable health answer: {e}")),
            },
        };
        match outcome {
            // Only a change of state moves the preference: the prober must not steal it back
            // from the primary requests settled on.
            Ok(()) => {
                if p.status().up != Some(true) {
                    p.set(true, None);
                }
                true
            }
            Err(e) => {
                self.mark_down(i, e);
                false
            }
        }
    }

    /// Sends a request built by `make` to one primary after another until one answers (see the
    /// module docs). With `next_on_404`, a 404 also moves on: a document published through one
    /// primary reaches the other a moment later.
    async fn call<F>(
        &self,
        make: F,
        next_on_404: bool,
    ) -> Result<(reqwest::Response, usize), NodeError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        self.call_with(Primary::http, make, next_on_404).await
    }

    /// [`call`](Self::call) with each primary's client that `client` picks.
    async fn call_with<F>(
        &self,
        client: fn(&Primary) -> reqwest::Client,
        make: F,
        next_on_404: bool,
    ) -> Result<(reqwest::Response, usize), NodeError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let mut tried = Vec::new();
        let mut not_found = None;
        for i in self.order() {
            let p = &self.list[i];
            match make(&client(p), &p.url)
                .bearer_auth(&self.token)
                .send()
                .await
            {
                Err(e) => {
                    let msg = transport_error(&e);
                    self.mark_down(i, msg.clone());
                    tried.push((p.name.clone(), msg));
                }
                Ok(r) if matches!(r.status().as_u16(), 502..=504) => {
                    // Up, but cannot serve (its database is unavailable, it is shutting down).
                    tried.push((p.name.clone(), format!("HTTP {}", r.status())));
                }
                Ok(r) if next_on_404 && r.status() == StatusCode::NOT_FOUND => {
                    self.list[i].set(true, None);
                    not_found = Some((r, i));
                }
                Ok(r) => {
                    self.mark_up(i);
                    return Ok((r, i));
                }
            }
        }
        match not_found {
            Some(r) => Ok(r),
            None => Err(NodeError::Unavailable(tried)),
        }
    }

    /// Turns an answer into `T`, or its error body into [`NodeError::Refused`].
    async fn decode<T: DeserializeOwned>(
        &self,
        r: reqwest::Response,
        i: usize,
    ) -> Result<T, NodeError> {
        let name = self.list[i].name.clone();
        if r.status().is_success() {
            return r.json::<T>().await.map_err(|e| NodeError::BadAnswer {
                primary: name,
                error: e.to_string(),
            });
        }
        Err(refused(name, r).await)
    }

    /// `GET path` on a healthy primary; returns the answer and the primary's index.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(T, usize), NodeError> {
        let (r, i) = self
            .call(|c, base| c.get(format!("{base}{path}")).query(query), true)
            .await?;
        Ok((self.decode(r, i).await?, i))
    }

    /// `GET path` on primary `i` only (to read back what was just written there).
    pub async fn get_json_from<T: DeserializeOwned>(
        &self,
        i: usize,
        path: &str,
    ) -> Result<T, NodeError> {
        let p = &self.list[i];
        let r = p
            .http()
            .get(format!("{}{path}", p.url))
            .send()
            .await
            .map_err(|e| NodeError::Unavailable(vec![(p.name.clone(), transport_error(&e))]))?;
        self.decode(r, i).await
    }

    /// A metadata-only write (`DELETE /v1/documents/{id}`, `POST …/reactivate`), retried on the
    /// other primary when one is unreachable.
    pub async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<(PublishResponse, usize), NodeError> {
        let (r, i) = self
            .call(
                |c, base| c.request(method.clone(), format!("{base}{path}")),
                true,
            )
            .await?;
        Ok((self.decode(r, i).await?, i))
    }

    /// Pending (or other `state`) annotations, optionally of one document.
    pub async fn annotations(
        &self,
        state: &str,
        doc_id: Option<&str>,
    ) -> Result<Vec<AnnotationEntry>, NodeError> {
        let mut q = vec![("state", state)];
        if let Some(d) = doc_id {
            q.push(("doc_id", d));
        }
        let (list, _) = self
            .get_json::<AnnotationList>("/v1/annotations", &q)
            .await?;
        Ok(list.annotations)
    }

    /// Accepts or rejects an annotation. Each primary keeps its own vetting state, so the
    /// decision goes to every primary that can be reached; it counts as done if one took it.
    pub async fn decide_annotation(&self, aid: &str, decision: &str) -> Result<(), NodeError> {
        let path = format!("/v1/annotations/{aid}/{decision}");
        let mut tried = Vec::new();
        let mut done = false;
        let mut refusal = None;
        for i in self.order() {
            let p = &self.list[i];
            match p
                .http()
                .post(format!("{}{path}", p.url))
                .bearer_auth(&self.token)
                .send()
                .await
            {
                Err(e) => {
                    let msg = transport_error(&e);
                    self.mark_down(i, msg.clone());
                    tried.push((p.name.clone(), msg));
                }
                Ok(r) if r.status().is_success() => {
                    self.list[i].set(true, None);
                    done = true;
                }
                Ok(r) => {
                    self.list[i].set(true, None);
                    refusal.get_or_insert(refused(p.name.clone(), r).await);
                }
            }
        }
        match (done, refusal) {
            (true, _) => Ok(()),
            (false, Some(e)) => Err(e),
            (false, None) => Err(NodeError::Unavailable(tried)),
        }
    }

    /// Every primary's `/v1/peers` (with the token, for its queue depths), asked at once and
    /// cached for a few seconds. Each request is bounded by a short deadline, so a page that
    /// shows presence waits at most that long for a primary that does not answer.
    pub async fn presence(&self) -> Arc<Presence> {
        let mut slot = self.presence.value.lock().await;
        if let Some((at, v)) = slot.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return v.clone();
            }
        }
        let answers = self.ask_each::<PeersView>("/v1/peers").await;
        let v = Arc::new(Presence {
            answers,
            at_ms: docfed_shared::wire::Timestamp::now().millis(),
        });
        *slot = Some((std::time::Instant::now(), v.clone()));
        v
    }

    /// Every primary's `/v1/sources` (with the token: a source's errors name its paths and
    /// URLs), asked at once and not cached: each primary only knows its own runs, and the page
    /// that shows them is reloaded to see progress. Bounded like [`presence`](Self::presence).
    pub async fn sources(&self) -> Sources {
        Sources {
            answers: self.ask_each::<SourcesView>("/v1/sources").await,
            at_ms: docfed_shared::wire::Timestamp::now().millis(),
        }
    }

    /// `GET path` with the token on every primary at once, each within a short deadline; per
    /// primary (in configuration order) its answer or why there is none. The health state is
    /// left to the prober: a page asking every primary must not move the preference.
    async fn ask_each<T: DeserializeOwned>(&self, path: &str) -> Vec<Result<T, String>> {
        let asks = self.list.iter().map(|p| async move {
            let r = p
                .http()
                .get(format!("{}{path}", p.url))
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .map_err(|e| transport_error(&e))?;
            if !r.status().is_success() {
                return Err(format!("{path} answers HTTP {}", r.status()));
            }
            r.json::<T>()
                .await
                .map_err(|e| format!("unreadable {path} answer: {e}"))
        });
        futures::future::join_all(asks).await
    }

    /// Document ids of the pending annotations, cached for a few seconds, for the count in the
    /// navigation. `None` when the list is not at hand: no primary is up (nothing is asked
    /// then), or the primary did not answer within `wait`; a refresh keeps running in the
    /// background for the next page.
    pub async fn pending_annotations(self: &Arc<Self>, wait: Duration) -> Option<Arc<Vec<String>>> {
        if let Ok(slot) = self.pending.value.try_lock() {
            if let Some((at, v)) = slot.as_ref() {
                if at.elapsed() < CACHE_FOR {
                    return Some(v.clone());
                }
            }
        }
        if self.list.iter().all(|p| p.status().up == Some(false)) {
            return self.pending_cached();
        }
        let me = self.clone();
        let refresh = tokio::spawn(async move {
            let mut slot = me.pending.value.lock().await;
            if let Some((at, v)) = slot.as_ref() {
                if at.elapsed() < CACHE_FOR {
                    return Some(v.clone());
                }
            }
            let list = me
                .annotations("pending", None)
                .await
                .ok()?
                .into_iter()
                .map(|a| a.annotation.doc_id)
                .collect::<Vec<_>>();
            let v = Arc::new(list);
            *slot = Some((std::time::Instant::now(), v.clone()));
            Some(v)
        });
        match tokio::time::timeout(wait, refresh).await {
            Ok(Ok(v)) => v,
            _ => self.pending_cached(),
        }
    }

    /// The last pending list, however old, if no refresh holds the lock.
    fn pending_cached(&self) -> Option<Arc<Vec<String>>> {
        let slot = self.pending.value.try_lock().ok()?;
        slot.as_ref().map(|(_, v)| v.clone())
    }

    /// Forgets the pending list (after a decision), so the next page counts again.
    pub async fn forget_pending(&self) {
        *self.pending.value.lock().await = None;
    }

    /// Starts `GET path?query` for content on a primary, with the token and the given request
    /// headers (`Range`, …), without an overall deadline (a large file takes as long as it
    /// takes). Moves to the next primary when one cannot be reached or does not hold the
    /// document yet. The caller streams the body.
    pub async fn download(
        &self,
        path: &str,
        query: &[(&str, String)],
        headers: reqwest::header::HeaderMap,
    ) -> Result<(reqwest::Response, usize), NodeError> {
        self.call_with(
            Primary::upload_http,
            |c, base| {
                c.get(format!("{base}{path}"))
                    .query(query)
                    .headers(headers.clone())
            },
            true,
        )
        .await
    }

    /// Index of the primary requests go to next (for status displays).
    pub fn pick(&self) -> usize {
        self.order()[0]
    }

    /// The primary an upload should go to: the first, in [`order`](Self::order), that answers
    /// a health probe right now. An upload cannot move to another primary once its bytes
    /// started flowing, so a primary that died since the last probe is found out here, before
    /// the first byte, rather than after. `None` when none answers.
    pub async fn pick_for_upload(&self) -> Option<usize> {
        for i in self.order() {
            if self.probe(i).await {
                return Some(i);
            }
        }
        None
    }

    /// Starts a streaming upload to primary `i`: `method path?query` with `body`.
    pub async fn upload(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: reqwest::Body,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let p = &self.list[i];
        p.upload_http()
            .request(method, format!("{}{path}", p.url))
            .query(query)
            .bearer_auth(&self.token)
            .body(body)
            .send()
            .await
    }

    /// Records the outcome of an upload for the health state.
    pub fn upload_outcome(&self, i: usize, ok: Result<(), String>) {
        match ok {
            Ok(()) => self.mark_up(i),
            Err(e) => self.mark_down(i, e),
        }
    }
}

/// Reads a primary's error answer.
pub async fn refused(primary: String, r: reqwest::Response) -> NodeError {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let (error, code) = match serde_json::from_str::<ErrorBody>(&body) {
        Ok(b) => (b.error, b.code),
        Err(_) => (
            body.chars().take(200).collect::<String>().trim().to_owned(),
            ErrorCode::Unknown,
        ),
    };
    let code = code.or_from_status(status.as_u16());
    NodeError::Refused {
        primary,
        status,
        error: if error.is_empty() {
            status.to_string()
        } else {
            error
        },
        code,
    }
}

/// A short description of a transport failure (no URL: the banner names the primary).
pub fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection refused or unreachable"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_request() {
        "connection broken"
    } else {
        "request failed"
    };
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    format!("{kind}: {root}")
}
