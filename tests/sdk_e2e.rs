//! The official `openai`, `anthropic` and `google-genai` Python SDKs against the release
//! binary (tests/sdk/sdk_e2e.py holds the client side). The SDKs live in the
//! repo's `.venv`, which `scripts/test` creates.

mod common;

use common::{standard, Config, Kind, Mock, Modelgate};

/// Run `tests/sdk/<script>` against `mg`; fails the test if it fails.
async fn run_script(script: &str, mg: &Modelgate) -> String {
    run_script_with(script, mg, &[]).await
}

async fn run_script_with(script: &str, mg: &Modelgate, env: &[(&str, &str)]) -> String {
    common::run_python(script, mg, env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_through_modelgate() {
    let mock = Mock::start().await;
    let mg = Modelgate::start(&standard(&mock).raw("max_body_bytes: 2097152").build());
    assert!(run_script("sdk_e2e.py", &mg).await.contains("all SDK checks passed"));

    // What the provider received: the routed models, never the requested ones.
    let models: Vec<String> = mock.requests().iter().filter_map(|r| r.json()["model"].as_str().map(String::from)).collect();
    assert!(!models.is_empty());
    assert!(models.iter().all(|m| m == "gpt-4o-mini" || m == "claude-haiku-4-5-20251001"), "{models:?}");
    assert!(mock.requests().iter().any(|r| r.headers.get("user-agent").is_some_and(|ua| ua.to_str().unwrap_or("").starts_with("Anthropic/Python"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_see_routing_decisions() {
    let mock = Mock::start().await;
    let local = Mock::start().await;
    let conf = Config::openai_anthropic(&mock)
        .provider("ollama", Kind::OpenAi, &local)
        .with("local: true")
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .with("quality: 2")
        .model("mid", "openai")
        .prices(0.8, 4.0)
        .with("quality: 3")
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .with("quality: 4")
        .model("claude-haiku", "anthropic")
        .prices(1.0, 5.0)
        .model("llama", "ollama")
        .prices(0.0, 0.0)
        .with("context_tokens: 4096, quality: 1")
        .route("name: hr, match: { app: hr }, target: gpt-4o-mini, fallbacks: [llama], mode: local-only")
        .tiers("by-complexity", "gpt-4o*", [(3, "gpt-4o-mini"), (7, "mid"), (10, "gpt-4o")])
        .raw("routing:\n  client_models: [\"gpt-4o\"]")
        .build();
    let mg = Modelgate::start(&conf);
    assert!(run_script("sdk_routing.py", &mg).await.contains("all SDK routing checks passed"));
    // The local-only app's requests reached only the local provider.
    assert_eq!(local.calls(), 1);
    assert!(mock.requests().iter().all(|r| r.json()["messages"][0]["content"] != "summarise my leave policy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_see_budget_refusals_and_downgrades() {
    let mock = Mock::start().await;
    let conf = Config::openai_anthropic(&mock)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .model("claude-haiku", "anthropic")
        .prices(1.0, 5.0)
        .raw(
            r#"budgets:
  - { name: trial-app, scope: { app: trial }, window: day, limit_requests: 2 }
  - { name: trial-a-app, scope: { app: trial-a }, window: day, limit_requests: 1 }
  - { name: frugal-gpt-4o, scope: { app: frugal, model: gpt-4o }, window: day, limit_requests: 1, on_exceed: downgrade, downgrade_to: gpt-4o-mini }
"#,
        )
        .build();
    let mg = Modelgate::start(&conf);
    assert!(run_script("sdk_budget.py", &mg).await.contains("all SDK budget checks passed"));
    // Refused requests never reached the provider: 2 + 1 + 2 served.
    assert_eq!(mock.calls(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_are_served_by_models_of_the_other_dialect() {
    let mock = Mock::start().await;
    let conf = Config::openai_anthropic(&mock)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .model("claude-haiku", "anthropic")
        .id("claude-haiku-4-5-20251001")
        .prices(1.0, 5.0)
        .build();
    let mg = Modelgate::start(&conf);
    assert!(run_script("sdk_translate.py", &mg).await.contains("all SDK translation checks passed"));
    let reqs = mock.requests();
    // The openai SDK's tool-result turn reached Anthropic as tool_use / tool_result blocks.
    let to_anthropic: Vec<serde_json::Value> = reqs.iter().filter(|r| r.path == "/v1/messages").map(|r| r.json()).collect();
    assert!(to_anthropic.iter().all(|b| b["model"] == "claude-haiku-4-5-20251001" && b["max_tokens"].as_u64().is_some()));
    assert!(
        to_anthropic.iter().any(|b| b["messages"][1]["content"][0]["type"] == "tool_use" && b["messages"][2]["content"][0]["type"] == "tool_result"),
        "{to_anthropic:?}"
    );
    assert!(reqs.iter().filter(|r| r.path == "/v1/messages").all(|r| r.headers.get("anthropic-version").is_some()));
    // The anthropic SDK's system prompt and tools reached OpenAI in its shape.
    let to_openai: Vec<serde_json::Value> = reqs.iter().filter(|r| r.path == "/v1/chat/completions").map(|r| r.json()).collect();
    assert!(to_openai.iter().any(|b| b["messages"][0] == serde_json::json!({"role": "system", "content": "Be brief."})));
    assert!(to_openai.iter().any(|b| b["tools"][0]["function"]["name"] == "get_weather"));
    assert!(to_openai.iter().any(|b| b["messages"].as_array().unwrap().iter().any(|m| m["role"] == "tool" && m["tool_call_id"] == "call_mock1")));
    // Cost is computed on the provider's usage: the access log has it.
    let log = mg.wait_access_log(1);
    assert!(log.iter().filter(|r| r["provider"] == "anthropic" && r["status"] == 200).all(|r| r["input_tokens"] == 1000 && r["output_tokens"] == 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_sdk_through_modelgate() {
    let mock = Mock::start().await;
    let conf = Config::openai_anthropic(&mock)
        .provider("gemini", Kind::Gemini, &mock)
        .model("gemini-flash", "gemini")
        .id("gemini-2.5-flash")
        .prices(0.3, 2.5)
        .cached(0.075)
        .model("gpt-4o-mini", "openai")
        .prices(0.15, 0.6)
        .model("claude-haiku", "anthropic")
        .id("claude-haiku-4-5-20251001")
        .prices(1.0, 5.0)
        .build();
    let mg = Modelgate::start(&conf);
    assert!(run_script("sdk_gemini.py", &mg).await.contains("all gemini SDK checks passed"));

    // What the providers received: the routed model ids, each in its own dialect.
    let reqs = mock.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert!(paths.iter().any(|p| p.starts_with("/v1beta/models/gemini-2.5-flash:generateContent")), "{paths:?}");
    assert!(paths.contains(&"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"), "{paths:?}");
    assert!(reqs.iter().any(|r| r.path == "/v1/chat/completions" && r.json()["model"] == "gpt-4o-mini"), "{paths:?}");
    assert!(reqs.iter().any(|r| r.path == "/v1/messages" && r.json()["model"] == "claude-haiku-4-5-20251001"), "{paths:?}");
    let to_gemini: Vec<_> = reqs.iter().filter(|r| r.path.starts_with("/v1beta/")).collect();
    assert!(to_gemini.iter().all(|r| r.headers.get("x-goog-api-key").is_some()), "a Gemini request without x-goog-api-key");
    // Gemini names the model in the path only: a body with `model` would be refused.
    assert!(to_gemini.iter().all(|r| r.json().get("model").is_none() && r.json()["contents"].is_array()));
    // The openai SDK's tools reached Gemini as function declarations.
    assert!(to_gemini.iter().any(|r| r.json()["tools"][0]["functionDeclarations"][0]["name"] == "get_weather" && r.headers.get("authorization").is_none()));
    // Cost on Gemini's own usage, whatever the client's dialect: 1000 input
    // + 200 cached + 300 output at gemini-flash prices.
    let log = mg.wait_access_log(1);
    let served: Vec<_> = log.iter().filter(|r| r["model"] == "gemini-flash" && r["status"] == 200).collect();
    assert!(
        served.iter().any(|r| r["dialect"] == "openai")
            && served.iter().any(|r| r["dialect"] == "anthropic")
            && served.iter().any(|r| r["dialect"] == "gemini")
    );
    for r in served {
        assert_eq!((r["input_tokens"].as_u64(), r["cached_input_tokens"].as_u64(), r["output_tokens"].as_u64()), (Some(1000), Some(200), Some(300)), "{r}");
        assert!((r["cost_usd"].as_f64().unwrap() - 0.001065).abs() < 1e-9, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_see_fallbacks_and_broken_streams() {
    let primary = Mock::start().await;
    let fallback = Mock::start().await;
    let conf = Config::new()
        .raw("retry: { max_attempts: 1 }")
        // The mocks take any key: the client's may follow a fallback to another provider.
        .raw("cross_provider_client_keys: true")
        .provider("openai", Kind::OpenAi, &primary)
        .provider("anthropic", Kind::Anthropic, &primary)
        .provider("openai-fb", Kind::OpenAi, &fallback)
        .provider("anthropic-fb", Kind::Anthropic, &fallback)
        .model("gpt-4o", "openai")
        .prices(2.5, 10.0)
        .fallbacks(["claude-haiku"])
        .model("claude-sonnet", "anthropic")
        .id("claude-sonnet-4-5")
        .prices(3.0, 15.0)
        .fallbacks(["gpt-4o-mini"])
        .model("gpt-4o-mini", "openai-fb")
        .prices(0.15, 0.6)
        .model("claude-haiku", "anthropic-fb")
        .id("claude-haiku-4-5-20251001")
        .prices(1.0, 5.0)
        .build();
    let mg = Modelgate::start(&conf);
    assert!(run_script("sdk_fallback.py", &mg).await.contains("all SDK fallback checks passed"));

    // The primary got every call once: two 503s and a cut (gpt-4o), a 529
    // and two cuts (claude-sonnet). The fallback served the 503s and the
    // 529, each in its own dialect, and none of the cut streams.
    assert_eq!(primary.calls(), 6);
    let served: Vec<(String, String)> = fallback.requests().iter().map(|r| (r.path.clone(), r.json()["model"].as_str().unwrap_or("").to_string())).collect();
    let count = |path: &str, model: &str| served.iter().filter(|(p, m)| p == path && m == model).count();
    assert_eq!((served.len(), count("/v1/messages", "claude-haiku-4-5-20251001"), count("/v1/chat/completions", "gpt-4o-mini")), (3, 2, 1), "{served:?}");
    assert!(common::metric_sum(&mg.metrics(), "modelgate_stream_errors_total", &[]) >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_in_transparent_mode() {
    let mock = Mock::start().await;
    // tunnel: false — a host modelgate failed to intercept is refused, never
    // reached; every intercepted host is served by the local mock.
    // The anthropic client is also served by an OpenAI model: the mock takes
    // its key, so the config says the key may go there.
    let conf = common::transparent_config(&mock, "  intercept: [api.openai.com, api.anthropic.com]\n  tunnel: false");
    let mg = Modelgate::start(&format!("cross_provider_client_keys: true\n{conf}"));
    let proxy = mg.forward.clone().unwrap();
    let ca = mg.dir.path().join("state/ca/ca.pem");
    let env = [("HTTPS_PROXY", proxy.as_str()), ("SSL_CERT_FILE", ca.to_str().unwrap()), ("NO_PROXY", ""), ("no_proxy", "")];
    assert!(run_script_with("sdk_transparent.py", &mg, &env).await.contains("all transparent-mode SDK checks passed"));
    // The provider saw the routed model and the app's own keys (anthropic 2.x sends its key as a bearer token).
    let reqs = mock.requests();
    let header = |r: &common::mock::Recorded, h: &str| r.headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let seen: Vec<(String, String, String)> = reqs.iter().map(|r| (r.path.clone(), header(r, "authorization"), header(r, "x-api-key"))).collect();
    assert!(
        reqs.iter().any(|r| r.path == "/v1/chat/completions" && r.json()["model"] == "gpt-4o-mini" && header(r, "authorization") == "Bearer sk-app-key"),
        "{seen:?}"
    );
    assert!(
        reqs.iter().any(|r| r.path == "/v1/messages"
            && r.json()["model"] == "claude-haiku-4-5-20251001"
            && (header(r, "x-api-key") == "sk-ant-app-key" || header(r, "authorization") == "Bearer sk-ant-app-key")),
        "{seen:?}"
    );
    assert!(reqs.iter().all(|r| r.json().get("model").is_none_or(|m| m != "gpt-4o")), "the requested model never reached the provider");
}
