//! JSON written without serde where it is written per request or per
//! stream event: the access log, the ledger, and translated bodies and
//! events. Field names are written as they are (the caller's constants
//! need no escaping) and values are escaped only when they need it,
//! through serde_json, so the bytes are serde_json's. serde escapes every
//! string byte by byte: ~60 per access-log line cost ~9k instructions of
//! a ~219k request; a `serde_json::Value` built per translated event cost
//! more than reading and writing the event.

/// Writes one JSON object's members (field names need no escaping).
pub struct Json<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Json<'o> {
    pub fn new(out: &'o mut Vec<u8>) -> Self {
        Json { out, first: true }
    }

    /// Close the object (`{}` when nothing was written).
    pub fn end(self) {
        if self.first {
            self.out.push(b'{');
        }
        self.out.push(b'}');
    }

    fn key(&mut self, k: &str) {
        self.out.extend_from_slice(if self.first { b"{\"" } else { b",\"" });
        self.first = false;
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A member whose value is an object, written through the returned
    /// writer (close it with [`Json::end`]).
    pub fn obj(&mut self, k: &str) -> Json<'_> {
        self.key(k);
        Json::new(self.out)
    }

    /// A member whose value the caller writes into the returned buffer.
    pub fn value_of(&mut self, k: &str) -> &mut Vec<u8> {
        self.key(k);
        self.out
    }

    pub fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.extend_from_slice(v.as_bytes());
    }

    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        string(self.out, v);
    }

    pub fn opt_str(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(k, v),
            None => self.raw(k, "null"),
        }
    }

    pub fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        self.out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    pub fn opt_num(&mut self, k: &str, v: Option<u64>) {
        match v {
            Some(v) => self.num(k, v),
            None => self.raw(k, "null"),
        }
    }

    /// As serde_json writes an f64 (`null` when not finite).
    pub fn float(&mut self, k: &str, v: f64) {
        self.key(k);
        let _ = serde_json::to_writer(&mut *self.out, &v);
    }

    pub fn opt_float(&mut self, k: &str, v: Option<f64>) {
        match v {
            Some(v) => self.float(k, v),
            None => self.raw(k, "null"),
        }
    }
}

/// Writes one JSON array of objects.
pub struct List<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> List<'o> {
    pub fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'[');
        List { out, first: true }
    }

    /// The next element, an object written through the returned writer
    /// (close it with [`Json::end`]).
    pub fn object(&mut self) -> Json<'_> {
        if !std::mem::replace(&mut self.first, false) {
            self.out.push(b',');
        }
        Json::new(self.out)
    }

    pub fn end(self) {
        self.out.push(b']');
    }
}

/// `s` as a JSON string, byte for byte as serde_json writes it: copied as
/// it is when no byte needs escaping (checked 8 bytes at a time), else
/// through serde_json.
pub fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // (Writing to a Vec cannot fail.)
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether any byte is one serde_json escapes: a control character, `"`
/// or `\\`. Eight bytes at a time: "has a byte below 0x20" and "has a
/// zero byte" (after XOR with `"` or `\\`) are exact as yes/no answers.
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        let x = u64::from_le_bytes(word);
        let (q, e) = (x ^ (ONES * b'"' as u64), x ^ (ONES * b'\\' as u64));
        let hit = (x.wrapping_sub(ONES * 0x20) & !x) | (q.wrapping_sub(ONES) & !q) | (e.wrapping_sub(ONES) & !e);
        if hit & HIGH != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `v` as compact JSON text, byte for byte as `serde_json::to_writer`
/// writes it (numbers are written by serde_json), with strings copied
/// whole when they need no escaping: serde_json looks at every string
/// byte on its own and goes through its serializer for every token.
pub fn value(out: &mut Vec<u8>, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                value(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            out.push(b'{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, k);
                out.push(b':');
                value(out, item);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let text = "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é✓ /]{0,20}";
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            text.prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::vec((text, inner), 0..4).prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn values_are_written_as_serde_json_writes_them(v in json_value()) {
            let mut ours = Vec::new();
            value(&mut ours, &v);
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&v).unwrap());
        }
    }
}
