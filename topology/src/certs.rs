//! Certificates for a federation: `docfed-topology certs FILE --out DIR` and
//! `docfed-topology revoke FILE --out DIR NODE`; `docfed-topology up` uses the same for the
//! federations it starts.
//!
//! The folder it writes (ARCHITECTURE.md §2.10):
//! * `ca.pem`, `ca.key`: the federation CA (ECDSA P-256, ten years). With `--ca-cert` and
//!   `--ca-key` the operator's CA signs instead; its key is never copied here.
//! * `nodes/ID.pem`, `nodes/ID.key`: one per node, for server and client authentication, with
//!   the node's address (and `localhost`, `127.0.0.1` and `--san` names) as SANs and
//!   `urn:docfed:node:ID` naming the node.
//! * `portal.pem`/`.key` and `broker.pem`/`.key`: server certificates for the portal and for
//!   RabbitMQ's TLS listener.
//! * `crl.pem`: the revocation list (empty at first), `revoked.txt` the serials in it.
//!
//! Existing files are kept, so running it again after adding a node issues only the new node's
//! certificate. Keys are written with mode 0600.

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
    /// Extra names every server certificate carries (a public DNS name, a NAT address).
    pub extra_sans: Vec<String>,
    pub operator_ca: Option<OperatorCa>,
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

fn write_secret(path: &Path, text: &str) -> Result<()> {
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

/// Issues a leaf certificate for `names` (and `node`'s URI when given) into `cert`/`key`,
/// unless both files exist.
fn issue(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    names: &BTreeSet<String>,
    node: Option<&str>,
    (cert, key): (PathBuf, PathBuf),
) -> Result<bool> {
    if cert.exists() && key.exists() {
        return Ok(false);
    }
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
    if let Some(id) = node {
        params.subject_alt_names.push(SanType::URI(
            format!("{}{id}", docfed_http::tls::NODE_URI_PREFIX).try_into()?,
        ));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - days(1);
    params.not_after = now + days(LEAF_DAYS);
    params.serial_number = Some(random_serial());
    let leaf_key = KeyPair::generate()?;
    let leaf = params.signed_by(&leaf_key, issuer)?;
    write_secret(&key, &leaf_key.serialize_pem())?;
    write_public(&cert, &leaf.pem())?;
    Ok(true)
}

/// Names every server certificate carries, plus `addr`'s host.
fn names_for(addr: Option<IpAddr>, extra: &[String]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ["localhost".to_owned(), "127.0.0.1".to_owned()].into();
    if let Some(ip) = addr.filter(|ip| !ip.is_unspecified()) {
        names.insert(ip.to_string());
    }
    names.extend(extra.iter().cloned());
    names
}

/// What `certs` did, for its report.
#[derive(Debug, Default)]
pub struct Issued {
    pub created: Vec<String>,
    pub kept: Vec<String>,
}

/// Writes the CA, every node's, the portal's and the broker's certificate, and an empty CRL, into
/// `dir` (keeping what is there).
pub fn generate(topology: &Topology, dir: &CertDir, opts: &CertOptions) -> Result<Issued> {
    std::fs::create_dir_all(&dir.0)
        .with_context(|| format!("cannot create {}", dir.0.display()))?;
    make_ca(dir, opts.operator_ca.as_ref())?;
    let issuer = load_issuer(dir)?;
    let mut report = Issued::default();
    let mut note = |what: String, created: bool| {
        if created {
            report.created.push(what)
        } else {
            report.kept.push(what)
        }
    };
    for n in &topology.nodes {
        let names = names_for(Some(n.http.ip()), &opts.extra_sans);
        let created = issue(&issuer, &n.id, &names, Some(&n.id), dir.node(&n.id))?;
        note(format!("node {}", n.id), created);
    }
    let created = issue(
        &issuer,
        "docfed portal",
        &names_for(None, &opts.extra_sans),
        None,
        dir.portal(),
    )?;
    note("portal".into(), created);
    let mut broker_names = names_for(None, &opts.extra_sans);
    for id in topology.nodes.iter().map(|n| &n.id) {
        if let Some(host) = url_host(&topology.amqp_url_for(id)) {
            broker_names.insert(host);
        }
    }
    let created = issue(&issuer, "docfed broker", &broker_names, None, dir.broker())?;
    note("broker".into(), created);
    let created = issue(&issuer, BROKER_ADMIN, &BTreeSet::new(), None, dir.admin())?;
    note("broker administrator".into(), created);
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
