//! Upstream SSE bytes, split anywhere, through the stream tap.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::dialect::sse::StreamTap;
use modelgate::dialect::Dialect;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else { return };
    let dialect = Dialect::ALL[usize::from(knobs >> 6) % Dialect::COUNT];
    let tap = StreamTap::new(dialect, knobs & 1 == 1);
    let mut tap = if knobs & 2 == 2 { tap.collecting() } else { tap };
    let step = usize::from((knobs >> 2) & 0xf).max(1);
    for piece in rest.chunks(step) {
        let _ = tap.feed(piece);
    }
    let _ = tap.finish();
    let _ = tap.take_data();
    let _ = tap.usage();
});
