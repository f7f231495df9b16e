//! Server-sent events passing through: split the byte stream into events as
//! they complete, read usage from them, and drop the usage-only chunk that
//! modelgate asked for on the client's behalf. Events are forwarded as soon as
//! their terminating blank line arrives; nothing waits for the end.
//!
//! This is the one SSE splitter. Each event's data is parsed to the usage
//! fields alone; when the stream is translated, the data is also handed to
//! the translator, whose reader parses the fields it needs.

use bytes::{Bytes, BytesMut};

use super::Dialect;
use crate::usage::{RawUsage, UsageCarrier};

/// The data of an event passed on, for a translator.
#[derive(Debug)]
pub enum Data {
    /// OpenAI's `data: [DONE]`.
    Done,
    /// JSON text (valid UTF-8 and valid JSON, checked by the tap).
    Json(Bytes),
}

/// Observes (and optionally filters) one SSE response stream.
#[derive(Debug)]
pub struct StreamTap {
    /// The provider's dialect (which event ends its streams).
    dialect: Dialect,
    buf: BytesMut,
    /// Where to resume looking for an event boundary in `buf`.
    scanned: usize,
    usage: RawUsage,
    drop_usage_only: bool,
    pub events: u64,
    /// The answer's last event was seen (`[DONE]`, `message_stop`,
    /// `response.completed` …): what follows adds nothing.
    pub terminal: bool,
    /// Bytes of answer text seen, for estimating output tokens when the
    /// stream ends without usage.
    pub text_bytes: u64,
    /// An event whose data is neither JSON nor `[DONE]` arrived (it is
    /// not passed on); the stream cannot be trusted after it.
    pub malformed: bool,
    /// The provider sent an error event (passed on: it is the client's
    /// explanation).
    pub error_event: bool,
    /// Events with data seen (comments and keep-alives not counted).
    pub data_events: u64,
    /// The first event with data was the provider's error event: its data.
    pub first_error: Option<Vec<u8>>,
    /// Why the answer ended, as the provider said (each reason once).
    pub finish_reasons: Vec<String>,
    /// Keep the parsed data of each event passed on (for a translator,
    /// which then needs no second split or parse).
    collect: bool,
    data: Vec<Data>,
}

/// Length of the first complete event in `buf` (delimiter included), looking
/// from `from` on.
pub(crate) fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        // Only a line break can start the delimiter: jump from one to the
        // next (a SIMD search over the event's data).
        i += memchr::memchr2(b'\n', b'\r', &buf[i..buf.len() - 1])?;
        match (buf[i], buf[i + 1]) {
            (b'\n', b'\n') | (b'\r', b'\r') => return Some(i + 2),
            (b'\r', b'\n') if buf.get(i + 2..i + 4) == Some(b"\r\n") => return Some(i + 4),
            _ => i += 1,
        }
    }
    None
}

/// The `data:` payload of one event (multiple data lines joined by `\n`):
/// borrowed from the event when it has one data line (most have).
pub(crate) fn data_of(event: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // Lines found with a SIMD search for their ends.
    let mut start = 0;
    let lines = memchr::memchr_iter(b'\n', event).map(Some).chain([None]).map(move |end| {
        let line = &event[start..end.unwrap_or(event.len())];
        start = end.map_or(event.len(), |e| e + 1);
        line.strip_suffix(b"\r").unwrap_or(line)
    });
    let mut data = std::borrow::Cow::Borrowed(&[][..]);
    for (n, d) in lines.filter_map(|line| line.strip_prefix(b"data:")).enumerate() {
        let d = d.strip_prefix(b" ").unwrap_or(d);
        match n {
            0 => data = std::borrow::Cow::Borrowed(d),
            _ => {
                let joined = data.to_mut();
                joined.push(b'\n');
                joined.extend_from_slice(d);
            }
        }
    }
    data
}

impl StreamTap {
    /// `drop_usage_only`: remove OpenAI's final `choices: []` usage chunk
    /// (set when modelgate added `stream_options.include_usage` itself).
    pub fn new(dialect: Dialect, drop_usage_only: bool) -> Self {
        Self {
            dialect,
            buf: BytesMut::new(),
            scanned: 0,
            usage: RawUsage::default(),
            drop_usage_only,
            events: 0,
            terminal: false,
            text_bytes: 0,
            malformed: false,
            error_event: false,
            data_events: 0,
            first_error: None,
            finish_reasons: Vec::new(),
            collect: false,
            data: Vec::new(),
        }
    }

