//! Certificates for a federation: `docfed-topology certs FILE --out DIR` and
//! `docfed-topology revoke FILE --out DIR NODE`; `docfed-topology up` uses the same for the
//! federations it starts.
//!
//! The folder it writes (ARCHITECTURE.md §2.10):
//! * `ca.pem`, `ca.key`: the federation CA (ECDSA P-256, ten years). With `--ca-cert` and
//!   `--ca-key` the operator's CA signs instead; its key is never copied here.
//! * `nodes/ID.pem`, `nodes/ID.key`: one per node, for server and client authentication (it
//!   serves HTTPS and pulls from its peers with it, and logs in to the broker), named
//!   `urn:docfed:node:ID`, with the node's address (`localhost` and `127.0.0.1` when that is a
//!   loopback or unspecified address) and its `--node-san` names.
//! * `broker.pem`/`.key`: for RabbitMQ's TLS listener, server authentication only, marked
//!   `urn:docfed:broker`, with the brokers' hosts from the topology's URLs, `localhost`,
//!   `127.0.0.1` and `--broker-san`.
//! * `portal.pem`/`.key`: the portal's HTTPS, server authentication only, with `localhost`,
//!   `127.0.0.1` and `--portal-san`. The portal calls the primaries with a token, not a
//!   certificate.
//! * `admin.pem`/`.key`: the broker administrator, client authentication only.
//! * `crl.pem`: the revocation list (empty at first), `revoked.txt` the serials in it.
//!
//! Each name goes to the role it is given for only: a node's certificate naming the broker's
//! host would let that node pose as the broker. Clients check the role as well
//! (`docfed_http::tls::Expect`), since several parties may share an address.
//!
//! Existing files are kept, so running it again after adding a node issues only the new node's
//! certificate; a certificate whose key usages or role name differ from what its role gets now
//! (one issued before roles existed) is issued again. Keys are written with mode 0600.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use docfed_shared::topology::TlsSpec;
use docfed_shared::Topology;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};

/// How long a node, portal or broker certificate is valid (rotation is re-issuing).
const LEAF_DAYS: i64 = 825;
/// How long the generated CA is valid.
const CA_DAYS: i64 = 3650;
/// How long a revocation list is current; `revoke` issues a fresh one each time.
const CRL_DAYS: i64 = 365;

/// An operator's CA to sign with instead of a generated one.
#[derive(Debug, Clone)]
pub struct OperatorCa {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What `certs` needs beyond the topology.
#[derive(Debug, Clone, Default)]
pub struct CertOptions {
    /// Extra names (a public DNS name, a NAT address) for every node's certificate, or, as
    /// `ID=NAME`, for node ID's only.
    pub node_sans: Vec<String>,
    /// Extra names of the broker's certificate.
    pub broker_sans: Vec<String>,
    /// Extra names of the portal's certificate.
    pub portal_sans: Vec<String>,
    pub operator_ca: Option<OperatorCa>,
}

/// What a certificate is for: its key usages and the role URI a client checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role<'a> {
    Node(&'a str),
    Broker,
    Portal,
    Admin,
}

impl Role<'_> {
    fn usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        match self {
            Role::Node(_) => vec![ServerAuth, ClientAuth],
            Role::Broker | Role::Portal => vec![ServerAuth],
            Role::Admin => vec![ClientAuth],
        }
    }

    fn uri(self) -> Option<String> {
        match self {
            Role::Node(id) => Some(format!("{}{id}", docfed_http::tls::NODE_URI_PREFIX)),
            Role::Broker => Some(docfed_http::tls::BROKER_URI.to_owned()),
            Role::Portal | Role::Admin => None,
        }
    }

    /// Whether the certificate in `cert` has this role's key usages and URI, and no other.
    fn matches(self, cert: &Path) -> bool {
        let Ok(certs) = docfed_http::tls::load_certs(cert, "certificate") else {
            return false;
        };
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certs[0].as_ref()) else {
            return false;
        };
        let eku = match parsed.extended_key_usage() {
            Ok(Some(e)) => e.value,
            _ => return false,
        };
        let want = self.usages();
        let usages_match = eku.server_auth == want.contains(&ExtendedKeyUsagePurpose::ServerAuth)
            && eku.client_auth == want.contains(&ExtendedKeyUsagePurpose::ClientAuth)
            && !eku.any;
        let uris: Vec<String> = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        usages_match && uris == self.uri().into_iter().collect::<Vec<_>>()
    }
}

