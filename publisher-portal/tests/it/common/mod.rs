//! Test harness: a real federation of `docfed-node` processes (two primaries and two regional
//! nodes, ids unique to the test so tests share the broker at `DOCFED_AMQP_URL`), started with
//! the `topology` crate's launcher, and a real `docfed-portal` process in front of it, driven
//! over HTTP by a cookie-keeping client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use docfed_shared::ready::Ready;
use docfed_test_kit::process::await_ready;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::process::{Child, Command};
use topology::launch::{BrokerChoice, Federation, UpOptions};

pub use docfed_test_kit::wait::eventually;
pub use docfed_test_kit::{amqp_url, TestResult};

pub const PORTAL: &str = env!("CARGO_BIN_EXE_docfed-portal");
pub const PASSWORD: &str = "correct horse battery";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn unique() -> String {
    format!("{:08x}", docfed_test_kit::unique_u32())
}

/// `target/debug/docfed-node`. `cargo test --workspace` builds it; `cargo test -p
/// publisher-portal` does not, so `cargo build -p docfed-node` runs here once per test run
/// (a no-op when it is up to date).
pub fn node_binary() -> TestResult<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // Built (or found up to date) once per test run: a stale node binary would test
            // the portal against an old API.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(&cargo)
                .args(["build", "--quiet", "-p", "docfed-node"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .map_err(|e| format!("cannot run {cargo} build -p docfed-node: {e}"))?;
            if !status.success() {
                return Err(format!("`cargo build -p docfed-node` failed: {status}"));
            }
            topology::launch::find_program("docfed-node").ok_or_else(|| {
                "docfed-node not found next to the test binary even after `cargo build -p \
                 docfed-node`; run `cargo build --workspace`"
                    .to_owned()
            })
        })
        .clone()
        .map_err(Into::into)
}

/// A federation and its portal, for one test. Dropping it kills every process.
pub struct Env {
    pub fed: Federation,
    /// A client for the nodes' APIs: it trusts the federation CA when the links use TLS.
    pub nodes_http: reqwest::Client,
    pub prefix: String,
    pub topology: PathBuf,
    pub portal: Portal,
    pub tmp: tempfile::TempDir,
}

pub struct Portal {
    pub child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Portal {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGTERM, then wait for the exit status.
    pub async fn stop(&mut self) -> TestResult<std::process::ExitStatus> {
        let mut child = self.child.take().ok_or("portal not running")?;
        let pid = child.id().ok_or("portal already exited")?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        Ok(tokio::time::timeout(Duration::from_secs(20), child.wait()).await??)
    }

    /// The portal's log, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.fed.discard();
    }
}

impl Env {
    /// Two primaries (`pa`, `pb`) and regional nodes `na` and `eu`, plus a portal started with
    /// `portal_args`.
    pub async fn start(portal_args: &[&str]) -> TestResult<Env> {
        Env::start_with_sources(portal_args, |_| String::new()).await
    }

    /// [`start`](Env::start) with TLS on every link, as `docfed-topology up` runs by default:
    /// certificates in `run/certs`, the portal serving HTTPS with `portal.pem`.
    pub async fn start_tls(portal_args: &[&str]) -> TestResult<Env> {
        Env::start_inner(portal_args, |_| String::new(), true).await
    }

    /// [`start`](Env::start) with `[[source]]` tables (TOML) appended to the topology;
    /// `sources` gets the test's temporary directory, where watched folders belong (removed
    /// with it).
    pub async fn start_with_sources(
        portal_args: &[&str],
        sources: impl Fn(&Path) -> String,
    ) -> TestResult<Env> {
        Env::start_inner(portal_args, sources, false).await
    }

