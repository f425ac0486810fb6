//! What went wrong on the way to a server, said by its causes: reqwest's own message ("error
//! sending request for url (…)") names none of them, and a server whose TLS certificate is not
//! trusted needs a remedy (`--ca`) that an unreachable one does not.

use std::error::Error;

/// How to trust a federation's servers, for the errors that say they are not.
pub const TRUST_HINT: &str = "pass the federation's CA certificate with --ca FILE (or \
     DOCFED_CA=FILE): `cargo xtask up` and `docfed-topology up` print its path \
     (RUN_DIR/certs/ca.pem, e.g. run/federation/certs/ca.pem), and `docfed --ca FILE register` \
     pins it for later commands";

/// `e` and every cause under it, outermost first, each said once (a wrapper often repeats its
/// cause's text in its own).
pub fn causes(e: &(dyn Error + 'static)) -> String {
    let mut said = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !said.contains(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
        next = cause.source();
    }
    said
}

/// The innermost cause of `e` that says something: what actually failed (a refused
/// connection, a certificate), without the wrappers.
pub fn root_cause(e: &(dyn Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() {
            last = text;
        }
        next = cause.source();
    }
    last
}

/// Whether `e` is a TLS handshake that failed because the server's certificate does not lead
/// to a CA this client trusts (no `--ca`, or another federation's).
pub fn untrusted_certificate(e: &(dyn Error + 'static)) -> bool {
    use rustls::CertificateError::{BadSignature, UnknownIssuer};
    let untrusted = [UnknownIssuer, BadSignature].map(rustls::Error::InvalidCertificate);
    // By rustls' own words too: between hyper's connector and rustls the error passes through
    // boxes and `io::Error`s that do not all hand it on as a source.
    let said = untrusted.each_ref().map(ToString::to_string);
    let mut next = Some(e);
    while let Some(cause) = next {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if tls.is_some_and(|tls| untrusted.contains(tls)) {
            return true;
        }
        let text = cause.to_string();
        if said.iter().any(|s| text.contains(s.as_str())) {
            return true;
        }
        next = cause.source();
    }
    false
}

/// A failed request to a server, for people: an untrusted certificate and how to trust it, or
/// every cause of the failure.
pub fn describe(e: &reqwest::Error) -> String {
    if untrusted_certificate(e) {
        format!(
            "the server's TLS certificate is not trusted ({}); {TRUST_HINT}",
            root_cause(e)
        )
    } else {
        causes(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(&'static str, Option<Box<dyn Error + Send + Sync>>);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    /// The shape of a failed handshake under reqwest: wrappers, then an `io::Error` holding
    /// rustls' error (which `io::Error::source` skips).
    fn handshake(error: rustls::Error) -> Wrapper {
        Wrapper(
            "error sending request for url (https://127.0.0.1:7121/v1/documents)",
            Some(Box::new(Wrapper(
                "client error (Connect)",
                Some(Box::new(std::io::Error::other(error))),
            ))),
        )
    }

    #[test]
    fn an_unknown_issuer_is_an_untrusted_certificate() {
        let e = handshake(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(untrusted_certificate(&e));
        assert_eq!(
            causes(&e),
            "error sending request for url (https://127.0.0.1:7121/v1/documents): client error \
             (Connect): invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(root_cause(&e), "invalid peer certificate: UnknownIssuer");
        let expired = handshake(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        ));
        assert!(
            !untrusted_certificate(&expired),
            "expired is another remedy"
        );
    }

    #[test]
    fn a_refused_connection_says_so() {
        let e = Wrapper(
            "error sending request for url (http://127.0.0.1:9/v1/health)",
            Some(Box::new(Wrapper(
                "client error (Connect)",
                Some(Box::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                ))),
            ))),
        );
        assert!(!untrusted_certificate(&e));
        assert!(causes(&e).ends_with("client error (Connect): connection refused"));
    }
}