/// Common name, and so broker user name, of the broker administrator's certificate.
pub const BROKER_ADMIN: &str = "docfed-admin";

/// The files of the folder `certs` writes.
#[derive(Debug, Clone)]
pub struct CertDir(pub PathBuf);

impl CertDir {
    /// The folder `certs` wrote for a `[tls]` table (the CA's folder), checked to hold the
    /// broker's and the administrator's certificates as well.
    pub fn of(tls: &TlsSpec) -> Result<CertDir> {
        let dir = CertDir(tls.ca.parent().map(Path::to_owned).unwrap_or_default());
        for (what, (cert, key)) in [
            ("broker", dir.broker()),
            ("broker administrator", dir.admin()),
        ] {
            if !cert.is_file() || !key.is_file() {
                bail!(
                    "{} has no {what} certificate ({}): run `docfed-topology certs FILE --out {}` \
                     again to issue what is missing",
                    dir.0.display(),
                    cert.display(),
                    dir.0.display()
                );
            }
        }
        Ok(dir)
    }
    pub fn ca(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    pub fn crl(&self) -> PathBuf {
        self.0.join("crl.pem")
    }
    fn revoked(&self) -> PathBuf {
        self.0.join("revoked.txt")
    }
    /// Where the operator's CA key is, when `certs` was given one.
    fn operator_key_note(&self) -> PathBuf {
        self.0.join("ca-key-path.txt")
    }
    pub fn node(&self, id: &str) -> (PathBuf, PathBuf) {
        self.spec().node_files(id)
    }
    pub fn portal(&self) -> (PathBuf, PathBuf) {
        (self.0.join("portal.pem"), self.0.join("portal.key"))
    }
    pub fn broker(&self) -> (PathBuf, PathBuf) {
        (self.0.join("broker.pem"), self.0.join("broker.key"))
    }
    /// The broker administrator's client certificate (common name [`BROKER_ADMIN`]): what
    /// the launcher and harnesses log in with to a broker that knows no passwords.
    pub fn admin(&self) -> (PathBuf, PathBuf) {
        (self.0.join("admin.pem"), self.0.join("admin.key"))
    }
    /// The `[tls]` table that points at this folder.
    pub fn spec(&self) -> TlsSpec {
        TlsSpec {
            ca: self.ca(),
            crl: Some(self.crl()),
            certs: Some(self.0.join("nodes")),
        }
    }
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

/// Writes `text` at `path`, readable by its owner only, whole or not at all.
pub(crate) fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn write_public(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn random_serial() -> SerialNumber {
    // Positive, 16 bytes: unique without a counter to keep.
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The CA that signs: the generated one in `dir`, or the operator's.
fn load_issuer(dir: &CertDir) -> Result<Issuer<'static, KeyPair>> {
    let key_path = match std::fs::read_to_string(dir.operator_key_note()) {
        Ok(p) => PathBuf::from(p.trim()),
        Err(_) => dir.ca_key(),
    };
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read the CA key {}", key_path.display()))?;
    let key = KeyPair::from_pem(&key_pem).with_context(|| {
        format!(
            "{} is not a private key rcgen can sign with",
            key_path.display()
        )
    })?;
    let ca_pem = std::fs::read_to_string(dir.ca())
        .with_context(|| format!("cannot read {}", dir.ca().display()))?;
    Issuer::from_ca_cert_pem(&ca_pem, key)
        .with_context(|| format!("{} is not a CA certificate", dir.ca().display()))
}

fn make_ca(dir: &CertDir, operator: Option<&OperatorCa>) -> Result<()> {
    if dir.ca().exists() {
        return Ok(());
    }
    if let Some(op) = operator {
        let pem = std::fs::read_to_string(&op.cert)
            .with_context(|| format!("cannot read {}", op.cert.display()))?;
        write_public(&dir.ca(), &pem)?;
        let key = std::path::absolute(&op.key)?;
        write_public(&dir.operator_key_note(), &key.display().to_string())?;
        // Fails early if the two do not make a usable CA.
        load_issuer(dir)?;
        return Ok(());
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "docfed federation CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - days(1);
    params.not_after = now + days(CA_DAYS);
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    write_secret(&dir.ca_key(), &key.serialize_pem())?;
    write_public(&dir.ca(), &cert.pem())?;
    Ok(())
}

fn san(name: &str) -> Result<SanType> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            name.try_into()
                .with_context(|| format!("{name:?} is not a DNS name"))?,
        ),
    })
}

