//! TLS for the API on TCP: trust exactly the CA the caller names (the
//! daemon's certificates are usually self-issued), with ring as the crypto
//! provider so nothing depends on a process-wide default.

use crate::ApiError;
use std::sync::Arc;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

fn setup(what: &str) -> impl FnOnce(String) -> ApiError + '_ {
    move |e| ApiError::Setup(format!("{what}: {e}"))
}

/// A client identity for a daemon started with `--tls-client-ca`.
pub(crate) struct Identity<'a> {
    pub cert_pem: &'a [u8],
    pub key_pem: &'a [u8],
}

pub(crate) fn connector(
    ca_pem: &[u8],
    identity: Option<Identity<'_>>,
) -> Result<TlsConnector, ApiError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| setup("reading the CA certificates")(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| setup("adding a CA certificate")(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ApiError::Setup(
            "the CA PEM holds no certificate to trust".into(),
        ));
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| setup("choosing TLS versions")(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let certs = CertificateDer::pem_slice_iter(id.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| setup("reading the client certificate")(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(id.key_pem)
                .map_err(|e| setup("reading the client key")(e.to_string()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| setup("using the client certificate")(e.to_string()))?
        }
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, ApiError> {
    ServerName::try_from(name.to_string())
        .map_err(|e| ApiError::Setup(format!("{name:?} is not a server name: {e}")))
}
