//! `/admin/keys`: list the virtual keys (names and hash prefixes, never a
//! key), create one (`POST`, the key is in the answer once and stored
//! hashed), revoke one (`DELETE /admin/keys/NAME`). Creating and revoking
//! need the admin token; listing is read-only.

use http::{Method, StatusCode};
use pingora::protocols::http::ServerSession;
use serde_json::json;

use super::{error, json_reply, read_body, Admin, Reply};
use crate::config::{Snapshot, VirtualKey};
use crate::keys::NewKey;

fn describe(snap: &Snapshot, k: &VirtualKey, revoked: bool, now: i64) -> serde_json::Value {
    let at = |t: Option<i64>| t.and_then(|t| jiff::Timestamp::from_second(t).ok()).map(|t| t.to_string());
    let state = if revoked {
        "revoked"
    } else if k.expired(now) {
        "expired"
    } else {
        "active"
    };
    json!({
        "name": k.name,
        "hash_prefix": k.hash_prefix(),
        "source": k.source.as_str(),
        "app": k.app,
        "user": k.user,
        "models": k.models,
        "routes": k.routes,
        "rpm": k.limits.rpm,
        "tpm": k.limits.tpm,
        "budgets": snap.budgets.iter().chain(&k.budgets).filter(|b| b.scope.key.as_deref() == Some(k.name.as_str())).map(|b| json!({
            "name": b.name,
            "window": b.window.as_str(),
            "limit_usd": b.limits.nanos.map(crate::budget::amount::usd),
            "limit_tokens": b.limits.tokens,
            "limit_requests": b.limits.requests,
            "on_exceed": b.on_exceed.as_str(),
        })).collect::<Vec<_>>(),
        "expires_at": at(k.expires_at),
        "created_at": at(k.created_at),
        "state": state,
    })
}

impl Admin {
    pub(super) async fn keys(&self, session: &mut ServerSession, snap: &Snapshot, method: &Method, name: Option<&str>) -> Reply {
        let now = jiff::Timestamp::now().as_second();
        match (method, name) {
            (&Method::GET, None) => {
                let (runtime, revoked) = self.keys.list();
                let mut list: Vec<&VirtualKey> = snap.keys.by_hash.values().map(|k| k.as_ref()).collect();
                list.sort_by(|a, b| a.name.cmp(&b.name));
                let mut out: Vec<serde_json::Value> = list.iter().map(|k| describe(snap, k, revoked.contains(&k.hash), now)).collect();
                out.extend(runtime.iter().map(|k| describe(snap, k, revoked.contains(&k.hash), now)));
                json_reply(StatusCode::OK, json!({"auth": snap.auth.as_str(), "keys": out}))
            }
            (&Method::POST, None) => {
                if let Err(r) = self.authorize(snap, session) {
                    return r;
                }
                let body = match read_body(session, 64 * 1024).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let new: NewKey = match serde_json::from_slice(&body) {
                    Ok(n) => n,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("send a JSON body like {{\"name\": \"alice-laptop\", \"app\": \"billing\", \"user\": \"alice\", \"models\": [\"gpt-4o*\"], \"rpm\": 60, \"tpm\": 100000, \"expires_at\": \"2026-12-31\", \"budgets\": [{{\"name\": \"daily\", \"window\": \"day\", \"limit_usd\": 5}}]}} ({e})"),
                        )
                    }
                };
                match self.keys.create(snap, new).await {
                    Ok((secret, k)) => {
                        let mut v = describe(snap, &k, false, now);
                        v["key"] = json!(secret);
                        json_reply(StatusCode::CREATED, v)
                    }
                    Err((status, m)) => error(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), m),
                }
            }
            (&Method::DELETE, Some(name)) => {
                if let Err(r) = self.authorize(snap, session) {
                    return r;
                }
                match self.keys.revoke(snap, name).await {
                    Ok(prefix) => json_reply(StatusCode::OK, json!({"revoked": name, "hash_prefix": prefix})),
                    Err((status, m)) => error(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), m),
                }
            }
            (_, None) => error(StatusCode::METHOD_NOT_ALLOWED, "/admin/keys answers GET (list) and POST (create)"),
            (_, Some(_)) => error(StatusCode::METHOD_NOT_ALLOWED, "/admin/keys/NAME answers DELETE (revoke)"),
        }
    }
}
