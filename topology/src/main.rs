//! `docfed-topology`: checks topology files (`check FILE`) and starts a whole federation on this
//! machine (`up [FILE] [--run-dir DIR]`). The work is in the library (`topology::launch`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use docfed_shared::topology::{Topology, AMQP_URL_ENV, DEFAULT_AMQP_URL};
use topology::launch::{self, BrokerChoice, UpOptions};

#[derive(Parser)]
#[command(
    name = "docfed-topology",
    version,
    about = "docfed: checks topology files; `up` starts a whole federation locally",
    after_help = "Examples:\n  \
        docfed-topology check topology/demo.toml\n  \
        docfed-topology up\n  \
        docfed-topology up topology/demo.toml --run-dir run/federation"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a topology file and print every problem found.
    Check {
        /// The topology file (TOML).
        file: PathBuf,
    },
    /// Give every node of FILE an ed25519 key: writes OUT/<id>.key (private; kept if there)
    /// and OUT/topology.toml (FILE with every node's public key). Copy each key to its node's
    /// data directory as node.key (or pass --key-file) and give every node the new topology.
    Keys {
        /// The topology file (TOML).
        file: PathBuf,
        /// Directory for the keys and the keyed topology.
        #[arg(long)]
        out: PathBuf,
    },
    /// Make the federation's certificates: a CA (or --ca-cert/--ca-key, the operator's), one
    /// certificate per node, the portal's and the broker's, and an empty revocation list, in
    /// OUT (existing ones are kept); writes OUT/topology.toml, FILE with a [tls] table that
    /// points there. Give each node its nodes/<id>.pem and .key (or --tls-cert/--tls-key).
    Certs {
        /// The topology file (TOML).
        file: PathBuf,
        /// Directory for the certificates and the topology with [tls].
        #[arg(long)]
        out: PathBuf,
        /// Extra DNS name or IP address of every node's certificate, or with ID=NAME of node
        /// ID's only (repeatable).
        #[arg(long = "node-san", value_name = "[ID=]NAME")]
        node_sans: Vec<String>,
        /// Extra DNS name or IP address of the broker's certificate (repeatable).
        #[arg(long = "broker-san", value_name = "NAME")]
        broker_sans: Vec<String>,
        /// Extra DNS name or IP address of the portal's certificate (repeatable).
        #[arg(long = "portal-san", value_name = "NAME")]
        portal_sans: Vec<String>,
        /// Refused: it gave one name to every certificate, which let any node pose as the
        /// broker. Say whose name it is with --node-san, --broker-san or --portal-san.
        #[arg(long = "san", value_name = "NAME", hide = true)]
        sans: Vec<String>,
        /// The operator's CA certificate (PEM) to sign with instead of a new CA.
        #[arg(long, requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The operator's CA private key (PEM); it is never copied into OUT.
        #[arg(long, requires = "ca_cert")]
        ca_key: Option<PathBuf>,
    },
    /// Revoke node NODE's certificate: it joins OUT/crl.pem, which every node reloads within
    /// seconds, so the node can no longer pull from or serve its peers. Remove the node (and
    /// its public key) from the topology as well.
    Revoke {
        /// The topology file (TOML).
        file: PathBuf,
        /// The directory `certs` wrote.
        #[arg(long)]
        out: PathBuf,
        /// The node whose certificate is revoked.
        node: String,
    },
    /// Print the RabbitMQ definitions (JSON) of FILE's broker: a user per node, logged in by
    /// its certificate (EXTERNAL, no password), permissions that confine it to its own queues,
    /// every node's queues declared, and `docfed-admin`. Load them with `rabbitmqctl
    /// import_definitions FILE.json` or `load_definitions` (README "Broker").
    BrokerDefinitions {
        /// The topology file (TOML).
        file: PathBuf,
        /// A revoked node: no user (repeatable).
        #[arg(long = "without", value_name = "NODE")]
        without: Vec<String>,
    },
    /// Start every node of FILE (and the portal when available), print their URLs, write
    /// RUN_DIR/federation.json, and stop them all on Ctrl-C or SIGTERM.
    Up {
        /// The topology file (TOML).
        #[arg(default_value = launch::DEFAULT_TOPOLOGY)]
        file: PathBuf,
        /// Directory for each node's data and log, the private broker and federation.json.
        #[arg(long, default_value = launch::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
        /// Broker to use for every node if one answers there; otherwise a private
        /// rabbitmq-server is started in the run directory.
        #[arg(long, env = AMQP_URL_ENV, default_value = DEFAULT_AMQP_URL, hide_env_values = true)]
        amqp_url: String,
        /// Always start a private rabbitmq-server, even if a broker answers at --amqp-url.
        #[arg(long)]
        private_broker: bool,
        /// Address for the portal.
        #[arg(long, default_value = launch::DEFAULT_PORTAL_HTTP)]
        portal_http: SocketAddr,
        /// Do not try to start the portal.
        #[arg(long)]
        no_portal: bool,
        /// Seconds every node has to become healthy.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        health_timeout: u64,
        /// Seconds a node has to exit after SIGTERM before it is killed.
        #[arg(long, default_value_t = 15, value_name = "SECS")]
        stop_timeout: u64,
        /// Do not restart nodes that exit on their own (by default: after 1 s, 2 s, 4 s … up
        /// to 30 s, giving up after 5 crashes in a row within 10 s of their start).
        #[arg(long)]
        no_restart: bool,
        /// Run a topology without [tls] in clear. By default `up` makes certificates for it in
        /// RUN_DIR/certs and every node speaks HTTPS with mutual TLS between nodes.
        #[arg(long)]
        insecure: bool,
        /// Keep the nodes' content in plaintext on disk. By default `up` gives every node a
        /// content key of its own (RUN_DIR/content-keys/ID.key, kept across runs, outside the
        /// data directories) and content is sealed at rest (AES-256-GCM).
        #[arg(long)]
        plaintext_at_rest: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Check { file } => check(&file),
        Cmd::Keys { file, out } => keys(&file, &out),
        Cmd::Certs {
            file,
            out,
            node_sans,
            broker_sans,
            portal_sans,
            sans,
            ca_cert,
            ca_key,
        } => {
            if let Some(name) = sans.first() {
                eprintln!(
                    "docfed-topology certs: --san {name:?} would give every certificate the name; \
                     say whose it is: --broker-san {name} (the broker's host), --node-san {name} \
                     (every node; --node-san ID={name} for one) or --portal-san {name}"
                );
                return ExitCode::from(2);
            }
            certs(
                &file,
                &out,
                topology::certs::CertOptions {
                    node_sans,
                    broker_sans,
                    portal_sans,
                    operator_ca: ca_cert
                        .zip(ca_key)
                        .map(|(cert, key)| topology::certs::OperatorCa { cert, key }),
                },
            )
        }
        Cmd::Revoke { file, out, node } => revoke(&file, &out, &node),
        Cmd::BrokerDefinitions { file, without } => broker_definitions(&file, without),
        Cmd::Up {
            file,
            run_dir,
            amqp_url,
            private_broker,
            portal_http,
            no_portal,
            health_timeout,
            stop_timeout,
            no_restart,
            insecure,
            plaintext_at_rest,
        } => {
            let mut opts = UpOptions::new(file, run_dir);
            opts.broker = if private_broker {
                BrokerChoice::Private
            } else {
                BrokerChoice::Auto(amqp_url)
            };
            opts.portal_http = portal_http;
            opts.start_portal = !no_portal;
            opts.health_timeout = Duration::from_secs(health_timeout);
            opts.stop_timeout = Duration::from_secs(stop_timeout);
            if no_restart {
                opts.restart = None;
            }
            opts.insecure = insecure;
            opts.content_keys = !plaintext_at_rest;
            up(opts)
        }
    }
}

