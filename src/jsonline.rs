//! JSON lines written without serde for the per-request records (the
//! access log, the ledger): field names are written as they are (the
//! caller's constants need no escaping) and values are escaped only when
//! they need it, through serde_json, so the bytes are serde_json's. serde
//! escapes every string byte by byte: ~60 per access-log line cost ~9k
//! instructions of a ~219k request.

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

    pub fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.extend_from_slice(v.as_bytes());
    }

    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        if v.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.out.push(b'"');
            self.out.extend_from_slice(v.as_bytes());
            self.out.push(b'"');
        } else {
            // (Writing to a Vec cannot fail.)
            let _ = serde_json::to_writer(&mut *self.out, v);
        }
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