/// What [`issue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Created,
    Kept,
    /// Replaced a certificate made for other usages (before roles existed).
    Reissued,
}

/// Issues a leaf certificate for `role` with `names` into `cert`/`key`, unless both files exist
/// and the certificate is what `role` gets.
fn issue(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    names: &BTreeSet<String>,
    role: Role<'_>,
    (cert, key): (PathBuf, PathBuf),
) -> Result<Outcome> {
    let outcome = match (cert.exists() && key.exists(), role.matches(&cert)) {
        (true, true) => return Ok(Outcome::Kept),
        (true, false) => Outcome::Reissued,
        (false, _) => Outcome::Created,
    };
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for n in names {
        params.subject_alt_names.push(san(n)?);
    }
    if let Some(uri) = role.uri() {
        params.subject_alt_names.push(SanType::URI(uri.try_into()?));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = role.usages();
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - days(1);
    params.not_after = now + days(LEAF_DAYS);
    params.serial_number = Some(random_serial());
    let leaf_key = KeyPair::generate()?;
    let leaf = params.signed_by(&leaf_key, issuer)?;
    write_secret(&key, &leaf_key.serialize_pem())?;
    write_public(&cert, &leaf.pem())?;
    Ok(outcome)
}

/// The loopback names.
fn loopback() -> BTreeSet<String> {
    ["localhost".to_owned(), "127.0.0.1".to_owned()].into()
}

/// A host's names: itself, and the loopback names when it is reached on this machine.
fn host_names(host: &str) -> BTreeSet<String> {
    let local = match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    let mut names = if local { loopback() } else { BTreeSet::new() };
    if !host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        names.insert(host.to_owned());
    }
    names
}

/// Node `id`'s extra names among `--node-san` values (`NAME` for every node, `ID=NAME` for one).
fn node_sans<'a>(id: &'a str, sans: &'a [String]) -> impl Iterator<Item = String> + 'a {
    sans.iter().filter_map(move |s| match s.split_once('=') {
        Some((node, name)) => (node == id).then(|| name.to_owned()),
        None => Some(s.clone()),
    })
}

/// What `certs` did, for its report.
#[derive(Debug, Default)]
pub struct Issued {
    pub created: Vec<String>,
    pub kept: Vec<String>,
    /// Certificates issued again because they were made for other usages (before roles).
    pub reissued: Vec<String>,
}

