//! TLS for docfed's links (ARCHITECTURE.md §2.10): rustls with the ring provider, certificates
//! from a federation CA (`docfed-topology certs`), a revocation list reloaded without restart.
//!
//! * A server offers client authentication but does not require it at the handshake: users
//!   (browsers, `curl`, devices) have tokens, not certificates. A client that does present one
//!   must present a valid, unrevoked certificate of the federation CA, or the handshake fails.
//!   Which endpoints need a node's certificate is the handler's business ([`TlsPeer`]).
//! * Roles (ARCHITECTURE.md §2.10): a node's certificate names it by a URI SAN
//!   `urn:docfed:node:ID` ([`node_id_of`]) and may serve and be a client; the broker's is marked
//!   `urn:docfed:broker` ([`is_broker`]) and may only serve; the portal's names neither and may
//!   only serve; the broker administrator's may only be a client. The extended key usages make
//!   the handshake refuse a certificate in the wrong direction; the names let a client refuse a
//!   server of the wrong role or identity ([`Expect`]), which a host name alone cannot (several
//!   parties share an address, and `localhost`).
//! * Revocation: the CRL file is read again whenever it changes ([`Trust::watch_crl`]); both
//!   directions check it (a revoked node can neither pull from nor serve its peers). Verifiers
//!   read the current CRL at each handshake, so configurations and clients are built once. A
//!   CRL file that goes missing or empty keeps the last good list in force: deleting the file
//!   must not un-revoke anyone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio_util::sync::CancellationToken;

/// The URI SAN prefix that names a node in its certificate: `urn:docfed:node:ID`.
pub const NODE_URI_PREFIX: &str = "urn:docfed:node:";

/// The URI SAN that marks the broker's certificate.
pub const BROKER_URI: &str = "urn:docfed:broker";

/// How often [`Trust::watch_crl`] looks at the CRL file.
pub const CRL_POLL: Duration = Duration::from_secs(2);

/// A TLS set-up that cannot be used, with the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {why}")]
    Read {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("{path} holds no {what}")]
    Empty { what: &'static str, path: PathBuf },
    #[error("{0}")]
    Config(String),
}

fn read_err(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError {
    let path = path.to_owned();
    move |e| TlsError::Read {
        what,
        path,
        why: e.to_string(),
    }
}

/// The PEM files of one party: the federation CA it trusts, its own certificate chain and key,
/// and the revocation list, if the federation has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
}

/// The provider every docfed TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A reqwest client builder. Every docfed HTTP client starts here: reqwest is built with
/// rustls but no provider of its own (ring is ours, and aws-lc would need a C build), and
/// panics building any client, even a plain-HTTP one, before a process default is installed.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_provider();
    reqwest::Client::builder()
}

/// Installs ring as the process's rustls provider, once; every TLS client that takes the
/// process default (reqwest, lapin's `amqps://`) must come after this.
pub fn install_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Err: another part of the process installed one first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Certificates in a PEM file (a chain, or a bundle of CA certificates).
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err(what, path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(what, path))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A private key in a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(read_err("private key", path))
}

/// Revocation lists in a PEM file. A missing file, or one holding no list, is an error: a list
/// with nothing revoked is still a list (`docfed-topology certs` writes one), and taking an absent
/// one for "nothing revoked" would let a revoked certificate back in.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(read_err("revocation list", path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err("revocation list", path))?;
    if crls.is_empty() {
        return Err(TlsError::Empty {
            what: "revocation list",
            path: path.to_owned(),
        });
    }
    Ok(crls)
}

/// The URIs among a certificate's subject alternative names.
fn uri_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Some(san) = parsed.subject_alternative_name().ok().flatten() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

/// The node a certificate names (its `urn:docfed:node:ID` SAN), if any.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<String> {
    uri_sans(cert).into_iter().find_map(|uri| {
        uri.strip_prefix(NODE_URI_PREFIX)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
    })
}

/// Whether a certificate is the broker's (its `urn:docfed:broker` SAN) and names no node.
pub fn is_broker(cert: &CertificateDer<'_>) -> bool {
    let uris = uri_sans(cert);
    uris.iter().any(|u| u == BROKER_URI) && !uris.iter().any(|u| u.starts_with(NODE_URI_PREFIX))
}

/// Whom a client expects to reach: what the server's certificate must name, besides chaining
/// to the federation CA unrevoked, being meant for a server, and naming the address dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Any server certificate of the federation (the portal's too): for users' tools that may
    /// be pointed at the portal as well as at a node.
    Any,
    /// A node's certificate, whichever node: the command line, a node reaching a URL no
    /// topology node has.
    AnyNode,
    /// Node `ID`'s certificate: a node pulling from its parent, the portal calling a primary.
    Node(String),
    /// The broker's certificate: a node could otherwise pose as the broker on its own address,
    /// confirm publishes and drop them.
    Broker,
}

