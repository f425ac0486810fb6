//! One function per command, and what they share: [`Ctx`], which finds a server that answers
//! and, when none does (or with `--offline`), the replica to answer from instead ([`Ctx::ask`]).
//!
//! `read`: the commands that only read (search, info, versions, fetch, flags, annotations,
//! peers); `actions`: flag, unflag and annotate, queued in the replica when no server answers;
//! `register`; `publish`, through a primary's bulk API; `replica`: sync and the daemon, which
//! keep the replica caught up.

pub mod actions;
pub mod publish;
pub mod read;
pub mod register;
pub mod replica;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;
use docfed_shared::wire::Timestamp;

use crate::client::{self, Client};
use crate::error::CliError;
use crate::replica::Replica;
use crate::{discover, Cli};

/// What every command needs to reach a server or the replica.
pub struct Ctx {
    server: Option<String>,
    fallbacks: String,
    mdns: bool,
    pub json: bool,
    offline: bool,
    home: PathBuf,
    http: reqwest::Client,
    /// `--ca` (`DOCFED_CA`) as given, which `register` pins.
    given_ca: Option<PathBuf>,
    /// `--primary-keys` (`DOCFED_PRIMARY_KEYS`) as read, which `register` pins.
    given_keys: Option<crate::trust::PrimaryKeys>,
}

impl Ctx {
    /// Trusts the CA to trust (`--ca`, else the pinned one: see `client::choose_ca`; a
    /// `register` may move the pin) and takes what the commands need from the command line.
    pub fn new(cli: &Cli, registering: bool) -> Result<Self, CliError> {
        client::trust_ca(client::choose_ca(cli.ca.clone(), registering)?)?;
        let given_keys = cli
            .primary_keys
            .as_deref()
            .map(crate::trust::PrimaryKeys::load)
            .transpose()?;
        crate::trust::install(crate::trust::choose(
            cli.primary_keys.as_deref(),
            registering,
        )?);
        let http = client::http_client()?;
        let home = match &cli.home {
            Some(h) => h.clone(),
            None => crate::replica::default_home()?,
        };
        Ok(Ctx {
            server: cli.server.clone(),
            fallbacks: cli.fallbacks.clone(),
            mdns: !cli.no_mdns,
            json: cli.json,
            offline: cli.offline,
            home,
            http,
            given_ca: cli.ca.clone(),
            given_keys,
        })
    }

    /// A server that answers (`--server`, mDNS, fallbacks); with `--offline`, none.
    pub async fn online(&self) -> Result<Client, CliError> {
        if self.offline {
            return Err(CliError::Network("--offline".into()));
        }
        let resolved = discover::resolve(
            self.server.as_deref(),
            &self.fallbacks,
            if self.mdns {
                Duration::from_millis(1500)
            } else {
                Duration::ZERO
            },
            &self.http,
        )
        .await?;
        if let Some(id) = &resolved.mdns_id {
            eprintln!(
                "docfed: using {id} at {} (found over mDNS; --server or --no-mdns to choose)",
                resolved.url
            );
        }
        Ok(Client::new(
            resolved.url,
            self.http.clone(),
            resolved.tried.join("; "),
        ))
    }

    /// Asks a server that answers with `online`; when none does (or with `--offline`), answers
    /// with `offline` from the replica, if there is one (see [`Ctx::fallback`]). Any other
    /// error of the server's (not found, refused) is the answer: the replica knows no better.
    pub async fn ask<T>(
        &self,
        online: impl AsyncFnOnce(&Client) -> Result<T, CliError>,
        offline: impl AsyncFnOnce(Replica) -> Result<T, CliError>,
    ) -> Result<T, CliError> {
        let asked = match self.online().await {
            Ok(client) => online(&client).await,
            Err(e) => Err(e),
        };
        match asked {
            Ok(answer) => Ok(answer),
            Err(e) => offline(self.fallback(e).await?).await,
        }
    }

    /// The replica, when `e` says no server answered (or `--offline`) and there is one; it
    /// says on stderr why it answers and how old it is. Any other error is returned.
    async fn fallback(&self, e: CliError) -> Result<Replica, CliError> {
        let CliError::Network(reason) = e else {
            return Err(e);
        };
        if !Replica::exists(&self.home) {
            return Err(if self.offline {
                CliError::NotFound(format!(
                    "--offline: there is no replica in {} yet; run `docfed sync` first",
                    self.home.display()
                ))
            } else {
                CliError::Network(reason)
            });
        }
        let replica = Replica::open(&self.home).await?;
        let age = match replica.last_sync().await? {
            Some((at, server)) => {
                let secs = (Timestamp::now().millis() - at.millis()).max(0) / 1000;
                format!(
                    "last synced {} ago ({at}, with {server})",
                    humantime::format_duration(Duration::from_secs(secs as u64))
                )
            }
            None => "never synced".into(),
        };
        eprintln!(
            "docfed: {}; answering from the replica in {}, {age}",
            self.why_offline(&reason),
            self.home.display()
        );
        Ok(replica)
    }

    /// Why a command answers (or queues) locally: `--offline`, or the servers that did not
    /// answer.
    fn why_offline(&self, reason: &str) -> String {
        if self.offline {
            "offline".to_owned()
        } else {
            format!("no server answered ({reason})")
        }
    }

    /// The replica if one exists (online commands keep it up to date).
    async fn existing_replica(&self) -> Result<Option<Replica>, CliError> {
        if Replica::exists(&self.home) {
            Ok(Some(Replica::open(&self.home).await?))
        } else {
            Ok(None)
        }
    }

    /// The replica, created if there is none yet.
    async fn replica(&self) -> Result<Replica, CliError> {
        Replica::open(&self.home).await
    }

    /// A progress bar on stderr, unless `quiet`, `--json` or stderr is no terminal.
    fn progress(&self, quiet: bool) -> bool {
        !quiet && !self.json && std::io::IsTerminal::is_terminal(&std::io::stderr())
    }
}

/// `docfed completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<(), CliError> {
    // Written whole through the output layer: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "docfed", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(CliError::stdout)
}
