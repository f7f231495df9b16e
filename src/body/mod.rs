//! The request body of a model call: top-level JSON fields kept as raw text,
//! so a rewrite changes exactly the fields it means to and every other byte
//! of every other field (unknown ones included) reaches upstream unchanged.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use crate::dialect::{ErrorKind, GatewayError};

pub struct JsonBody {
    original: Bytes,
    /// Each top-level field's key and where its value's text is in
    /// `original` (in order; bodies have a handful, so a list beats a map).
    fields: Vec<(String, Range<usize>)>,
}

/// A top-level field's JSON text, borrowed from the body.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    pub fn get(&self) -> &'a str {
        self.0
    }
}

fn invalid(message: String) -> GatewayError {
    GatewayError::new(400, ErrorKind::InvalidRequest, "invalid_json", message)
}

/// The top-level fields of a JSON object, borrowed from the body; a key
/// given twice is an error (parsers disagree on which copy wins, so a proxy
/// and a provider could read different models from one body).
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields: Vec<(String, &'de RawValue)> = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format_args!("{DUPLICATE}`{key}`")));
                    }
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

const DUPLICATE: &str = "duplicate top-level key ";

/// Whether `body` nests arrays and objects deeper than `max` (one linear
/// pass; strings, where prompts spend their bytes, skipped with a SIMD
/// search for their end). Checked before any parser recurses.
pub fn too_deep(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                // Skip to the closing quote, stepping over escapes.
                loop {
                    let rest = body.get(i + 1..).unwrap_or_default();
                    match memchr::memchr2(b'"', b'\\', rest) {
                        None => return false,
                        Some(j) if rest[j] == b'\\' => i += j + 2,
                        Some(j) => {
                            i += j + 1;
                            break;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// The 400 for a body nested deeper than `max`.
pub fn too_deep_error(max: usize) -> GatewayError {
    invalid(format!(
        "the request body nests JSON arrays/objects more than {max} levels deep; no model request needs that (raise limits.max_json_depth in modelgate's config if yours does)"
    ))
}

impl JsonBody {
    pub fn parse(original: Bytes) -> Result<Self, GatewayError> {
        let Fields(fields) = serde_json::from_slice::<Fields<'_>>(&original).map_err(|e| {
            let text = e.to_string();
            if let Some(at) = text.find(DUPLICATE) {
                let what = text[at..].split(" at line").next().unwrap_or(DUPLICATE);
                invalid(format!("the request body has a {what}; send each field once"))
            } else if e.classify() == serde_json::error::Category::Data {
                invalid("the request body must be a JSON object, e.g. {\"model\": \"gpt-4o-mini\", \"messages\": [...]}".into())
            } else {
                invalid(format!("the request body is not valid JSON ({e}); send a JSON object with Content-Type: application/json"))
            }
        })?;
        // Each value's place in the body (its text is a slice of it).
        let base = original.as_ptr() as usize;
        let fields = fields
            .into_iter()
            .map(|(k, v)| {
                let start = v.get().as_ptr() as usize - base;
                (k, start..start + v.get().len())
            })
            .collect();
        Ok(Self { original, fields })
    }

    fn raw(&self, key: &str) -> Option<Raw<'_>> {
        let (_, at) = self.fields.iter().find(|(k, _)| k == key)?;
        // Always in bounds and on char boundaries: the parser read it there.
        std::str::from_utf8(self.original.get(at.clone())?).ok().map(Raw)
    }

    /// The `model` field. A present but non-string `model` is an error.
    pub fn model(&self) -> Result<Option<String>, GatewayError> {
        match self.raw("model") {
            None => Ok(None),
            Some(raw) => match serde_json::from_str::<String>(raw.get()) {
                Ok(m) if m.chars().any(char::is_control) => {
                    Err(invalid(format!("`model` {} contains control characters; send the model's plain name", raw.get())))
                }
                Ok(m) => Ok(Some(m)),
                Err(_) => Err(invalid(format!("`model` must be a string naming a model, got {}", raw.get()))),
            },
        }
    }

    /// The raw text of a top-level field.
    pub fn field(&self, key: &str) -> Option<Raw<'_>> {
        self.raw(key)
    }

    /// The body as the client sent it.
    pub fn original(&self) -> &Bytes {
        &self.original
    }

    /// `stream: true`.
    pub fn stream(&self) -> bool {
        self.raw("stream").is_some_and(|v| v.get().trim() == "true")
    }

    /// `stream_options` with `include_usage: true`, when the body lacks it.
    fn usage_request(&self) -> Option<Box<RawValue>> {
        let mut opts: serde_json::Map<String, serde_json::Value> =
            self.raw("stream_options").and_then(|r| serde_json::from_str(r.get()).ok()).unwrap_or_default();
        if opts.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
            return None;
        }
        opts.insert("include_usage".into(), serde_json::Value::Bool(true));
        serde_json::value::to_raw_value(&opts).ok()
    }

    /// The bytes for one upstream attempt: `model` replaced when `model` is
    /// given and differs, and (with `stream_usage`) an OpenAI stream asked
    /// to report usage. The original bytes when nothing changes. The flag
    /// says whether modelgate added the usage request (so the usage-only
    /// chunk must be hidden from the client).
    pub fn render(&self, model: Option<&str>, stream_usage: bool) -> (Bytes, bool) {
        let current = self.raw("model").and_then(|r| serde_json::from_str::<String>(r.get()).ok());
        let model = model.filter(|m| current.as_deref() != Some(*m)).and_then(|m| serde_json::value::to_raw_value(m).ok());
        let usage = if stream_usage { self.usage_request() } else { None };
        if model.is_none() && usage.is_none() {
            return (self.original.clone(), false);
        }
        // Splice: a field present is replaced where it is; a new one goes
        // before the closing brace. Every other byte stays as sent.
        let mut replace: Vec<(Range<usize>, &str)> = Vec::with_capacity(2);
        let mut append = String::new();
        for (key, value) in [("model", &model), ("stream_options", &usage)] {
            let Some(value) = value else { continue };
            match self.fields.iter().find(|(k, _)| k == key) {
                Some((_, at)) => replace.push((at.clone(), value.get())),
                None => append.push_str(&format!(",\"{key}\":{}", value.get())),
            }
        }
        replace.sort_by_key(|(at, _)| at.start);
        let Some(close) = self.original.iter().rposition(|&b| b == b'}') else { return (self.original.clone(), false) };
        let mut out = BytesMut::with_capacity(self.original.len() + append.len() + 64);
        let mut pos = 0;
        for (at, text) in &replace {
            out.put_slice(&self.original[pos..at.start]);
            out.put_slice(text.as_bytes());
            pos = at.end;
        }
        out.put_slice(&self.original[pos..close]);
        // No leading comma in an object that had no fields.
        out.put_slice(if self.fields.is_empty() { append.strip_prefix(',').unwrap_or(&append) } else { &append }.as_bytes());
        out.put_slice(&self.original[close..]);
        (out.freeze(), usage.is_some())
    }
}

#[cfg(test)]
mod tests;