fn check(file: &Path) -> ExitCode {
    let topology = match Topology::load(file) {
        Ok(t) => t,
        Err(e) => {
            // Read and parse errors already name the file.
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match topology.validate() {
        Ok(()) => {
            println!(
                "{}: ok — {} nodes ({} primaries, {} intermediates, {} regional; k = {})",
                file.display(),
                topology.nodes.len(),
                topology.primaries().count(),
                topology.intermediates().count(),
                topology.regionals().count(),
                topology.redundancy
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{}: {e}", file.display());
            }
            ExitCode::FAILURE
        }
    }
}

fn keys(file: &Path, out: &Path) -> ExitCode {
    let run = || -> anyhow::Result<PathBuf> {
        let topology = Topology::load_validated(file)?;
        let keyed = topology::keys::provision(&topology, |id| out.join(format!("{id}.key")))?;
        let path = out.join("topology.toml");
        topology::keys::write_topology(&keyed, &path)?;
        Ok(path)
    };
    match run() {
        Ok(path) => {
            println!(
                "keys in {}: copy each <id>.key to that node's data directory as node.key (or \
                 pass --key-file), and give every node and the portal {}",
                out.display(),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docfed-topology keys: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn certs(file: &Path, out: &Path, opts: topology::certs::CertOptions) -> ExitCode {
    let run = || -> anyhow::Result<(PathBuf, topology::certs::Issued)> {
        let mut topology = Topology::load_validated(file)?;
        let dir = topology::certs::CertDir(out.to_owned());
        let issued = topology::certs::generate(&topology, &dir, &opts)?;
        // The topology written beside the certificates names them relative to itself.
        topology.insecure = false;
        topology.tls = Some(docfed_shared::topology::TlsSpec {
            ca: "ca.pem".into(),
            crl: Some("crl.pem".into()),
            certs: Some("nodes".into()),
        });
        let path = out.join("topology.toml");
        topology::keys::write_topology(&topology, &path)?;
        Ok((path, issued))
    };
    match run() {
        Ok((path, issued)) => {
            for what in &issued.created {
                println!("issued  {what}");
            }
            for what in &issued.kept {
                println!("kept    {what}");
            }
            for what in &issued.reissued {
                println!(
                    "issued  {what} again (it was made before certificates had roles; restart \
                     what uses it)"
                );
            }
            println!(
                "certificates in {}: CA {}; give each node nodes/<id>.pem and nodes/<id>.key \
                 (or --tls-cert/--tls-key), keep ca.key off the nodes, and give every node, \
                 the portal and the CLI users {} and the CA",
                out.display(),
                out.join("ca.pem").display(),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docfed-topology certs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn revoke(file: &Path, out: &Path, node: &str) -> ExitCode {
    let run = || -> anyhow::Result<String> {
        let topology = Topology::load_validated(file)?;
        topology::certs::revoke(&topology, &topology::certs::CertDir(out.to_owned()), node)
    };
    match run() {
        Ok(serial) => {
            println!(
                "revoked {node} (serial {serial}); nodes reading {} refuse it within {} s. \
                 Remove it and its public key from the topology too.\n\
                 On each broker: rabbitmqctl delete_user {node} && \
                 rabbitmqctl close_all_user_connections {node} revoked",
                out.join("crl.pem").display(),
                docfed_http::tls::CRL_POLL.as_secs()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docfed-topology revoke: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn broker_definitions(file: &Path, without: Vec<String>) -> ExitCode {
    let run = || -> anyhow::Result<String> {
        let topology = Topology::load_validated(file)?;
        for id in &without {
            if topology.node(id).is_none() {
                anyhow::bail!("--without {id}: no such node in {}", file.display());
            }
        }
        let defs = topology::broker_policy::definitions(&topology, &without.into_iter().collect())?;
        Ok(serde_json::to_string_pretty(&defs)?)
    };
    match run() {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("docfed-topology broker-definitions: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn up(opts: UpOptions) -> ExitCode {
    // One thread: children get PR_SET_PDEATHSIG, which follows the spawning thread, and the
    // launcher has little to do besides waiting.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("docfed-topology: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(launch::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("docfed-topology: {e:#}");
            ExitCode::FAILURE
        }
    }
}