    async fn start_inner(
        portal_args: &[&str],
        sources: impl Fn(&Path) -> String,
        tls: bool,
    ) -> TestResult<Env> {
        let node_binary = node_binary()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tmp = tempfile::tempdir()?;
            let prefix = format!("pp{}", unique());
            let topology = tmp.path().join("topology.toml");
            let mut toml = topology_toml(&prefix);
            toml.push('\n');
            toml.push_str(&sources(tmp.path()));
            std::fs::write(&topology, toml)?;
            let mut opts = UpOptions::new(&topology, tmp.path().join("run"));
            // Plain HTTP unless asked: this harness's page client does not load the CA.
            opts.insecure = !tls;
            opts.broker = BrokerChoice::External(amqp_url());
            opts.node_binary = Some(node_binary.clone());
            opts.start_portal = false;
            opts.verbose = false;
            opts.health_timeout = Duration::from_secs(60);
            opts.stop_timeout = Duration::from_secs(10);
            let fed = match Federation::up(opts).await {
                Ok(f) => f,
                // Ports are picked free but bound later; another process may take one.
                Err(e) if attempt < 4 && format!("{e:#}").contains("not available") => continue,
                Err(e) if attempt < 4 && format!("{e:#}").contains("in use") => continue,
                Err(e) => return Err(format!("{e:#}").into()),
            };
            let data_dir = tmp.path().join("portal");
            let portal = if tls {
                let certs = topology::certs::CertDir(tmp.path().join("run").join("certs"));
                let (cert, key) = certs.portal();
                let mut args: Vec<&str> = portal_args.to_vec();
                args.extend([
                    "--tls-cert",
                    cert.to_str().unwrap(),
                    "--tls-key",
                    key.to_str().unwrap(),
                ]);
                start_portal(fed.topology_file(), fed.token(), &data_dir, &args).await?
            } else {
                start_portal(&topology, fed.token(), &data_dir, portal_args).await?
            };
            let nodes_http =
                docfed_http::tls::reqwest_trusting(fed.manifest().ca.as_deref())?.build()?;
            return Ok(Env {
                fed,
                nodes_http,
                prefix,
                topology,
                portal,
                tmp,
            });
        }
    }

    pub fn id(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Base URL of node `role` (`pa`, `pb`, `na`, `eu`).
    pub fn node_url(&self, role: &str) -> String {
        self.fed
            .node(&self.id(role))
            .map(|n| n.url())
            .unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.portal.url)
    }

    /// Creates an author with [`PASSWORD`].
    pub async fn add_author(&self, name: &str) -> TestResult {
        let out = add_author(&self.portal.data_dir, name, PASSWORD, &[]).await?;
        if !out.status.success() {
            return Err(format!(
                "add-author failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    }

    /// A new client logged in as `name` (created first).
    pub async fn author(&self, name: &str) -> TestResult<Client> {
        self.add_author(name).await?;
        let c = Client::new(&self.portal.url);
        let r = c.login(name, PASSWORD).await?;
        if r.status != StatusCode::SEE_OTHER {
            return Err(format!("login as {name}: {} {}", r.status, r.body).into());
        }
        Ok(c)
    }

    /// A node's current metadata of a document (`None`: 404).
    pub async fn node_doc(&self, role: &str, id: &str) -> TestResult<Option<Value>> {
        let r = self
            .nodes_http
            .get(format!("{}/v1/documents/{id}", self.node_url(role)))
            .send()
            .await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(r.error_for_status()?.json().await?))
    }

    /// Documents a node lists for a search, tombstones included.
    pub async fn node_search(&self, role: &str, q: &str) -> TestResult<Vec<Value>> {
        let v: Value = self
            .nodes_http
            .get(format!("{}/v1/documents", self.node_url(role)))
            .query(&[("q", q), ("deleted", "any"), ("limit", "100")])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(v["documents"].as_array().cloned().unwrap_or_default())
    }
}

pub async fn add_author(
    data_dir: &Path,
    name: &str,
    password: &str,
    extra: &[&str],
) -> TestResult<std::process::Output> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(PORTAL)
        .arg("add-author")
        .arg(name)
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(format!("{password}\n").as_bytes()).await?;
    drop(stdin);
    Ok(child.wait_with_output().await?)
}

fn topology_toml(prefix: &str) -> String {
    let node = |id: &str, tier: &str, extra: &str| {
        format!(
            "\n[[node]]\nid = \"{prefix}-{id}\"\ntier = \"{tier}\"\nhttp = \"127.0.0.1:{}\"\n{extra}",
            free_port()
        )
    };
    let parents = format!("parents = [\"{prefix}-pa\", \"{prefix}-pb\"]\n");
    let mut t = format!("redundancy = 1\namqp_url = {:?}\n", amqp_url());
    t += &node("pa", "primary", "");
    t += &node("pb", "primary", "");
    t += &node(
        "na",
        "regional",
        &format!("region = \"na\"\n{parents}backup = \"{prefix}-eu\"\n"),
    );
    t += &node(
        "eu",
        "regional",
        &format!("region = \"eu\"\n{parents}backup = \"{prefix}-na\"\n"),
    );
    t
}

/// Starts `docfed-portal --topology T --http 127.0.0.1:0 --data-dir D` the way the launcher
/// does (token in the environment) and waits for its `ready.json`.
pub async fn start_portal(
    topology: &Path,
    token: &str,
    data_dir: &Path,
    extra: &[&str],
) -> TestResult<Portal> {
    let mut args = vec!["--topology".into(), topology.as_os_str().to_owned()];
    args.extend(extra.iter().map(Into::into));
    spawn_portal(&args, token, data_dir).await
}

/// A portal with no federation behind it, for what happens before any primary is asked
/// (logging in, redirects, rate limits): its one primary is a closed loopback port, so no
/// `docfed-node` is built or started. Dropping it kills the portal.
pub struct LonePortal {
    pub portal: Portal,
    pub tmp: tempfile::TempDir,
}

impl LonePortal {
    pub async fn start(extra: &[&str]) -> TestResult<LonePortal> {
        let tmp = tempfile::tempdir()?;
        // Port 9 (discard): nothing listens there, so health probes fail at once.
        let mut args: Vec<std::ffi::OsString> =
            vec!["--primary".into(), "http://127.0.0.1:9".into()];
        args.extend(extra.iter().map(Into::into));
        let portal = spawn_portal(&args, "lone-portal-token", &tmp.path().join("portal")).await?;
        Ok(LonePortal { portal, tmp })
    }

    /// Creates an author with [`PASSWORD`].
    pub async fn add_author(&self, name: &str) -> TestResult {
        let out = add_author(&self.portal.data_dir, name, PASSWORD, &[]).await?;
        if !out.status.success() {
            return Err(format!(
                "add-author failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(())
    }
}

async fn spawn_portal(
    args: &[std::ffi::OsString],
    token: &str,
    data_dir: &Path,
) -> TestResult<Portal> {
    std::fs::create_dir_all(data_dir)?;
    Ready::remove(data_dir);
    let log = data_dir.join("portal.log");
    let out = std::fs::File::create(&log)?;
    let mut child = Command::new(PORTAL)
        .args(args)
        .arg("--http")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--health-interval")
        .arg("500ms")
        .env("DOCFED_TOKEN", token)
        .env("DOCFED_AMQP_URL", amqp_url())
        .env("DOCFED_LOG", "info,docfed_portal=debug")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("the portal exited at once")?;
    let ready = await_ready(data_dir, pid, &log, || child.try_wait()).await?;
    Ok(Portal {
        child: Some(child),
        url: ready.http,
        data_dir: data_dir.to_owned(),
        log,
    })
}

/// An HTTP answer, read whole (pages are small).
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The first CSRF token in the page.
    pub fn csrf(&self) -> String {
        csrf_in(&self.body)
    }

    /// The document id of a `/documents/ID?...` redirect.
    pub fn doc_id(&self) -> String {
        self.location()
            .trim_start_matches("/documents/")
            .split('?')
            .next()
            .unwrap_or("")
            .to_owned()
    }
}

pub fn csrf_in(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("")
        .to_owned()
}

/// A browser-like client: keeps cookies, does not follow redirects (tests look at them).
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            http: docfed_http::tls::client_builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .expect("HTTP client"),
            base: base.to_owned(),
        }
    }

    pub async fn read(r: reqwest::Response) -> TestResult<Page> {
        Ok(Page {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await?,
        })
    }

    pub async fn get(&self, path: &str) -> TestResult<Page> {
        Self::read(self.http.get(format!("{}{path}", self.base)).send().await?).await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> TestResult<Page> {
        Self::read(
            self.http
                .post(format!("{}{path}", self.base))
                .form(form)
                .send()
                .await?,
        )
        .await
    }

    /// A form post with the CSRF token of `page_path`'s page.
    pub async fn post_with_csrf(
        &self,
        page_path: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> TestResult<Page> {
        let token = self.get(page_path).await?.csrf();
        let mut f = vec![("csrf", token.as_str())];
        f.extend_from_slice(form);
        self.post_form(path, &f).await
    }

    pub async fn login(&self, name: &str, password: &str) -> TestResult<Page> {
        let page = self.get("/login").await?;
        let token = page.csrf();
        self.post_form(
            "/login",
            &[("csrf", &token), ("name", name), ("password", password)],
        )
        .await
    }

    /// The session's CSRF token (from the publish page).
    pub async fn csrf(&self) -> TestResult<String> {
        Ok(self.get("/publish").await?.csrf())
    }

    /// Posts the publish form (or a new-version form to `path`): `csrf` first, then the given
    /// fields, then the file, as the browser sends them.
    pub async fn upload(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        file: Option<(&str, Vec<u8>)>,
    ) -> TestResult<Page> {
        let token = self.csrf().await?;
        let mut form = reqwest::multipart::Form::new().text("csrf", token);
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        if let Some((name, bytes)) = file {
            form = form.part(
                "file",
                reqwest::multipart::Part::bytes(bytes)
                    .file_name(name.to_owned())
                    .mime_str("application/octet-stream")?,
            );
        }
        Self::read(
            self.http
                .post(format!("{}{path}", self.base))
                .multipart(form)
                .send()
                .await?,
        )
        .await
    }

    /// Publishes a small document; returns its id.
    pub async fn publish(
        &self,
        title: &str,
        scope: &str,
        tags: &str,
        bytes: Vec<u8>,
    ) -> TestResult<String> {
        let p = self
            .upload(
                "/publish",
                &[
                    ("title", title),
                    ("description", "a test document"),
                    ("tags", tags),
                    ("source", "tests"),
                    ("scope", scope),
                ],
                Some(("doc.txt", bytes)),
            )
            .await?;
        if p.status != StatusCode::SEE_OTHER {
            return Err(format!("publish {title:?}: {} {}", p.status, p.body).into());
        }
        Ok(p.doc_id())
    }

    pub async fn json(&self, path: &str) -> TestResult<(StatusCode, Value)> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await?;
        let s = r.status();
        Ok((s, r.json().await?))
    }
}

/// Deterministic bytes of a given length.
pub fn bytes(n: usize, seed: u8) -> Vec<u8> {
    docfed_test_kit::content::pattern(seed.into(), n)
}
