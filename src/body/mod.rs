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

/// The index just past the closing quote of the JSON string whose opening
/// quote is at `at`, stepping over escapes; `None` when it is not closed.
fn string_end(text: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        let j = quote_or_backslash(text, i)?;
        if text[j] == b'\\' {
            i = j + 2;
        } else {
            return Some(j + 1);
        }
    }
}

/// The first `"` or `\\` at or after `from`. Short strings (keys, roles)
/// are read 8 bytes at a time; past 64 bytes a SIMD search takes over (it
/// costs more to start than a short string takes to read).
fn quote_or_backslash(text: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let rest = text.get(from..)?;
    let mut i = 0;
    while i + 8 <= rest.len().min(64) {
        let x = u64::from_le_bytes(rest[i..i + 8].try_into().ok()?);
        let (q, e) = (x ^ (ONES * b'"' as u64), x ^ (ONES * b'\\' as u64));
        // The classic has-zero-byte test: its lowest hit is exact.
        let hit = ((q.wrapping_sub(ONES) & !q) | (e.wrapping_sub(ONES) & !e)) & HIGH;
        if hit != 0 {
            return Some(from + i + hit.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    let found = if rest.len() - i < 8 { rest[i..].iter().position(|&b| b == b'"' || b == b'\\') } else { memchr::memchr2(b'"', b'\\', &rest[i..]) };
    found.map(|k| from + i + k)
}

/// Whether `body` nests arrays and objects deeper than `max` (one linear
/// pass; strings, where prompts spend their bytes, skipped with a SIMD
/// search for their end). Checked before any parser recurses.
pub fn too_deep(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => match string_end(body, i) {
                Some(end) => i = end - 1,
                None => return false,
            },
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

/// A place in JSON text the body parser has already checked is valid: it
/// steps through arrays and objects value by value, skipping strings with
/// a SIMD search, so a part of the body is read without parsing it again.
pub struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Self {
        Cursor { text, at: 0 }
    }

    /// Past whitespace and the `,` / `:` between values.
    fn separators(&mut self) {
        let b = self.text.as_bytes();
        while self.at < b.len() && matches!(b[self.at], b' ' | b'\t' | b'\n' | b'\r' | b',' | b':') {
            self.at += 1;
        }
    }

    /// Steps into the array (`[`) or object (`{`) that comes next; false
    /// (and nothing consumed) when something else comes.
    pub fn enter(&mut self, open: u8) -> bool {
        self.separators();
        let entered = self.text.as_bytes().get(self.at) == Some(&open);
        self.at += entered as usize;
        entered
    }

    /// The next value of the array or object the cursor is in (an object's
    /// keys are values here too); `None` at its end, which is stepped over.
    pub fn value(&mut self) -> Option<&'a str> {
        self.separators();
        let b = self.text.as_bytes();
        let start = self.at;
        let mut depth = 0usize;
        let mut i = start;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i = string_end(b, i)?;
                    if depth == 0 {
                        break;
                    }
                }
                b'[' | b'{' => {
                    depth += 1;
                    i += 1;
                }
                // The end of a number, `true`, `false` or `null`.
                b']' | b'}' if depth == 0 && i > start => break,
                b']' | b'}' if depth == 0 => {
                    // The end of the container: step over it.
                    self.at = i + 1;
                    return None;
                }
                b']' | b'}' => {
                    depth -= 1;
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                b',' | b':' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => break,
                _ => i += 1,
            }
        }
        self.at = i;
        (i > start).then(|| &self.text[start..i])
    }

    /// The next (key, value) of the object the cursor is in.
    pub fn member(&mut self) -> Option<(&'a str, &'a str)> {
        let key = self.value()?;
        Some((key, self.value()?))
    }
}

/// The 400 for a body nested deeper than `max`.
pub fn too_deep_error(max: usize) -> GatewayError {
    invalid(format!(
        "the request body nests JSON arrays/objects more than {max} levels deep; no model request needs that (raise limits.max_json_depth in modelgate's config if yours does)"
    ))
}

impl JsonBody {
    pub fn parse(original: Bytes) -> Result<Self, GatewayError> {
        // UTF-8 checked once for the whole body (JSON text is UTF-8), so no
        // field's text is checked again when it is read.
        let text = std::str::from_utf8(&original).map_err(|e| {
            invalid(format!(
                "the request body is not valid UTF-8 ({e}); JSON text must be UTF-8, so send it encoded as UTF-8 with Content-Type: application/json"
            ))
        })?;
        let Fields(fields) = serde_json::from_str::<Fields<'_>>(text).map_err(|e| {
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
        let bytes = self.original.get(at.clone())?;
        // SAFETY: `parse` checked that all of `original` (never changed:
        // `Bytes` is immutable) is UTF-8, and `at` is where the parser found
        // this value's text as a `&str` of it, so it starts and ends on char
        // boundaries.
        Some(Raw(unsafe { std::str::from_utf8_unchecked(bytes) }))
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
