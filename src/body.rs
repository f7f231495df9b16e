//! The request body of a model call: top-level JSON fields kept as raw text,
//! so a rewrite changes exactly the fields it means to and every other byte
//! of every other field (unknown ones included) reaches upstream unchanged.

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::value::RawValue;

use crate::dialect::{ErrorKind, GatewayError};

pub struct JsonBody {
    original: Bytes,
    fields: IndexMap<String, Box<RawValue>>,
    changed: bool,
}

fn invalid(message: String) -> GatewayError {
    GatewayError::new(400, ErrorKind::InvalidRequest, "invalid_json", message)
}

impl JsonBody {
    pub fn parse(original: Bytes) -> Result<Self, GatewayError> {
        let fields: IndexMap<String, Box<RawValue>> = serde_json::from_slice(&original).map_err(|e| {
            if e.classify() == serde_json::error::Category::Data {
                invalid("the request body must be a JSON object, e.g. {\"model\": \"gpt-4o-mini\", \"messages\": [...]}".into())
            } else {
                invalid(format!("the request body is not valid JSON ({e}); send a JSON object with Content-Type: application/json"))
            }
        })?;
        Ok(Self { original, fields, changed: false })
    }

    /// The `model` field. A present but non-string `model` is an error.
    pub fn model(&self) -> Result<Option<String>, GatewayError> {
        match self.fields.get("model") {
            None => Ok(None),
            Some(raw) => serde_json::from_str::<String>(raw.get())
                .map(Some)
                .map_err(|_| invalid(format!("`model` must be a string naming a model, got {}", raw.get()))),
        }
    }

    /// The raw text of a top-level field.
    pub fn field(&self, key: &str) -> Option<&RawValue> {
        self.fields.get(key).map(|v| &**v)
    }

    /// Whether the body was rewritten.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// `stream: true`.
    pub fn stream(&self) -> bool {
        self.fields.get("stream").is_some_and(|v| v.get().trim() == "true")
    }

    fn set(&mut self, key: &str, value: &impl serde::Serialize) {
        if let Ok(raw) = serde_json::value::to_raw_value(value) {
            self.fields.insert(key.to_string(), raw);
            self.changed = true;
        }
    }

    pub fn set_model(&mut self, model: &str) {
        self.set("model", &model);
    }

    /// Make an OpenAI stream report usage. Returns true when modelgate added
    /// the request (so the usage-only chunk must be hidden from the client).
    pub fn ensure_stream_usage(&mut self) -> bool {
        let mut opts: serde_json::Map<String, serde_json::Value> = self
            .fields
            .get("stream_options")
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or_default();
        if opts.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
            return false;
        }
        opts.insert("include_usage".into(), serde_json::Value::Bool(true));
        self.set("stream_options", &opts);
        true
    }

    /// The bytes to send: the original when nothing changed.
    pub fn to_bytes(&self) -> Bytes {
        if !self.changed {
            return self.original.clone();
        }
        serde_json::to_vec(&self.fields).map(Bytes::from).unwrap_or_else(|_| self.original.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_changes_only_model() {
        let src = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi \u00e9"}],"x_unknown":{"a":[1,2.50]},"temperature":0.2}"#;
        let mut b = JsonBody::parse(Bytes::from_static(src)).unwrap();
        assert_eq!(b.to_bytes(), Bytes::from_static(src), "unchanged body is forwarded byte-identical");
        b.set_model("gpt-4o-mini");
        let out = b.to_bytes();
        let mut want: serde_json::Value = serde_json::from_slice(src).unwrap();
        want["model"] = "gpt-4o-mini".into();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap(), want);
        // Raw text of other fields is kept verbatim (escapes, number formats).
        assert!(std::str::from_utf8(&out).unwrap().contains(r#""x_unknown":{"a":[1,2.50]}"#));
        assert!(std::str::from_utf8(&out).unwrap().contains(r#"hi \u00e9"#));
    }

    #[test]
    fn stream_usage_is_added_once_and_merged() {
        let mut b = JsonBody::parse(Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"x":1}}"#)).unwrap();
        assert!(b.stream());
        assert!(b.ensure_stream_usage());
        let v: serde_json::Value = serde_json::from_slice(&b.to_bytes()).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"x":1,"include_usage":true}));
        let mut b = JsonBody::parse(Bytes::from_static(br#"{"stream":true,"stream_options":{"include_usage":true}}"#)).unwrap();
        assert!(!b.ensure_stream_usage());
    }

    #[test]
    fn bad_bodies_say_what_to_fix() {
        let e = JsonBody::parse(Bytes::from_static(b"{\"model\": ")).err().unwrap();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("not valid JSON"));
        let e = JsonBody::parse(Bytes::from_static(b"[1]")).err().unwrap();
        assert!(e.message.contains("must be a JSON object"));
        let b = JsonBody::parse(Bytes::from_static(br#"{"model": 5}"#)).unwrap();
        assert!(b.model().is_err());
    }
}
