//! Provider answers and errors translated for every client format.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::translate::{Chat, Wire};

const CLIENTS: [Wire; 4] = [Wire::Chat, Wire::Responses, Wire::Messages, Wire::Gemini];
const PROVIDERS: [Wire; 3] = [Wire::Chat, Wire::Messages, Wire::Gemini];

fuzz_target!(|data: &[u8]| {
    for p in PROVIDERS {
        for c in CLIENTS {
            let _ = modelgate::translate::answer(data, p, c, &Chat::default());
            let _ = modelgate::translate::error(data, 500, p.dialect(), c.dialect());
        }
    }
});
