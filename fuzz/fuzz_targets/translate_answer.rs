//! Provider answers and errors translated to the other dialect.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::dialect::Dialect;

fuzz_target!(|data: &[u8]| {
    for (p, c) in [(Dialect::OpenAi, Dialect::Anthropic), (Dialect::Anthropic, Dialect::OpenAi)] {
        let _ = modelgate::translate::answer(data, p, c);
        let _ = modelgate::translate::error(data, 500, p, c);
    }
});