    /// Also keep each passed event's data, for [`StreamTap::take_data`].
    pub fn collecting(mut self) -> Self {
        self.collect = true;
        self
    }

    /// The data of the events passed on since the last call.
    pub fn take_data(&mut self) -> Vec<Data> {
        std::mem::take(&mut self.data)
    }

    /// Feed bytes from upstream; returns what to send to the client now
    /// (complete events only; an incomplete tail is held until it completes).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.buf.extend_from_slice(chunk);
        let mut ends = Vec::new();
        let mut pos = 0;
        let mut from = self.scanned;
        while let Some(end) = event_end(&self.buf, from) {
            ends.push((pos, end));
            pos = end;
            from = end;
        }
        self.scanned = self.buf.len().saturating_sub(3).max(pos);
        if ends.is_empty() {
            return Bytes::new();
        }
        let region = self.buf.split_to(pos).freeze();
        self.scanned -= pos;
        let keep: Vec<bool> = ends.iter().map(|&(s, e)| self.observe(&region[s..e])).collect();
        if keep.iter().all(|k| *k) {
            return region;
        }
        let mut out = BytesMut::with_capacity(region.len());
        for (&(s, e), k) in ends.iter().zip(keep) {
            if k {
                out.extend_from_slice(&region[s..e]);
            }
        }
        out.freeze()
    }

    /// The stream ended: return any unterminated tail as it was.
    pub fn finish(&mut self) -> Bytes {
        if self.buf.is_empty() {
            return Bytes::new();
        }
        let tail = self.buf.split().freeze();
        if self.observe(&tail) {
            tail
        } else {
            Bytes::new()
        }
    }

    /// Bytes of an event not yet complete (held until its blank line).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Usage seen so far (merged across events).
    pub fn usage(&self) -> Option<RawUsage> {
        (!self.usage.is_empty()).then_some(self.usage)
    }

    /// Record what the event says; false when it must not reach the client.
    fn observe(&mut self, event: &[u8]) -> bool {
        self.events += 1;
        let data = data_of(event);
        if data.first() != Some(&b'{') {
            return self.judge_text(&data);
        }
        self.data_events += 1;
        let carrier = match UsageCarrier::parse(&data) {
            Some(c) => Some(c),
            // Valid JSON of an unexpected shape passes; broken JSON does not.
            None if serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok() => None,
            None => return self.broken(),
        };
        let keep = carrier.is_none_or(|c| self.judge(&c, &data));
        if keep && self.collect {
            self.data.push(Data::Json(Bytes::copy_from_slice(&data)));
        }
        keep
    }

    /// An event whose data is not JSON: `[DONE]`, or nothing (comments,
    /// keep-alives, `event:`-only); anything else is malformed.
    fn judge_text(&mut self, data: &[u8]) -> bool {
        match data {
            b"[DONE]" => {
                self.data_events += 1;
                self.terminal = true;
                if self.collect {
                    self.data.push(Data::Done);
                }
                true
            }
            d if d.iter().all(u8::is_ascii_whitespace) => true,
            _ => {
                self.data_events += 1;
                self.broken()
            }
        }
    }

    fn broken(&mut self) -> bool {
        self.malformed = true;
        false
    }

    /// What a JSON event says; false when it must not reach the client.
    fn judge(&mut self, c: &UsageCarrier, data: &[u8]) -> bool {
        self.text_bytes += c.text_bytes();
        self.terminal |= self.dialect.spec().is_terminal(c);
        if c.is_error() {
            if self.data_events == 1 {
                self.first_error = Some(data.to_vec());
            }
            self.error_event = true;
        }
        for u in c.usages() {
            self.usage.merge(u);
        }
        for r in c.finish_reasons() {
            if !self.finish_reasons.iter().any(|x| x == r) {
                self.finish_reasons.push(r.to_string());
            }
        }
        let usage_only = c.usage.is_some() && c.choices.as_ref().is_some_and(|ch| ch.is_empty());
        !(self.drop_usage_only && usage_only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;
    use crate::usage::Usage;

    proptest::proptest! {
        #[test]
        fn the_event_end_search_agrees_with_a_plain_one(buf in proptest::collection::vec(proptest::sample::select(b"\r\n\r\nda".to_vec()), 0..40), from in 0usize..8) {
            let plain = {
                let mut i = from;
                loop {
                    if i + 1 >= buf.len() {
                        break None;
                    }
                    match (buf[i], buf[i + 1]) {
                        (b'\n', b'\n') | (b'\r', b'\r') => break Some(i + 2),
                        (b'\r', b'\n') if buf.get(i + 2..i + 4) == Some(b"\r\n") => break Some(i + 4),
                        _ => i += 1,
                    }
                }
            };
            proptest::prop_assert_eq!(event_end(&buf, from), plain);
        }
    }

    #[test]
    fn an_events_data_lines_are_joined() {
        assert_eq!(&*data_of(b"event: x\ndata: {\"a\":1}\n\n"), b"{\"a\":1}");
        assert_eq!(&*data_of(b"data:a\r\ndata: b\r\n\r\n"), b"a\nb");
        assert_eq!(&*data_of(b": comment\n\n"), b"");
    }

    const OPENAI: &str = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn drops_usage_only_chunk_but_keeps_its_usage() {
        let mut tap = StreamTap::new(Dialect::OpenAi, true);
        let mut out = Vec::new();
        // Feed in awkward 7-byte pieces: boundaries inside events and delimiters.
        for piece in OPENAI.as_bytes().chunks(7) {
            out.extend_from_slice(&tap.feed(piece));
        }
        out.extend_from_slice(&tap.finish());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"Hi\""));
        assert!(!text.contains("prompt_tokens"));
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(tap.terminal);
        assert_eq!(tap.text_bytes, 2);
        assert_eq!(tap.usage().unwrap().normalize(Dialect::OpenAi), Usage { input: 9, output: 2, ..Default::default() });
    }

    #[test]
    fn forwards_everything_byte_identical_when_not_dropping() {
        let mut tap = StreamTap::new(Dialect::OpenAi, false);
        let mut out = Vec::new();
        for piece in OPENAI.as_bytes().chunks(5) {
            out.extend_from_slice(&tap.feed(piece));
        }
        out.extend_from_slice(&tap.finish());
        assert_eq!(out, OPENAI.as_bytes());
        assert_eq!(tap.events, 3);
    }

    #[test]
    fn anthropic_text_and_tool_deltas_are_measured_and_message_stop_ends() {
        let mut tap = StreamTap::new(Dialect::Anthropic, false);
        tap.feed(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        );
        tap.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n");
        assert!(!tap.terminal);
        assert_eq!(tap.text_bytes, 5 + 7);
        tap.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert!(tap.terminal);
    }

    #[test]
    fn the_first_event_is_found_however_the_stream_is_cut() {
        let stream = b": keep-alive\n\ndata: {\"a\":1}\r\n\r\ndata: {\"b\":2}\n\n";
        for cut in 1..stream.len() {
            let mut tap = StreamTap::new(Dialect::OpenAi, false);
            let mut out = tap.feed(&stream[..cut]).to_vec();
            if tap.data_events == 0 {
                out.extend_from_slice(&tap.feed(&stream[cut..]));
            }
            assert!(tap.data_events >= 1, "cut at {cut}");
            assert!(out.ends_with(b"data: {\"a\":1}\r\n\r\n") || out.ends_with(b"data: {\"b\":2}\n\n"), "cut at {cut}");
        }
        let mut tap = StreamTap::new(Dialect::OpenAi, false);
        tap.feed(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n");
        assert_eq!(tap.first_error.as_deref(), Some(&b"{\"error\":{\"message\":\"overloaded\"}}"[..]));
    }

    #[test]
    fn an_event_is_released_as_soon_as_it_completes() {
        let mut tap = StreamTap::new(Dialect::OpenAi, false);
        assert!(tap.feed(b"event: ping\r\ndata: {}\r\n").is_empty());
        assert_eq!(&tap.feed(b"\r\nevent: x")[..], b"event: ping\r\ndata: {}\r\n\r\n");
    }
}
