//! A finished request → its spans: the SERVER span of the request (parent:
//! the client's span when it sent `traceparent`) and a CLIENT span per
//! upstream try, named and attributed after the OpenTelemetry GenAI
//! semantic conventions, plus `modelgate.*` attributes. Only what the
//! access log holds goes in: never prompt or completion text.

use std::borrow::Cow;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::{Finished, Try};
use crate::dialect::Dialect;

/// `gen_ai.operation.name` of a client API (`accesslog::Record::api`).
pub fn operation(api: &str) -> &'static str {
    match api {
        "chat_completions" | "messages" | "responses" => "chat",
        "generate_content" => "generate_content",
        "completions" => "text_completion",
        "embeddings" => "embeddings",
        _ => "other",
    }
}

/// `gen_ai.provider.name` (and the older `gen_ai.system`) of a dialect.
pub fn provider_name(d: Dialect) -> &'static str {
    match d {
        Dialect::OpenAi => "openai",
        Dialect::Anthropic => "anthropic",
        Dialect::Gemini => "gcp.gemini",
    }
}

/// The spans of `f`: the request's first, then its tries in order.
pub fn build(f: Finished, scope: &InstrumentationScope) -> Vec<SpanData> {
    let Finished { trace, mut rec, started, upstream_end, now, now_wall } = f;
    // Strings the tries do not read are moved into the request span.
    let take = std::mem::take::<String>;
    let wall = |t: Instant| now_wall.checked_sub(now.saturating_duration_since(t)).unwrap_or(now_wall);
    let op = operation(rec.api);
    let ctx = |span: SpanId| SpanContext::new(trace.trace_id, span, TraceFlags::SAMPLED, false, TraceState::default());
    let served = trace.tries.iter().rposition(|t| t.error.is_none());
    let mut out = Vec::with_capacity(1 + trace.tries.len());

    // The request.
    let mut a = Vec::with_capacity(32);
    a.push(KeyValue::new("gen_ai.operation.name", op));
    if let Some(last) = trace.tries.last() {
        a.push(KeyValue::new("gen_ai.provider.name", provider_name(last.kind)));
        a.push(KeyValue::new("gen_ai.system", provider_name(last.kind)));
    }
    let name = match &rec.requested_model {
        Some(m) => format!("{op} {m}"),
        None => op.to_string(),
    };
    if let Some(m) = rec.requested_model.take() {
        a.push(KeyValue::new("gen_ai.request.model", m));
    }
    if let Some(m) = rec.model.take() {
        a.push(KeyValue::new("gen_ai.response.model", m));
    }
    usage(&mut a, &rec);
    finish_reasons(&mut a, &trace.finish_reasons);
    a.push(KeyValue::new("http.request.method", take(&mut rec.method)));
    a.push(KeyValue::new("url.path", take(&mut rec.path)));
    a.push(KeyValue::new("http.response.status_code", i64::from(rec.status)));
    let error_type = rec.error.clone().or_else(|| (rec.status >= 400).then(|| rec.status.to_string()));
    if let Some(e) = &error_type {
        a.push(KeyValue::new("error.type", e.clone()));
    }
    a.push(KeyValue::new("modelgate.route", take(&mut rec.route)));
    a.push(KeyValue::new("modelgate.mode", rec.mode));
    a.push(KeyValue::new("modelgate.app", take(&mut rec.app)));
    if let Some(t) = rec.task.take() {
        a.push(KeyValue::new("modelgate.task", t));
    }
    if let Some(c) = rec.complexity {
        a.push(KeyValue::new("modelgate.complexity", i64::from(c)));
    }
    if let Some(arm) = rec.arm.take() {
        a.push(KeyValue::new("modelgate.arm", arm));
    }
    if let Some(s) = rec.shadow_model.take() {
        a.push(KeyValue::new("modelgate.shadow_model", s));
    }
    if let Some(p) = rec.provider.take() {
        a.push(KeyValue::new("modelgate.provider", p));
    }
    a.push(KeyValue::new("modelgate.dialect", rec.dialect));
    a.push(KeyValue::new("modelgate.stream", rec.stream));
    a.push(KeyValue::new("modelgate.attempts", rec.attempts as i64));
    if let Some(c) = rec.cost_usd {
        a.push(KeyValue::new("modelgate.cost_usd", c));
    }
    if let Some(r) = trace.fallback {
        a.push(KeyValue::new("modelgate.fallback_reason", r));
    }
    let budget = match (rec.downgraded_by.take(), rec.error.as_deref()) {
        (Some(b), _) => Some(("downgrade", Some(b))),
        (None, Some("budget_exceeded")) => Some(("refuse", None)),
        _ => None,
    };
    if let Some((decision, by)) = budget {
        a.push(KeyValue::new("modelgate.budget.decision", decision));
        if let Some(b) = by {
            a.push(KeyValue::new("modelgate.budget.name", b));
        }
    }
    if let Some(n) = rec.est_input_tokens {
        a.push(KeyValue::new("modelgate.estimated_input_tokens", n as i64));
    }
    if let Some(c) = rec.cache {
        a.push(KeyValue::new("modelgate.cache", c));
    }
    if let Some(usd) = rec.cache_saved_usd {
        a.push(KeyValue::new("modelgate.cache_saved_usd", usd));
    }
    out.push(SpanData {
        span_context: ctx(trace.span_id),
        parent_span_id: trace.parent.unwrap_or(SpanId::INVALID),
        parent_span_is_remote: trace.parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(name),
        start_time: wall(started),
        end_time: now_wall,
        attributes: a,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match &error_type {
            Some(e) if rec.status >= 500 || rec.status == 0 || rec.status == 499 => Status::error(e.clone()),
            _ => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    });

    // The tries.
    for (i, t) in trace.tries.iter().enumerate() {
        let end = t.ended.or(upstream_end).unwrap_or(now);
        out.push(try_span(
            t,
            i,
            (Some(i) == served).then_some(&trace.finish_reasons[..]),
            &rec,
            op,
            ctx(t.span_id),
            trace.span_id,
            wall(t.started),
            wall(end),
            scope,
        ));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn try_span(
    t: &Try,
    i: usize,
    // The serving try: its answer's finish reasons.
    served: Option<&[String]>,
    rec: &crate::accesslog::Record,
    op: &'static str,
    ctx: SpanContext,
    parent: SpanId,
    start: SystemTime,
    end: SystemTime,
    scope: &InstrumentationScope,
) -> SpanData {
    let mut a = Vec::with_capacity(20);
    a.push(KeyValue::new("gen_ai.operation.name", op));
    a.push(KeyValue::new("gen_ai.provider.name", provider_name(t.kind)));
    a.push(KeyValue::new("gen_ai.system", provider_name(t.kind)));
    let sent = t.model_id.clone().unwrap_or_else(|| t.model.clone());
    a.push(KeyValue::new("gen_ai.request.model", sent.clone()));
    a.push(KeyValue::new("server.address", t.host.clone()));
    a.push(KeyValue::new("server.port", i64::from(t.port)));
    if let Some(s) = t.status {
        a.push(KeyValue::new("http.response.status_code", i64::from(s)));
    }
    let error_type = t.error.map(str::to_string).or_else(|| t.status.filter(|s| *s >= 400).map(|s| s.to_string()));
    if let Some(e) = &error_type {
        a.push(KeyValue::new("error.type", e.clone()));
    }
    a.push(KeyValue::new("modelgate.model", t.model.clone()));
    a.push(KeyValue::new("modelgate.provider", t.provider.clone()));
    a.push(KeyValue::new("modelgate.attempt", (i + 1) as i64));
    if let Some(r) = t.fallback {
        a.push(KeyValue::new("modelgate.fallback_reason", r));
    }
    if let Some(reasons) = served {
        a.push(KeyValue::new("gen_ai.response.model", sent.clone()));
        usage(&mut a, rec);
        finish_reasons(&mut a, reasons);
        if let Some(c) = rec.cost_usd {
            a.push(KeyValue::new("modelgate.cost_usd", c));
        }
        if let Some(e) = &rec.error {
            // The served try broke off while relaying (e.g. a stream cut).
            a.push(KeyValue::new("modelgate.relay_error", e.clone()));
        }
    }
    SpanData {
        span_context: ctx,
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: Cow::Owned(format!("{op} {sent}")),
        start_time: start,
        end_time: end,
        attributes: a,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match error_type {
            Some(e) => Status::error(e),
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}

/// `gen_ai.response.finish_reasons`, when the answer said.
fn finish_reasons(a: &mut Vec<KeyValue>, reasons: &[String]) {
    if !reasons.is_empty() {
        let list = reasons.iter().map(|r| opentelemetry::StringValue::from(r.clone())).collect();
        a.push(KeyValue::new("gen_ai.response.finish_reasons", opentelemetry::Value::Array(opentelemetry::Array::String(list))));
    }
}

/// Token counts (when the request was a model call that was answered).
fn usage(a: &mut Vec<KeyValue>, rec: &crate::accesslog::Record) {
    if rec.input_tokens == 0 && rec.output_tokens == 0 && !rec.usage_reported {
        return;
    }
    // The conventions count every input token, cached ones included
    // (modelgate's `input_tokens` is the uncached part).
    let input = rec.input_tokens + rec.cached_input_tokens + rec.cache_write_tokens;
    a.push(KeyValue::new("gen_ai.usage.input_tokens", input as i64));
    a.push(KeyValue::new("gen_ai.usage.output_tokens", rec.output_tokens as i64));
    if rec.cached_input_tokens > 0 {
        a.push(KeyValue::new("gen_ai.usage.cache_read.input_tokens", rec.cached_input_tokens as i64));
    }
    if rec.cache_write_tokens > 0 {
        a.push(KeyValue::new("gen_ai.usage.cache_creation.input_tokens", rec.cache_write_tokens as i64));
    }
    a.push(KeyValue::new("modelgate.usage_reported", rec.usage_reported));
}
