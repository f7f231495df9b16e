//! The answer checks: what the request asked for ([`Expect`]: JSON mode,
//! a JSON schema, logprobs) and whether an answer ([`Said`]) gives it, for
//! the checks a route lists in `escalate_on`.

use serde_json::Value;

use super::answer::Said;
use crate::body::JsonBody;
use crate::config::{Check, Escalation};
use crate::translate::Wire;

/// What the request asked of its answer.
#[derive(Default)]
pub struct Expect {
    /// JSON mode (any JSON object, or a schema).
    pub json: bool,
    /// The JSON schema the answer must follow, compiled. `None` also when
    /// the client's schema could not be compiled (then only JSON is checked).
    pub schema: Option<jsonschema::Validator>,
    /// The request asked for token log-probabilities.
    pub logprobs: bool,
}

fn field(body: &JsonBody, key: &str) -> Value {
    body.field(key).and_then(|r| serde_json::from_str(r.get()).ok()).unwrap_or(Value::Null)
}

impl Expect {
    /// Read from the client's request (`client`: its wire format). Only
    /// what `esc` checks is read.
    pub fn of(client: Wire, body: &JsonBody, esc: &Escalation) -> Expect {
        let wants_json = esc.checks(Check::InvalidJson) || esc.checks(Check::SchemaMismatch) || esc.checks(Check::Truncated);
        let mut e = Expect::default();
        let mut schema = Value::Null;
        if wants_json {
            match client {
                Wire::Chat => {
                    let f = field(body, "response_format");
                    match f["type"].as_str() {
                        Some("json_object") => e.json = true,
                        Some("json_schema") => {
                            e.json = true;
                            schema = f["json_schema"]["schema"].clone();
                        }
                        _ => {}
                    }
                }
                Wire::Responses => {
                    let f = field(body, "text");
                    match f["format"]["type"].as_str() {
                        Some("json_object") => e.json = true,
                        Some("json_schema") => {
                            e.json = true;
                            schema = f["format"]["schema"].clone();
                        }
                        _ => {}
                    }
                }
                Wire::Messages => {
                    // Structured outputs: `output_format` (beta) or
                    // `output_config.format`.
                    let mut f = field(body, "output_format");
                    if f.is_null() {
                        f = field(body, "output_config")["format"].clone();
                    }
                    if f["type"] == "json_schema" {
                        e.json = true;
                        schema = f["schema"].clone();
                    }
                }
                Wire::Gemini => {
                    let g = field(body, "generationConfig");
                    let g = if g.is_null() { field(body, "generation_config") } else { g };
                    let mime = g["responseMimeType"].as_str().or(g["response_mime_type"].as_str());
                    if mime == Some("application/json") {
                        e.json = true;
                        // `responseSchema` is Gemini's OpenAPI subset, not
                        // JSON Schema: only `responseJsonSchema` is checked.
                        schema = g["responseJsonSchema"].clone();
                        if schema.is_null() {
                            schema = g["response_json_schema"].clone();
                        }
                    }
                }
            }
        }
        if esc.checks(Check::SchemaMismatch) && schema.is_object() {
            match jsonschema::validator_for(&schema) {
                Ok(v) => e.schema = Some(v),
                Err(err) => tracing::debug!(error = %err, "the request's JSON schema does not compile; the answer is checked for JSON only"),
            }
        }
        if esc.checks(Check::LowLogprob) {
            e.logprobs = match client {
                Wire::Chat => field(body, "logprobs") == Value::Bool(true),
                Wire::Responses => field(body, "include").as_array().is_some_and(|a| a.iter().any(|i| i == "message.output_text.logprobs")),
                Wire::Gemini => {
                    let g = field(body, "generationConfig");
                    g["responseLogprobs"] == true || g["response_logprobs"] == true
                }
                Wire::Messages => false,
            };
        }
        e
    }
}

/// An answer that failed a check, and what was wrong (for the log).
#[derive(Debug, PartialEq)]
pub struct Failed {
    pub check: Check,
    pub detail: String,
}

fn fail(check: Check, detail: impl Into<String>) -> Result<(), Failed> {
    Err(Failed { check, detail: detail.into() })
}

/// The answer's text as JSON, if it is JSON.
fn parsed(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text.trim())
}

