//! A provider behind HTTPS with a private CA (`ca_file`): modelgate verifies
//! the certificate against the system roots plus that file, sends SNI, and
//! speaks the same API as over plain HTTP.

mod common;

use common::tls::{pki, tls_front};
use common::{Config, Kind, Mock, Modelgate};
use serde_json::json;

#[tokio::test]
async fn https_provider_with_private_ca() {
    let mock = Mock::start().await;
    let (ca_pem, cert, key) = pki();
    let port = tls_front(mock.addr, cert, key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();

    let https = format!("https://localhost:{port}");
    let with_ca = Config::new().provider("openai", Kind::OpenAi, &https).with(&format!("ca_file: \"{}\"", ca_path.display())).build();
    let mg = Modelgate::start(&with_ca);
    let client = reqwest::Client::new();
    let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&json!({"model": "gpt-4o-mini", "messages": []})).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", mg.stderr());
    assert_eq!(mock.last().headers["host"], format!("localhost:{port}"));
    let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&json!({"model": "gpt-4o-mini", "stream": true})).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("[DONE]"));

    // Without the CA the certificate is not trusted: a clear 502, no request.
    let calls = mock.calls();
    let without_ca = Config::new().provider("openai", Kind::OpenAi, &https).build();
    let mg = Modelgate::start(&without_ca);
    let r = client.post(format!("{}/v1/chat/completions", mg.gateway)).json(&json!({"model": "gpt-4o-mini"})).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(mock.calls(), calls);
}
