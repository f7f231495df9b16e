//! Upstream SSE bytes, split anywhere, through the stream tap.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::dialect::sse::StreamTap;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else { return };
    let mut tap = StreamTap::new(knobs & 1 == 1);
    let step = usize::from(knobs >> 1).max(1);
    for piece in rest.chunks(step) {
        let _ = tap.feed(piece);
    }
    let _ = tap.finish();
    let _ = tap.usage();
});
