//! Certificates for TLS tests, made with rcgen: a CA, a server certificate
//! for `localhost` and `127.0.0.1`, a client certificate, and a second CA
//! that signed nothing, written as PEM files in a temporary directory:
//!
//! ```text
//! server/       server-cert.pem server-key.pem ca-cert.pem
//! ca-only/      ca-cert.pem                        (trusts the server)
//! with-client/  ca-cert.pem client-cert.pem client-key.pem
//! other-ca/     ca-cert.pem                        (does not trust it)
//! ```
//!
//! The client directories are what libnbd's `tls-certificates=DIR` and
//! qemu's `tls-creds-x509,dir=DIR` read.

use rcgen::KeyUsagePurpose as Ku;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use std::path::PathBuf;

/// The files of one PKI; removed when dropped.
pub struct Pki {
    _root: tempfile::TempDir,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The CA certificate file: what a server asking for client
    /// certificates trusts.
    pub ca: PathBuf,
    /// A client directory with the CA certificate only.
    pub ca_only: PathBuf,
    /// A client directory with the CA certificate and a client certificate.
    pub with_client: PathBuf,
    /// `with_client`'s certificate and key, for clients that take files
    /// (curl's `--cert` and `--key`).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client directory with the certificate of a CA that signed nothing.
    pub other_ca: PathBuf,
}

/// A certificate and its key, which can sign others.
type Ca = CertifiedIssuer<'static, KeyPair>;

/// A certificate named `cn` for `names`, with its key: signed by `by` for
/// that use, or without `by` a self-signed CA.
fn cert(cn: &str, names: &[&str], by: Option<(&Ca, ExtendedKeyUsagePurpose)>) -> Ca {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut p = CertificateParams::new(names).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let Some((ca, usage)) = by else {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign, Ku::DigitalSignature];
        return CertifiedIssuer::self_signed(p, key).unwrap();
    };
    p.key_usages = vec![Ku::DigitalSignature, Ku::KeyEncipherment];
    p.extended_key_usages = vec![usage];
    // rustls (webpki) finds the issuer by it.
    p.use_authority_key_identifier_extension = true;
    CertifiedIssuer::signed_by(p, key, ca).unwrap()
}

impl Pki {
    /// Fresh keys and certificates (each test its own: nothing to expire
    /// or leak between runs).
    #[allow(clippy::new_without_default)] // makes keys and files
    pub fn new() -> Pki {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let root = tempfile::tempdir().unwrap();
        let ca = cert("test CA", &[], None);
        let server = cert(
            "localhost",
            &["localhost", "127.0.0.1"],
            Some((&ca, ServerAuth)),
        );
        let client = cert("test client", &[], Some((&ca, ClientAuth)));
        for (file, pem) in [
            ("server/server-cert.pem", server.pem()),
            ("server/server-key.pem", server.key().serialize_pem()),
            ("server/ca-cert.pem", ca.pem()),
            ("ca-only/ca-cert.pem", ca.pem()),
            ("with-client/ca-cert.pem", ca.pem()),
            ("with-client/client-cert.pem", client.pem()),
            ("with-client/client-key.pem", client.key().serialize_pem()),
            ("other-ca/ca-cert.pem", cert("another CA", &[], None).pem()),
        ] {
            let path = root.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, pem).unwrap();
        }
        let at = |file: &str| root.path().join(file);
        Pki {
            server_cert: at("server/server-cert.pem"),
            server_key: at("server/server-key.pem"),
            ca: at("server/ca-cert.pem"),
            ca_only: at("ca-only"),
            with_client: at("with-client"),
            client_cert: at("with-client/client-cert.pem"),
            client_key: at("with-client/client-key.pem"),
            other_ca: at("other-ca"),
            _root: root,
        }
    }
}