impl Expect {
    /// Why `cert` is not what is expected, if it is not.
    fn refuses(&self, cert: &CertificateDer<'_>) -> Option<String> {
        let node = node_id_of(cert);
        match self {
            Expect::Any => None,
            Expect::AnyNode if node.is_some() => None,
            Expect::AnyNode => Some("the server's certificate is not a node's".to_owned()),
            Expect::Node(id) if node.as_deref() == Some(id.as_str()) => None,
            Expect::Node(id) => Some(format!(
                "the server's certificate is {}, not node `{id}`'s",
                match node {
                    Some(other) => format!("node `{other}`'s"),
                    None => "no node's".to_owned(),
                }
            )),
            Expect::Broker if is_broker(cert) => None,
            Expect::Broker => Some(
                "the server's certificate is not the broker's (no urn:docfed:broker name); \
                 a broker certificate issued before roles existed is re-issued by running \
                 `docfed-topology certs` again"
                    .to_owned(),
            ),
        }
    }
}

/// A server refused by [`Expect`], for the handshake's error.
#[derive(Debug)]
struct WrongPeer(String);

impl std::fmt::Display for WrongPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WrongPeer {}

/// What the TLS layer learnt of a connection's client, inserted into every request it carries.
/// Absent from requests over plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The node the client's verified certificate names; `None` for a client without one.
    pub node: Option<String>,
}

/// The CA and the current revocation list: what both directions verify against.
#[derive(Debug)]
pub struct Trust {
    roots: Arc<RootCertStore>,
    crl_path: Option<PathBuf>,
    /// The CRL file's modification time and length when last read.
    crl_stamp: RwLock<Option<(SystemTime, u64)>>,
    client_verifier: RwLock<Arc<dyn ClientCertVerifier>>,
    server_verifier: RwLock<Arc<WebPkiServerVerifier>>,
    /// Bumped at every CRL reload: connections verified under an older one check their peer
    /// again at their next request ([`Trust::still_valid`]).
    generation: std::sync::atomic::AtomicU64,
}

