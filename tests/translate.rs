//! Cross-dialect fallback through the release binary: the seed's chain
//! gpt-4o → claude-3-5-haiku → gpt-4o-mini, with the OpenAI provider failing.

mod common;

use common::{Config, Kind, Mock, Modelgate, Script};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_openai_model_falls_back_to_claude_in_the_clients_dialect() {
    let openai = Mock::start().await;
    let anthropic = Mock::start().await;
    let conf = Config::new()
        .raw("retry: { max_attempts: 1 }")
        .provider("openai", Kind::OpenAi, &openai)
        .provider("anthropic", Kind::Anthropic, &anthropic)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .fallbacks(["claude-3-5-haiku", "gpt-4o-mini"])
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .model("claude-3-5-haiku", "anthropic")
        .id("claude-3-5-haiku-20241022")
        .prices(0.8, 4.0)
        .with("max_output_tokens: 8192");
    let mg = Modelgate::start(&conf.build());
    let client = reqwest::Client::new();
    for stream in [false, true] {
        openai.script([Script::Status(503)]);
        let r = client
            .post(format!("{}/v1/chat/completions", mg.gateway))
            .json(&json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-model"], "claude-3-5-haiku");
        assert_eq!(r.headers()["x-modelgate-attempts"], "2");
        let text = r.text().await.unwrap();
        if stream {
            assert!(text.contains("\"content\":\"Hello\"") && text.ends_with("data: [DONE]\n\n"), "{text}");
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["object"], "chat.completion");
            assert_eq!(v["choices"][0]["message"]["content"], "Hello from the mock");
            assert_eq!(v["usage"]["prompt_tokens"], 1200);
        }
        let sent = anthropic.last().json();
        assert_eq!((sent["model"].as_str(), sent["max_tokens"].as_u64()), (Some("claude-3-5-haiku-20241022"), Some(8192)));
    }
    // Cost is Claude's, on Claude's usage: 1000 × 0.8 + 200 × 0.8 + 300 × 4 per Mtok.
    let log = mg.wait_access_log(2);
    let cost = log[0]["cost_usd"].as_f64().unwrap();
    assert!((cost - (1200.0 * 0.8 + 300.0 * 4.0) / 1e6).abs() < 1e-12, "{cost}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gemini_client_falls_back_across_dialects_and_curl_gets_gemini_errors() {
    let mock = Mock::start().await;
    let conf = Config::new()
        .raw("retry: { max_attempts: 1 }")
        .provider("openai", Kind::OpenAi, &mock)
        .provider("gemini", Kind::Gemini, &mock)
        .model("gemini-pro", "gemini")
        .id("gemini-2.5-pro")
        .prices(1.25, 10.0)
        .fallbacks(["gpt-4o-mini"])
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6);
    let mg = Modelgate::start(&conf.build());
    let client = reqwest::Client::new();
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 50}});
    for (method, query) in [("generateContent", ""), ("streamGenerateContent", "?alt=sse")] {
        mock.script([Script::Status(503)]);
        let r = client.post(format!("{}/gemini/v1beta/models/gemini-pro:{method}{query}", mg.gateway)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!((r.headers()["x-modelgate-model"].to_str().unwrap(), r.headers()["x-modelgate-attempts"].to_str().unwrap()), ("gpt-4o-mini", "2"));
        let text = r.text().await.unwrap();
        let chunks: Vec<Value> = if query.is_empty() {
            vec![serde_json::from_str(&text).unwrap()]
        } else {
            text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect()
        };
        let joined: String = chunks
            .iter()
            .flat_map(|c| c["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["text"].as_str().map(String::from))
            .collect();
        assert_eq!(joined, "Hello from the mock", "{text}");
        let last = chunks.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["promptTokenCount"], 1200);
        // The Gemini attempt, then the OpenAI one with the request translated.
        let reqs = mock.requests();
        let (first, second) = (&reqs[reqs.len() - 2], &reqs[reqs.len() - 1]);
        assert_eq!(first.path, format!("/v1beta/models/gemini-2.5-pro:{method}{query}"));
        assert_eq!(second.path, "/v1/chat/completions");
        assert_eq!((second.json()["model"].as_str(), second.json()["max_tokens"].as_u64()), (Some("gpt-4o-mini"), Some(50)));
    }
    // Errors in Google's shape: modelgate's own (an untranslatable field) and a provider's (every attempt fails).
    let out = std::process::Command::new("curl")
        .args(["-sS", "-H", "content-type: application/json", "-d", r#"{"contents":[{"parts":[{"text":"hi"}]}],"cachedContent":"cachedContents/x"}"#])
        .arg(format!("{}/gemini/v1beta/models/gpt-4o-mini:generateContent", mg.gateway))
        .output()
        .unwrap();
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((e["error"]["code"].as_u64(), e["error"]["status"].as_str()), (Some(400), Some("INVALID_ARGUMENT")));
    assert!(e["error"]["message"].as_str().unwrap().contains("cachedContent"), "{e}");
    mock.script([Script::Status(429), Script::Status(429)]);
    let r = client.post(format!("{}/gemini/v1beta/models/gemini-pro:generateContent", mg.gateway)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["status"], "RESOURCE_EXHAUSTED");
}
