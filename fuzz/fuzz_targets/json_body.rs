//! Client request bodies: parse, read the model, rewrite.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::body::JsonBody;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = JsonBody::parse(bytes::Bytes::copy_from_slice(data)) {
        let _ = b.model();
        let _ = b.stream();
        let _ = b.render(Some("gpt-4o-mini"), true);
    }
    let _ = modelgate::usage::UsageCarrier::parse(data);
});