/// Judge an answer by the checks `esc` lists, in this order: refusal,
/// truncated, empty, invalid_json, schema_mismatch, low_logprob (the first
/// that fails is the reason).
pub fn judge(esc: &Escalation, expect: &Expect, s: &Said) -> Result<(), Failed> {
    let blank = s.text.trim().is_empty();
    let has_tools = !s.tool_calls.is_empty();
    if esc.checks(Check::Refusal) {
        if s.refusal {
            return fail(Check::Refusal, "the provider marked the answer as a refusal");
        }
        if let Some(p) = esc.refusal_patterns.as_ref().filter(|p| p.is_match(&s.text)) {
            let which = p.matches(&s.text).into_iter().next().map(|i| p.patterns()[i].clone()).unwrap_or_default();
            return fail(Check::Refusal, format!("the answer matches the refusal pattern `{which}`"));
        }
    }
    // Text answers only: a tool call is the model's answer to a tools request.
    let json_bad = expect.json && !has_tools && parsed(&s.text).is_err();
    if esc.checks(Check::Truncated) && s.length {
        let args_bad = s.tool_calls.iter().any(|a| !a.trim().is_empty() && parsed(a).is_err());
        if (blank && !has_tools) || json_bad || args_bad {
            return fail(Check::Truncated, "the answer stopped at the output limit before it was usable");
        }
    }
    if esc.checks(Check::Empty) && blank && !has_tools && !s.refusal {
        return fail(Check::Empty, "the answer has no text and no tool call");
    }
    if esc.checks(Check::InvalidJson) && json_bad {
        let e = parsed(&s.text).err().map(|e| e.to_string()).unwrap_or_default();
        return fail(Check::InvalidJson, format!("JSON was asked for, but the answer is not JSON ({e})"));
    }
    if let (true, Some(schema)) = (esc.checks(Check::SchemaMismatch), &expect.schema) {
        if !has_tools {
            match parsed(&s.text) {
                Err(e) => return fail(Check::SchemaMismatch, format!("the answer is not JSON ({e}), so it does not follow the schema")),
                Ok(v) => {
                    if let Err(e) = schema.validate(&v) {
                        return fail(Check::SchemaMismatch, format!("the answer does not follow the schema: {e} (at `{}`)", e.instance_path()));
                    }
                }
            }
        }
    }
    if let (true, true, Some(min)) = (esc.checks(Check::LowLogprob), expect.logprobs, esc.min_avg_logprob) {
        if let Some(mean) = s.mean_logprob().filter(|m| *m < min) {
            return fail(Check::LowLogprob, format!("the answer's average token log-probability {mean:.3} is under {min}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn esc(on: &[Check]) -> Escalation {
        Escalation { on: on.to_vec(), to: vec![], max: 1, min_avg_logprob: Some(-0.5), refusal_patterns: None, streams: false }
    }

    fn body(s: &str) -> JsonBody {
        JsonBody::parse(Bytes::from(s.to_string())).unwrap()
    }

    fn said(text: &str) -> Said {
        Said { text: text.into(), ..Said::default() }
    }

    #[test]
    fn a_schema_from_the_request_is_checked() {
        let e = esc(&[Check::InvalidJson, Check::SchemaMismatch]);
        let b = body(
            r#"{"model":"m","messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"c","schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}}"#,
        );
        let x = Expect::of(Wire::Chat, &b, &e);
        assert!(x.json && x.schema.is_some());
        assert_eq!(judge(&e, &x, &said(r#"{"city": "Paris"}"#)), Ok(()));
        assert_eq!(judge(&e, &x, &said(r#"{"city": 5}"#)).unwrap_err().check, Check::SchemaMismatch);
        assert_eq!(judge(&e, &x, &said("Paris")).unwrap_err().check, Check::InvalidJson);
        // Without invalid_json listed, non-JSON fails the schema.
        let only = esc(&[Check::SchemaMismatch]);
        let x = Expect::of(Wire::Chat, &b, &only);
        assert_eq!(judge(&only, &x, &said("Paris")).unwrap_err().check, Check::SchemaMismatch);
    }

    #[test]
    fn checks_not_listed_are_not_made() {
        let e = esc(&[Check::Empty]);
        let b = body(r#"{"model":"m","messages":[],"response_format":{"type":"json_object"}}"#);
        let x = Expect::of(Wire::Chat, &b, &e);
        assert_eq!(judge(&e, &x, &said("not json")), Ok(()));
        assert_eq!(judge(&e, &x, &said("  ")).unwrap_err().check, Check::Empty);
        let refused = Said { refusal: true, ..Said::default() };
        assert_eq!(judge(&e, &x, &refused), Ok(()));
    }

    #[test]
    fn truncated_means_cut_with_nothing_usable() {
        let e = esc(&[Check::Truncated]);
        let plain = Expect::default();
        let cut_text = Said { text: "a long story that was cut".into(), length: true, ..Said::default() };
        assert_eq!(judge(&e, &plain, &cut_text), Ok(()));
        let cut_empty = Said { length: true, ..Said::default() };
        assert_eq!(judge(&e, &plain, &cut_empty).unwrap_err().check, Check::Truncated);
        let json = Expect { json: true, ..Expect::default() };
        let cut_json = Said { text: "{\"a\": [1, 2".into(), length: true, ..Said::default() };
        assert_eq!(judge(&e, &json, &cut_json).unwrap_err().check, Check::Truncated);
    }

    #[test]
    fn refusals_and_logprobs() {
        let mut e = esc(&[Check::Refusal, Check::LowLogprob]);
        e.refusal_patterns = Some(regex::RegexSet::new([r"(?i)^i'?m sorry, but i can"]).unwrap());
        let x = Expect { logprobs: true, ..Expect::default() };
        assert_eq!(judge(&e, &x, &said("I'm sorry, but I can't help with that.")).unwrap_err().check, Check::Refusal);
        let unsure = Said { text: "maybe".into(), logprob_sum: -3.0, logprob_count: 3, ..Said::default() };
        assert_eq!(judge(&e, &x, &unsure).unwrap_err().check, Check::LowLogprob);
        let sure = Said { text: "yes".into(), logprob_sum: -0.3, logprob_count: 3, ..Said::default() };
        assert_eq!(judge(&e, &x, &sure), Ok(()));
        // Not asked for: not judged.
        assert_eq!(judge(&e, &Expect::default(), &unsure), Ok(()));
    }
}
