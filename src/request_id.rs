//! The id of one request: returned to the client in `x-modelgate-request-id`,
//! written to the access log and the ledger, and what an app quotes when it
//! reports feedback (`POST /admin/feedback`).
//!
//! An id is a per-process sequence number passed through SipHash under a
//! random per-process key: unique in practice, and not guessable from
//! another request's id — feedback needs no admin token, so knowing a
//! request's id is what lets an app rate it. Making one costs an atomic
//! increment and one hash; the text is only formed when written out.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// 64 bits, shown as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

static SEQ: AtomicU64 = AtomicU64::new(0);
static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();

impl RequestId {
    /// A new id.
    pub fn next() -> RequestId {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        RequestId(KEY.get_or_init(Default::default).hash_one(seq))
    }

    /// The 16 hex digits, without allocating.
    pub fn hex(self) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = DIGITS[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        out
    }

    /// Parse the 16 hex digits an app sends back.
    pub fn parse(s: &str) -> Option<RequestId> {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u64::from_str_radix(s, 16).ok().map(RequestId)).flatten()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = self.hex();
        // Always ASCII.
        f.write_str(std::str::from_utf8(&hex).unwrap_or_default())
    }
}

impl serde::Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex = self.hex();
        s.serialize_str(std::str::from_utf8(&hex).unwrap_or_default())
    }
}

impl<'de> serde::Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RequestId::parse(&s).ok_or_else(|| serde::de::Error::custom("a request id is 16 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn ids_differ_and_read_back() {
        let (a, b) = (RequestId::next(), RequestId::next());
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(RequestId::parse(&text), Some(a));
        assert_eq!(RequestId(0x0123_4567_89ab_cdef).to_string(), "0123456789abcdef");
        assert_eq!(RequestId::parse("0123456789ABCDEF"), Some(RequestId(0x0123_4567_89ab_cdef)));
        for bad in ["", "0123", "0123456789abcdeg", "+123456789abcdef", "0123456789abcdef0"] {
            assert_eq!(RequestId::parse(bad), None, "{bad}");
        }
        assert_eq!(serde_json::to_string(&RequestId(255)).unwrap(), "\"00000000000000ff\"");
    }
}