/// Writes the CA, every node's, the portal's and the broker's certificate, and an empty CRL, into
/// `dir` (keeping what is there).
pub fn generate(topology: &Topology, dir: &CertDir, opts: &CertOptions) -> Result<Issued> {
    std::fs::create_dir_all(&dir.0)
        .with_context(|| format!("cannot create {}", dir.0.display()))?;
    make_ca(dir, opts.operator_ca.as_ref())?;
    let issuer = load_issuer(dir)?;
    for s in &opts.node_sans {
        if let Some((id, _)) = s.split_once('=') {
            if topology.node(id).is_none() {
                bail!("--node-san {s:?}: the topology has no node `{id}`");
            }
        }
    }
    let mut report = Issued::default();
    let mut note = |what: String, outcome: Outcome| match outcome {
        Outcome::Created => report.created.push(what),
        Outcome::Kept => report.kept.push(what),
        Outcome::Reissued => report.reissued.push(what),
    };
    for n in &topology.nodes {
        let mut names = host_names(&n.http.ip().to_string());
        names.extend(node_sans(&n.id, &opts.node_sans));
        let done = issue(&issuer, &n.id, &names, Role::Node(&n.id), dir.node(&n.id))?;
        note(format!("node {}", n.id), done);
    }
    let mut portal_names = loopback();
    portal_names.extend(opts.portal_sans.iter().cloned());
    let done = issue(
        &issuer,
        "docfed portal",
        &portal_names,
        Role::Portal,
        dir.portal(),
    )?;
    note("portal".into(), done);
    // Loopback too: `up` and the test kits start private brokers on this machine whatever the
    // topology's URLs say. Harmless, since no other certificate is marked the broker's.
    let mut broker_names = loopback();
    broker_names.extend(opts.broker_sans.iter().cloned());
    for id in topology.nodes.iter().map(|n| &n.id) {
        if let Some(host) = url_host(&topology.amqp_url_for(id)) {
            broker_names.extend(host_names(&host));
        }
    }
    let done = issue(
        &issuer,
        "docfed broker",
        &broker_names,
        Role::Broker,
        dir.broker(),
    )?;
    note("broker".into(), done);
    let done = issue(
        &issuer,
        BROKER_ADMIN,
        &BTreeSet::new(),
        Role::Admin,
        dir.admin(),
    )?;
    note("broker administrator".into(), done);
    if !dir.crl().exists() {
        write_crl(dir, &issuer, &BTreeSet::new())?;
    }
    Ok(report)
}

fn url_host(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_owned())
}

fn read_revoked(dir: &CertDir) -> Result<BTreeSet<String>> {
    match std::fs::read_to_string(dir.revoked()) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.revoked().display())),
    }
}

