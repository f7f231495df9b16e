//! `POST /admin/feedback`: an app rates a split-routed request by the id
//! modelgate returned in `x-modelgate-request-id` — a score from 0 to 1 or
//! thumbs up/down — so the dashboard's Experiments compare arms on quality,
//! not only cost. No admin token is needed (unless
//! `admin_read_requires_token`): the id itself, unguessable, is what lets
//! an app rate a request.

use http::StatusCode;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Map, Value};

use super::{error, json_reply, read_body, Admin, Reply};
use crate::config::Snapshot;
use crate::request_id::RequestId;
use crate::stats::feedback::Given;
use crate::stats::FeedbackError;

const EXAMPLE: &str = r#"{"request_id": "<x-modelgate-request-id>", "score": 0.8} or {"request_id": "…", "thumbs": "up"}"#;

/// The rating in a body, or what is wrong with it.
pub(super) fn parse(body: &[u8]) -> Result<(RequestId, Given), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON ({e}); send {EXAMPLE}"))?;
    let Value::Object(o) = v else { return Err(format!("send a JSON object: {EXAMPLE}")) };
    if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "request_id" | "score" | "thumbs")) {
        return Err(format!("unknown field `{k}`; send request_id and one of score (0 to 1) or thumbs (up or down), e.g. {EXAMPLE}"));
    }
    let id = match o.get("request_id") {
        None => return Err(format!("request_id is missing: send the x-modelgate-request-id header of modelgate's answer, e.g. {EXAMPLE}")),
        Some(Value::String(s)) => RequestId::parse(s.trim()).ok_or_else(|| {
            format!("request_id `{s}` is not a modelgate request id: send the 16 hex digits of the x-modelgate-request-id header modelgate returned")
        })?,
        Some(other) => return Err(format!("request_id must be a string (the x-modelgate-request-id header), not {other}")),
    };
    Ok((id, given(&o)?))
}

fn given(o: &Map<String, Value>) -> Result<Given, String> {
    match (o.get("score"), o.get("thumbs")) {
        (Some(_), Some(_)) => Err("send either score or thumbs, not both".into()),
        (None, None) => Err(format!("send a rating: score (a number from 0, bad, to 1, good) or thumbs (\"up\" or \"down\"), e.g. {EXAMPLE}")),
        (Some(s), None) => match s.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => Ok(Given::Score(x)),
            _ => Err(format!("score {s}: send a number from 0 (bad) to 1 (good), e.g. 0.8; for a 1–5 star rating send (stars − 1) / 4")),
        },
        (None, Some(t)) => match t.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("up") => Ok(Given::Thumbs(true)),
            Some("down") => Ok(Given::Thumbs(false)),
            _ => Err(format!("thumbs {t}: send \"up\" or \"down\"")),
        },
    }
}

impl Admin {
    pub(super) async fn feedback(&self, session: &mut ServerSession, snap: &Snapshot) -> Reply {
        let body = match read_body(session, 16 * 1024).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let (id, given) = match parse(&body) {
            Ok(x) => x,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        match self.stats.feedback(id, given, &snap.state_dir) {
            Ok(ack) => match serde_json::to_value(&ack) {
                Ok(Value::Object(mut m)) => {
                    m.insert("ok".into(), json!(true));
                    json_reply(StatusCode::OK, Value::Object(m))
                }
                _ => json_reply(StatusCode::OK, json!({"ok": true})),
            },
            Err(FeedbackError::Unknown) => error(
                StatusCode::NOT_FOUND,
                format!(
                    "request id {id} is not one of the split-routed requests this modelgate remembers: feedback is for requests a split route served (their answer has an x-modelgate-arm header), among the last {} of them (dashboard.feedback_requests)",
                    snap.dashboard.feedback_requests
                ),
            ),
            Err(FeedbackError::NotReady) => {
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "modelgate is still reading its ledger after the start; send the rating again in a moment");
                r.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                r
            }
            Err(FeedbackError::Store(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ratings_say_what_to_send() {
        let ok = parse(br#"{"request_id": "00000000000000ff", "score": 0.5}"#).unwrap();
        assert_eq!(ok, (RequestId(255), Given::Score(0.5)));
        assert_eq!(parse(br#"{"request_id": "00000000000000FF", "thumbs": "Down"}"#).unwrap().1, Given::Thumbs(false));
        for (body, want) in [
            (&b"nope"[..], "the body is not JSON"),
            (b"[1]", "send a JSON object"),
            (br#"{"request_id": "00000000000000ff", "score": 0.5, "comment": "x"}"#, "unknown field `comment`"),
            (br#"{"score": 0.5}"#, "request_id is missing"),
            (br#"{"request_id": "abc", "score": 0.5}"#, "request_id `abc` is not a modelgate request id"),
            (br#"{"request_id": 12, "score": 0.5}"#, "request_id must be a string"),
            (br#"{"request_id": "00000000000000ff"}"#, "send a rating"),
            (br#"{"request_id": "00000000000000ff", "score": 1, "thumbs": "up"}"#, "either score or thumbs"),
            (br#"{"request_id": "00000000000000ff", "score": 5}"#, "score 5: send a number from 0 (bad) to 1 (good)"),
            (br#"{"request_id": "00000000000000ff", "score": "good"}"#, "score \"good\""),
            (br#"{"request_id": "00000000000000ff", "thumbs": "sideways"}"#, "thumbs \"sideways\": send \"up\" or \"down\""),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(body));
        }
    }
}
