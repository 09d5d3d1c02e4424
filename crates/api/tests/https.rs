//! The client over TLS on TCP: it trusts only the CA it is given, checks
//! the server name, sends the bearer token, and presents a client
//! certificate when asked to.

mod samples;

use api::{ApiError, Client, ErrorKind};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::KeyUsagePurpose as Ku;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use std::sync::{Arc, Mutex};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

const TOKEN: &str = "0123456789abcdef-token";

type Ca = CertifiedIssuer<'static, KeyPair>;

fn new_ca(cn: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign, Ku::DigitalSignature];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(names: &[&str], ca: &Ca, usage: ExtendedKeyUsagePurpose) -> Ca {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut p = CertificateParams::new(names).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "refpoint test");
    p.key_usages = vec![Ku::DigitalSignature, Ku::KeyEncipherment];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    CertifiedIssuer::signed_by(p, KeyPair::generate().unwrap(), ca).unwrap()
}

/// Requests as the server saw them: `Host` and `Authorization`.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A TLS server on 127.0.0.1 answering `/v1/status` to the right token
/// and 401 (with the daemon's body) to anything else.
fn serve(server: &Ca, client_ca: Option<&Ca>) -> (String, Seen) {
    let certs = vec![CertificateDer::from_pem_slice(server.pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(server.key().serialize_pem().as_bytes()).unwrap();
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
                .unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| answer(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
    });
    (addr, seen)
}

async fn answer(
    seen: Seen,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (host, authorization) = (header("host"), header("authorization"));
    let ok = authorization == format!("Bearer {TOKEN}") && req.uri().path() == "/v1/status";
    seen.lock().unwrap().push((host, authorization));
    let (status, body) = match ok {
        true => (200, samples::STATUS),
        false => (401, samples::UNAUTHORIZED),
    };
    Ok(hyper::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

#[test]
fn the_token_goes_to_a_server_the_ca_vouches_for() {
    let ca = new_ca("refpoint test CA");
    let server = leaf(&["localhost"], &ca, ExtendedKeyUsagePurpose::ServerAuth);
    let (addr, seen) = serve(&server, None);
    let pem = ca.pem();

    let c = Client::https(&addr, "localhost", pem.as_bytes(), TOKEN).unwrap();
    assert_eq!(c.status().unwrap().pid, 4242);
    assert_eq!(
        seen.lock().unwrap().pop().unwrap(),
        (addr.clone(), format!("Bearer {TOKEN}"))
    );
    assert!(!format!("{c:?}").contains(TOKEN), "{c:?}");

    let wrong = Client::https(&addr, "localhost", pem.as_bytes(), "not-the-token").unwrap();
    let e = wrong.status().unwrap_err();
    assert_eq!(
        (e.status(), e.kind()),
        (Some(401), Some(&ErrorKind::Unauthorized))
    );

    // Another CA, or another name: no request reaches the server.
    let before = seen.lock().unwrap().len();
    let other = new_ca("another CA").pem();
    let e = Client::https(&addr, "localhost", other.as_bytes(), TOKEN)
        .unwrap()
        .status()
        .unwrap_err();
    assert!(matches!(e, ApiError::Transport { .. }), "{e:?}");
    let e = Client::https(&addr, "other.example", pem.as_bytes(), TOKEN)
        .unwrap()
        .status()
        .unwrap_err();
    let ApiError::Transport { endpoint, message } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(endpoint, &format!("https://{addr}"));
    assert!(message.contains("TLS"), "{message}");
    assert_eq!(seen.lock().unwrap().len(), before);
}

#[test]
fn a_client_certificate_is_presented_when_given() {
    let ca = new_ca("refpoint test CA");
    let server = leaf(&["localhost"], &ca, ExtendedKeyUsagePurpose::ServerAuth);
    let client = leaf(&[], &ca, ExtendedKeyUsagePurpose::ClientAuth);
    let (addr, _) = serve(&server, Some(&ca));
    let pem = ca.pem();

    let e = Client::https(&addr, "localhost", pem.as_bytes(), TOKEN)
        .unwrap()
        .status()
        .unwrap_err();
    assert!(matches!(e, ApiError::Transport { .. }), "{e:?}");

    let c = Client::https_with_client_cert(
        &addr,
        "localhost",
        pem.as_bytes(),
        TOKEN,
        client.pem().as_bytes(),
        client.key().serialize_pem().as_bytes(),
    )
    .unwrap();
    assert_eq!(c.status().unwrap().version, "0.1.0");
}

#[test]
fn setup_refuses_what_it_cannot_use() {
    let pem = new_ca("refpoint test CA").pem();
    for (addr, name, ca, token) in [
        ("127.0.0.1:1", "localhost", "not a pem", TOKEN),
        ("127.0.0.1:1", "not a name!", pem.as_str(), TOKEN),
        ("127.0.0.1:1", "localhost", pem.as_str(), "line\nbreak"),
    ] {
        let e = Client::https(addr, name, ca.as_bytes(), token).unwrap_err();
        assert!(matches!(e, ApiError::Setup(_)), "{name} {token:?}: {e:?}");
    }
}
