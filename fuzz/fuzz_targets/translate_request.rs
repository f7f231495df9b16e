//! Client request bodies translated to the other dialect.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::dialect::Dialect;

fuzz_target!(|data: &[u8]| {
    let _ = modelgate::translate::request(data, Dialect::OpenAi, Dialect::Anthropic, "m", 1024);
    let _ = modelgate::translate::request(data, Dialect::Anthropic, Dialect::OpenAi, "m", 1024);
});
