//! Credentials never reach a log line: a writer for the log output that
//! masks the values of auth headers and API-key fields, whoever formatted
//! the line (ours, Pingora's or h2's debug and trace output).

use std::io::{self, Write};
use std::sync::OnceLock;

use regex::bytes::Regex;

fn pattern() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r#"(?i)((?:proxy-)?authorization|x-api-key|x-goog-api-key|api[_-]?key|\bkey=)(["']?\s*[:=]?\s*["']?)((?:bearer|basic)\s+)?[^"'\s,;}&)\]\\]+"#,
        )
        .ok()
    })
    .as_ref()
}

/// `text` with every credential value replaced by `[redacted]`.
pub fn redact(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match pattern() {
        Some(re) => re.replace_all(text, &b"$1$2$3[redacted]"[..]),
        // The pattern is fixed and valid; without it, mask whole lines that mention keys.
        None => std::borrow::Cow::Borrowed(b"[log line withheld]\n"),
    }
}

/// Wraps the log output; each formatted event arrives in one write.
pub struct Redacting<W: Write>(pub W);

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&redact(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        String::from_utf8(redact(s.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn masks_header_values_in_every_spelling() {
        assert_eq!(r(r#"{"authorization": "Bearer sk-abc", "host": "x"}"#), r#"{"authorization": "Bearer [redacted]", "host": "x"}"#);
        assert_eq!(r("x-api-key: sk-ant-1\r\n"), "x-api-key: [redacted]\r\n");
        assert_eq!(r("Proxy-Authorization: Basic dXNlcjpwYXNz"), "Proxy-Authorization: Basic [redacted]");
        assert_eq!(r(r#"headers={"X-Goog-Api-Key": "AIza123"}"#), r#"headers={"X-Goog-Api-Key": "[redacted]"}"#);
        assert_eq!(r("GET /v1beta/models?key=AIza123&alt=sse"), "GET /v1beta/models?key=[redacted]&alt=sse");
        assert_eq!(r("nothing secret here"), "nothing secret here");
        // Pingora's debug print of a raw request head (escaped CR LF).
        assert_eq!(
            r(r#"b"POST / HTTP/1.1\r\nauthorization: Bearer sk-1\r\nx-api-key: sk-2\r\n""#),
            r#"b"POST / HTTP/1.1\r\nauthorization: Bearer [redacted]\r\nx-api-key: [redacted]\r\n""#
        );
    }
}
