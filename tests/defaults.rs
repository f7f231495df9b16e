//! The shipped default config (conf/modelgate.yaml, also the built-in
//! defaults) changes nothing until the user opts in: every model it names,
//! requested directly, reaches its own provider with its own id, once; a
//! dated id goes upstream as the client wrote it, priced as its model; a
//! 429 or 500 comes back as the provider sent it, without a retry or a
//! fallback.

mod common;

use common::{Mock, Modelgate, Script};
use serde_json::{json, Value};

/// conf/modelgate.yaml with every provider pointed at its mock, and
/// without the keys the harness writes itself (listen, state_dir,
/// access_log).
fn default_config(openai: &Mock, anthropic: &Mock, gemini: &Mock, ollama: &Mock) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/modelgate.yaml")).unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let top = !line.starts_with([' ', '#']) && !line.is_empty();
        if top {
            skipping = ["listen:", "state_dir:", "access_log:"].iter().any(|k| line.starts_with(k));
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    let swaps = [
        ("https://api.openai.com/v1", format!("{}/v1", openai.url())),
        ("https://api.anthropic.com", anthropic.url()),
        ("https://generativelanguage.googleapis.com/v1beta", format!("{}/v1beta", gemini.url())),
        ("http://127.0.0.1:11434/v1", format!("{}/v1", ollama.url())),
    ];
    for (from, to) in swaps {
        assert!(out.contains(from), "conf/modelgate.yaml no longer has {from}");
        out = out.replace(from, &to);
    }
    out
}

/// The models of conf/modelgate.yaml: (name, provider, upstream id).
fn default_models() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/modelgate.yaml")).unwrap();
    let text = text.replace("${STATE_DIRECTORY:-./data}", "./data");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["models"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().unwrap().to_string();
            let id = v["id"].as_str().map(String::from).unwrap_or_else(|| name.clone());
            (name, v["provider"].as_str().unwrap().to_string(), id)
        })
        .collect()
}

/// A one-message request for `model` in the dialect of `provider`: (path, body).
fn request(provider: &str, model: &str) -> (String, Value) {
    match provider {
        "anthropic" => ("/anthropic/v1/messages".into(), json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})),
        "gemini" => (format!("/gemini/v1beta/models/{model}:generateContent"), json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})),
        _ => ("/v1/chat/completions".into(), json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})),
    }
}

/// The model a recorded call asked for (the body's, or Gemini's in the path).
fn upstream_model(r: &common::mock::Recorded) -> String {
    match r.json()["model"].as_str() {
        Some(m) => m.to_string(),
        None => r.path.split("/models/").nth(1).and_then(|p| p.split(':').next()).unwrap_or("").to_string(),
    }
}

struct Mocks {
    openai: Mock,
    anthropic: Mock,
    gemini: Mock,
    ollama: Mock,
}

impl Mocks {
    async fn start() -> Mocks {
        Mocks { openai: Mock::start().await, anthropic: Mock::start().await, gemini: Mock::start().await, ollama: Mock::start().await }
    }

    fn of(&self, provider: &str) -> &Mock {
        match provider {
            "openai" => &self.openai,
            "anthropic" => &self.anthropic,
            "gemini" => &self.gemini,
            "ollama" => &self.ollama,
            p => panic!("conf/modelgate.yaml has a provider this test does not know: {p}"),
        }
    }

    fn calls(&self) -> usize {
        self.openai.calls() + self.anthropic.calls() + self.gemini.calls() + self.ollama.calls()
    }

    fn start_modelgate(&self) -> Modelgate {
        Modelgate::start(&default_config(&self.openai, &self.anthropic, &self.gemini, &self.ollama))
    }
}

