//! A provider behind HTTPS with a private CA (`ca_file`): modelgate verifies
//! the certificate against the system roots plus that file, sends SNI, and
//! speaks the same API as over plain HTTP.

mod common;

use std::sync::Arc;

use common::{Mock, Modelgate};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// A CA (PEM) and a `localhost` leaf signed by it.
fn pki() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert.pem(), leaf.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())))
}

/// Terminate TLS on 127.0.0.1:0 and forward the plaintext to `backend`.
async fn tls_front(backend: std::net::SocketAddr, cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> u16 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_provider_with_private_ca() {
    let mock = Mock::start().await;
    let (ca_pem, cert, key) = pki();
    let port = tls_front(mock.addr, cert, key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();

    let with_ca = format!(
        "providers:\n  openai: {{ kind: openai, base_url: \"https://localhost:{port}/v1\", ca_file: \"{}\" }}\n",
        ca_path.display()
    );
    let mg = Modelgate::start(&with_ca);
    let client = reqwest::Client::new();
    let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&json!({"model": "gpt-4o-mini", "messages": []})).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", mg.stderr());
    assert_eq!(mock.last().headers["host"], format!("localhost:{port}"));
    let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&json!({"model": "gpt-4o-mini", "stream": true})).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("[DONE]"));

    // Without the CA the certificate is not trusted: a clear 502, no request.
    let calls = mock.calls();
    let without_ca = format!("providers:\n  openai: {{ kind: openai, base_url: \"https://localhost:{port}/v1\" }}\n");
    let mg = Modelgate::start(&without_ca);
    let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&json!({"model": "gpt-4o-mini"})).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(mock.calls(), calls);
}