fn write_crl(
    dir: &CertDir,
    issuer: &Issuer<'_, KeyPair>,
    serials: &BTreeSet<String>,
) -> Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let revoked = serials
        .iter()
        .map(|hex| {
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(
                    &hex::decode(hex)
                        .with_context(|| format!("bad serial {hex:?} in revoked.txt"))?,
                ),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let params = CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(5),
        next_update: now + days(CRL_DAYS),
        // Increases with every list issued.
        crl_number: SerialNumber::from_slice(&(now.unix_timestamp_nanos() as u64).to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(issuer)?;
    write_public(&dir.crl(), &crl.pem()?)
}

/// The serial number (hex) of the certificate in `path`.
fn serial_of(path: &Path) -> Result<String> {
    let certs = docfed_http::tls::load_certs(path, "certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(certs[0].as_ref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(hex::encode(parsed.raw_serial()))
}

/// Revokes node `id`'s certificate: its serial joins the CRL, which every node reloads within
/// seconds. The certificate and key files are removed, so `certs` issues a new pair should the
/// node come back.
pub fn revoke(topology: &Topology, dir: &CertDir, id: &str) -> Result<String> {
    if topology.node(id).is_none() {
        bail!("the topology has no node `{id}`");
    }
    let (cert, key) = dir.node(id);
    if !cert.exists() {
        bail!("no certificate for `{id}` at {}", cert.display());
    }
    let serial = serial_of(&cert)?;
    let issuer = load_issuer(dir)?;
    let mut serials = read_revoked(dir)?;
    serials.insert(serial.clone());
    write_crl(dir, &issuer, &serials)?;
    write_public(
        &dir.revoked(),
        &serials.iter().map(|s| format!("{s}\n")).collect::<String>(),
    )?;
    let revoked_dir = dir.0.join("revoked");
    std::fs::create_dir_all(&revoked_dir)?;
    std::fs::rename(&cert, revoked_dir.join(format!("{id}-{serial}.pem")))?;
    let _ = std::fs::remove_file(key);
    Ok(serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Topology {
        Topology::parse(&crate::demo::toml(
            "c",
            &[7101, 7102, 7103, 7104, 7105, 7106, 7107],
            None,
            |_| None,
        ))
        .unwrap()
    }

    #[test]
    fn certificates_name_their_node_and_a_second_run_keeps_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir(tmp.path().join("certs"));
        let topo = demo();
        let first = generate(&topo, &dir, &CertOptions::default()).unwrap();
        // Every node, the portal, the broker and its administrator.
        assert_eq!(first.created.len(), topo.nodes.len() + 3);
        let (cert, key) = dir.node("c-na");
        let der = &docfed_http::tls::load_certs(&cert, "certificate").unwrap()[0];
        assert_eq!(docfed_http::tls::node_id_of(der).as_deref(), Some("c-na"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let portal = &docfed_http::tls::load_certs(&dir.portal().0, "certificate").unwrap()[0];
        assert_eq!(docfed_http::tls::node_id_of(portal), None);
        let pem = std::fs::read(&cert).unwrap();
        let second = generate(&topo, &dir, &CertOptions::default()).unwrap();
        assert!(second.created.is_empty());
        assert_eq!(std::fs::read(&cert).unwrap(), pem);
        // Both a server and a client configuration accept what was issued.
        let trust = docfed_http::tls::Trust::load(&dir.ca(), Some(&dir.crl())).unwrap();
        trust.server_config(&cert, &key, true).unwrap();
        trust.client_config(Some((&cert, &key))).unwrap();
    }

    /// The key usages, URIs and DNS/IP names of the certificate in `path`.
    fn profile(path: &Path) -> (bool, bool, Vec<String>, BTreeSet<String>) {
        let der = &docfed_http::tls::load_certs(path, "certificate").unwrap()[0];
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        let (mut uris, mut names) = (Vec::new(), BTreeSet::new());
        for n in &c
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
        {
            use x509_parser::extensions::GeneralName;
            match n {
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                GeneralName::DNSName(d) => {
                    names.insert((*d).to_owned());
                }
                GeneralName::IPAddress(ip) => {
                    let ip: [u8; 4] = (*ip).try_into().unwrap();
                    names.insert(std::net::Ipv4Addr::from(ip).to_string());
                }
                _ => {}
            }
        }
        (eku.server_auth, eku.client_auth, uris, names)
    }

    #[test]
    fn each_role_gets_its_own_usages_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir(tmp.path().to_owned());
        let mut topo = demo();
        topo.amqp_url = Some("amqps://broker.example.net:5671/%2f".into());
        let opts = CertOptions {
            node_sans: vec!["nodes.example.net".into(), "c-na=na.example.net".into()],
            broker_sans: vec!["mq.example.net".into()],
            portal_sans: vec!["portal.example.net".into()],
            operator_ca: None,
        };
        generate(&topo, &dir, &opts).unwrap();
        let (server, client, uris, names) = profile(&dir.node("c-na").0);
        assert!(server && client, "a node serves and pulls");
        assert_eq!(uris, vec!["urn:docfed:node:c-na".to_owned()]);
        assert!(names.contains("nodes.example.net") && names.contains("na.example.net"));
        assert!(!names.contains("broker.example.net") && !names.contains("mq.example.net"));
        let (_, _, _, eu) = profile(&dir.node("c-eu").0);
        assert!(
            !eu.contains("na.example.net"),
            "ID=NAME is for that node only"
        );

        let (server, client, uris, names) = profile(&dir.broker().0);
        assert!(server && !client, "the broker only serves");
        assert_eq!(uris, vec![docfed_http::tls::BROKER_URI.to_owned()]);
        assert!(names.contains("broker.example.net") && names.contains("mq.example.net"));
        assert!(!names.contains("nodes.example.net") && !names.contains("portal.example.net"));

        let (server, client, uris, names) = profile(&dir.portal().0);
        assert!(
            server && !client,
            "the portal serves; it calls primaries with a token"
        );
        assert!(uris.is_empty());
        assert!(names.contains("portal.example.net") && !names.contains("mq.example.net"));

        let der = &docfed_http::tls::load_certs(&dir.admin().0, "certificate").unwrap()[0];
        let (_, admin) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let eku = admin.extended_key_usage().unwrap().unwrap().value;
        assert!(
            eku.client_auth && !eku.server_auth,
            "the administrator is only a client"
        );

        let unknown = CertOptions {
            node_sans: vec!["nobody=x.example.net".into()],
            ..Default::default()
        };
        assert!(generate(&topo, &dir, &unknown).is_err());
    }

    #[test]
    fn certificates_made_before_roles_are_issued_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir(tmp.path().to_owned());
        let topo = demo();
        generate(&topo, &dir, &CertOptions::default()).unwrap();
        // What `certs` issued before roles: server and client, no role name.
        let issuer = load_issuer(&dir).unwrap();
        for (cert, _) in [dir.broker(), dir.portal()] {
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let k = KeyPair::generate().unwrap();
            write_public(&cert, &params.signed_by(&k, &issuer).unwrap().pem()).unwrap();
        }
        let again = generate(&topo, &dir, &CertOptions::default()).unwrap();
        assert_eq!(
            again.reissued,
            vec!["portal".to_owned(), "broker".to_owned()]
        );
        assert!(again.created.is_empty());
        let (server, client, uris, _) = profile(&dir.broker().0);
        assert!(server && !client);
        assert_eq!(uris, vec![docfed_http::tls::BROKER_URI.to_owned()]);
        let third = generate(&topo, &dir, &CertOptions::default()).unwrap();
        assert!(third.reissued.is_empty() && third.created.is_empty());
    }

    /// Item 8 of issue 39: the revocation list is never lifted by its file going away.
    #[test]
    fn a_missing_or_empty_revocation_list_keeps_the_last_good_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir(tmp.path().to_owned());
        let topo = demo();
        generate(&topo, &dir, &CertOptions::default()).unwrap();
        let cert = docfed_http::tls::load_certs(&dir.node("c-mid-1").0, "certificate").unwrap();
        let trust = docfed_http::tls::Trust::load(&dir.ca(), Some(&dir.crl())).unwrap();
        assert!(trust.still_valid(&cert[0]));
        revoke(&topo, &dir, "c-mid-1").unwrap();
        assert!(trust.reload_crl().unwrap());
        assert!(!trust.still_valid(&cert[0]), "revoked");

        std::fs::remove_file(dir.crl()).unwrap();
        let e = trust.reload_crl().unwrap_err().to_string();
        assert!(e.contains("crl.pem"), "{e}");
        assert!(
            !trust.still_valid(&cert[0]),
            "still revoked without the file"
        );
        // Reported once, not at every poll.
        assert!(!trust.reload_crl().unwrap());
        std::fs::write(dir.crl(), "").unwrap();
        assert!(trust.reload_crl().is_err());
        assert!(
            !trust.still_valid(&cert[0]),
            "still revoked with an empty file"
        );
        std::fs::write(dir.crl(), "not a list\n").unwrap();
        assert!(trust.reload_crl().is_err());
        assert!(!trust.still_valid(&cert[0]));

        // At start, a configured list that is missing or empty is an error, not "nothing
        // revoked".
        let e = docfed_http::tls::Trust::load(&dir.ca(), Some(&tmp.path().join("gone.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gone.pem"), "{e}");
        assert!(docfed_http::tls::Trust::load(&dir.ca(), Some(&dir.crl())).is_err());
    }

    #[test]
    fn revoking_lists_the_serial_and_a_new_run_issues_a_fresh_pair() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir(tmp.path().to_owned());
        let topo = demo();
        generate(&topo, &dir, &CertOptions::default()).unwrap();
        let before = std::fs::read(dir.crl()).unwrap();
        let serial = revoke(&topo, &dir, "c-mid-1").unwrap();
        let after = std::fs::read(dir.crl()).unwrap();
        assert_ne!(before, after);
        let crls = docfed_http::tls::load_crls(&dir.crl()).unwrap();
        use x509_parser::prelude::FromDer;
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(crls[0].as_ref())
                .unwrap();
        let listed: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect();
        assert_eq!(listed, vec![serial.clone()]);
        assert!(!dir.node("c-mid-1").0.exists());
        let again = generate(&topo, &dir, &CertOptions::default()).unwrap();
        assert_eq!(again.created, vec!["node c-mid-1".to_owned()]);
        assert_ne!(serial_of(&dir.node("c-mid-1").0).unwrap(), serial);
        assert!(revoke(&topo, &dir, "nobody").is_err());
    }
}
