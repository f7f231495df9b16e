//! Provider SSE streams translated event by event, split anywhere, for
//! every provider dialect and client format.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::dialect::sse::StreamTap;
use modelgate::translate::{Chat, Translator, Wire};

const CLIENTS: [Wire; 4] = [Wire::Chat, Wire::Responses, Wire::Messages, Wire::Gemini];
const PROVIDERS: [Wire; 3] = [Wire::Chat, Wire::Messages, Wire::Gemini];

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else { return };
    let p = PROVIDERS[usize::from(knobs) % 3];
    let c = CLIENTS[usize::from(knobs / 3) % 4];
    let chat = Chat { model: "m".into(), stream: true, stream_usage: knobs & 0x80 == 0, ..Default::default() };
    let mut t = Translator::new(p, c, &chat);
    let mut tap = StreamTap::new(false);
    for piece in rest.chunks(usize::from(knobs >> 4).max(1)) {
        let _ = t.feed(&tap.feed(piece));
    }
    let _ = t.feed(&tap.finish());
    let _ = t.finish();
});