async fn post(mg: &Modelgate, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", mg.gateway))
        .header("authorization", "Bearer sk-client")
        .header("x-api-key", "sk-ant-client")
        .header("x-goog-api-key", "goog-client")
        .json(body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Regression (issue 17 item 4): the shipped config swapped gpt-4o,
/// claude-opus-4-1 and claude-sonnet-4-5 for other models on failure, and
/// its Gemini provider required GEMINI_API_KEY despite "no API key needed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_default_model_reaches_its_own_provider_with_its_own_id() {
    let mocks = Mocks::start().await;
    let mg = mocks.start_modelgate();
    let models = default_models();
    assert!(models.len() >= 8, "{models:?}");
    for (name, provider, id) in &models {
        let before = mocks.calls();
        let mock = mocks.of(provider);
        let own_before = mock.calls();
        let (path, body) = request(provider, name);
        let (status, headers, answer) = post(&mg, &path, &body).await;
        assert_eq!(status, 200, "{name}: {answer}\n{}", mg.stderr());
        assert_eq!(mocks.calls(), before + 1, "{name}: exactly one upstream call");
        assert_eq!(mock.calls(), own_before + 1, "{name} reached provider {provider}");
        let got = mock.last();
        assert_eq!(upstream_model(&got), *id, "{name} goes upstream as its id");
        assert_eq!(headers["x-modelgate-model"], name.as_str());
        assert_eq!(headers["x-modelgate-attempts"], "1");
        assert_eq!(headers["x-modelgate-route"], "none");
        // The client's own key, unchanged (no key in modelgate's environment).
        let key = match provider.as_str() {
            "anthropic" => got.headers.get("x-api-key"),
            "gemini" => got.headers.get("x-goog-api-key"),
            _ => got.headers.get("authorization"),
        };
        assert!(key.is_some(), "{name}: the client's key reached {provider}");
    }
}

/// Dated ids and unconfigured models go upstream exactly as written; dated
/// ids are priced as the model they are a version of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dated_and_unknown_ids_go_upstream_unchanged() {
    let mocks = Mocks::start().await;
    let mg = mocks.start_modelgate();
    for (provider, asked, served) in [
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("gemini", "gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("ollama", "llama3.1:8b-instruct-q4_K_M", "llama3-8b"),
    ] {
        let (path, body) = request(if provider == "ollama" { "openai" } else { provider }, asked);
        let (status, headers, answer) = post(&mg, &path, &body).await;
        assert_eq!(status, 200, "{asked}: {answer}");
        assert_eq!(upstream_model(&mocks.of(provider).last()), asked);
        assert_eq!(headers["x-modelgate-model"], served, "{asked} is priced and reported as {served}");
        assert!(headers.get("x-modelgate-cost-usd").is_some(), "{asked} is priced");
    }
    let (status, headers, _) = post(&mg, "/v1/chat/completions", &json!({"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 200);
    assert_eq!(upstream_model(&mocks.openai.last()), "gpt-4.1-nano");
    assert_eq!(headers["x-modelgate-model"], "gpt-4.1-nano");
}

/// Regression (issue 17 item 4): a 429 on gpt-4o was retried and then
/// answered by gpt-4o-mini; a 500 likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_comes_back_as_the_providers_429_after_one_call() {
    let mocks = Mocks::start().await;
    let mg = mocks.start_modelgate();
    for (model, provider) in [("gpt-4o", "openai"), ("claude-opus-4-1", "anthropic"), ("claude-sonnet-4-5", "anthropic")] {
        for status in [429, 500, 503] {
            let before = mocks.calls();
            mocks.of(provider).script([Script::StatusRetryAfter(status, 1)]);
            let (path, body) = request(provider, model);
            let (got, headers, answer) = post(&mg, &path, &body).await;
            assert_eq!(got, status, "{model}: {answer}");
            assert_eq!(mocks.calls(), before + 1, "{model} {status}: one call, no retry, no fallback");
            assert_eq!(headers["retry-after"], "1", "the provider's own headers come back");
            // The provider's own error body, not one modelgate wrote.
            let text = answer.to_string();
            assert!(!text.contains("tried:"), "{text}");
        }
    }
}