fn verifiers(
    roots: &Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<(Arc<dyn ClientCertVerifier>, Arc<WebPkiServerVerifier>), TlsError> {
    let client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .with_crls(crls.clone())
        .only_check_end_entity_revocation()
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| TlsError::Config(format!("server verifier: {e}")))?;
    Ok((client, server))
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Trust {
    /// Trusts the CA certificates in `ca`, minus what the CRL at `crl` revokes. A configured CRL
    /// that is missing or holds no list is an error: starting without it would trust every
    /// certificate it revokes, and nobody would notice.
    pub fn load(ca: &Path, crl: Option<&Path>) -> Result<Arc<Trust>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in load_certs(ca, "CA certificate")? {
            roots.add(cert).map_err(|e| TlsError::Read {
                what: "CA certificate",
                path: ca.to_owned(),
                why: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let crls = match crl {
            Some(p) => load_crls(p)?,
            None => Vec::new(),
        };
        let (client, server) = verifiers(&roots, crls)?;
        Ok(Arc::new(Trust {
            roots,
            crl_path: crl.map(Path::to_owned),
            crl_stamp: RwLock::new(crl.and_then(stamp)),
            client_verifier: RwLock::new(client),
            server_verifier: RwLock::new(server),
            generation: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Reads the CRL again if its file changed. A CRL that is missing, empty or does not parse
    /// leaves the last good one in force and is reported once (until the file changes again), so
    /// deleting, emptying or half-writing the file never lets a revoked node back.
    pub fn reload_crl(&self) -> Result<bool, TlsError> {
        let Some(path) = &self.crl_path else {
            return Ok(false);
        };
        let now = stamp(path);
        if *self.crl_stamp.read().expect("poisoned") == now {
            return Ok(false);
        }
        // Noted first: a file that stays bad is reported once, not at every poll.
        *self.crl_stamp.write().expect("poisoned") = now;
        let crls = load_crls(path)?;
        let (client, server) = verifiers(&self.roots, crls)?;
        *self.client_verifier.write().expect("poisoned") = client;
        *self.server_verifier.write().expect("poisoned") = server;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }

    /// The CRL generation now in force.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a client certificate accepted at a handshake is still valid under the CRL in
    /// force now. A kept-alive connection outlives a revocation; this is what ends its
    /// privileges at its next request.
    pub fn still_valid(&self, end_entity: &CertificateDer<'_>) -> bool {
        self.client_verifier()
            .verify_client_cert(end_entity, &[], UnixTime::now())
            .is_ok()
    }

    /// Whether there is a revocation list to follow ([`Trust::watch_crl`]).
    pub fn has_crl(&self) -> bool {
        self.crl_path.is_some()
    }

    /// Reloads the CRL whenever its file changes, until `cancel` fires; a reload that fails
    /// (the previous list stays in force) is logged and passed to `failed`. The caller runs it
    /// as a task of its own.
    pub async fn watch_crl(
        self: Arc<Self>,
        cancel: CancellationToken,
        failed: impl Fn(&TlsError) + Send,
    ) {
        if self.crl_path.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(CRL_POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cancel.cancelled() => return,
            }
            match self.reload_crl() {
                Ok(true) => tracing::info!(crl = ?self.crl_path, "revocation list reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(crl = ?self.crl_path, error = %e, "revocation list not reloaded; the last good one stays in force");
                    failed(&e);
                }
            }
        }
    }

    fn client_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.client_verifier.read().expect("poisoned").clone()
    }

    fn server_verifier(&self) -> Arc<WebPkiServerVerifier> {
        self.server_verifier.read().expect("poisoned").clone()
    }

    /// A server configuration presenting `cert`/`key`. With `client_auth`, clients may present a
    /// certificate of the federation (checked against the current CRL); without, none is asked.
    pub fn server_config(
        self: &Arc<Self>,
        cert: &Path,
        key: &Path,
        client_auth: bool,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        if !client_auth {
            return server_config_without_clients(cert, key);
        }
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(CurrentClientVerifier(self.clone())))
            .with_single_cert(load_certs(cert, "certificate")?, load_key(key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration that trusts the federation CA (and its CRL) only, presenting
    /// `identity` (certificate and key files) when given, reaching any server of the federation
    /// ([`Expect::Any`]).
    pub fn client_config(
        self: &Arc<Self>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<rustls::ClientConfig, TlsError> {
        self.client_config_for(identity, Expect::Any)
    }

    /// [`Trust::client_config`] reaching only the server `expect` describes.
    pub fn client_config_for(
        self: &Arc<Self>,
        identity: Option<(&Path, &Path)>,
        expect: Expect,
    ) -> Result<rustls::ClientConfig, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CurrentServerVerifier(
                self.clone(),
                expect,
            )));
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert, "certificate")?, load_key(key)?)
                .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A reqwest client builder whose TLS is [`Trust::client_config`].
    pub fn reqwest(
        self: &Arc<Self>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        self.reqwest_for(identity, Expect::Any)
    }

    /// A reqwest client builder whose TLS is [`Trust::client_config_for`].
    pub fn reqwest_for(
        self: &Arc<Self>,
        identity: Option<(&Path, &Path)>,
        expect: Expect,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        Ok(client_builder().tls_backend_preconfigured(self.client_config_for(identity, expect)?))
    }
}

/// `reqwest::get` through [`client_builder`] (which `reqwest::get` itself would not pass).
pub async fn get<U: reqwest::IntoUrl>(url: U) -> reqwest::Result<reqwest::Response> {
    client_builder().build()?.get(url).send().await
}

/// A server configuration presenting `cert`/`key` that asks clients for no certificate (a
/// standalone node, the portal).
pub fn server_config_without_clients(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert, "certificate")?, load_key(key)?)
        .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A reqwest client builder: trusting only the CA in `ca` when given, or with no TLS trust at all
/// (plain HTTP) otherwise. What users' tools (CLI, portal) call.
pub fn reqwest_trusting(ca: Option<&Path>) -> Result<reqwest::ClientBuilder, TlsError> {
    match ca {
        Some(ca) => Trust::load(ca, None)?.reqwest(None),
        None => Ok(client_builder()),
    }
}

/// The handshake-signature checks of a verifier that delegates to the one in force
/// (`Trust::client_verifier` or `Trust::server_verifier`), unchanged.
macro_rules! delegate_signature_checks {
    ($current:ident) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.$current().verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.$current().verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.$current().supported_verify_schemes()
        }
    };
}

/// The client verifier in force at each handshake (the CRL may have changed since the
/// configuration was built).
#[derive(Debug)]
struct CurrentClientVerifier(Arc<Trust>);

impl ClientCertVerifier for CurrentClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; a docfed client has exactly one certificate to offer.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .client_verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    delegate_signature_checks!(client_verifier);
}

/// The server verifier in force at each handshake, and what the server must be.
#[derive(Debug)]
struct CurrentServerVerifier(Arc<Trust>, Expect);

impl ServerCertVerifier for CurrentServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.0.server_verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match self.1.refuses(end_entity) {
            None => Ok(verified),
            Some(why) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(WrongPeer(why)))),
            )),
        }
    }

    delegate_signature_checks!(server_verifier);
}
