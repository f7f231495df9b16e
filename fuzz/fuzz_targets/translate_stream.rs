//! Provider SSE streams translated event by event, split anywhere.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::dialect::sse::StreamTap;
use modelgate::dialect::Dialect;
use modelgate::translate::{Chat, Translator};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else { return };
    let (p, c) = if knobs & 1 == 0 { (Dialect::OpenAi, Dialect::Anthropic) } else { (Dialect::Anthropic, Dialect::OpenAi) };
    let chat = Chat { model: "m".into(), stream: true, stream_usage: knobs & 2 == 2, ..Default::default() };
    let mut t = Translator::new(p, c, &chat);
    let mut tap = StreamTap::new(false);
    for piece in rest.chunks(usize::from(knobs >> 2).max(1)) {
        let _ = t.feed(&tap.feed(piece));
    }
    let _ = t.feed(&tap.finish());
    let _ = t.finish();
});
