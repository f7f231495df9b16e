//! Client request bodies (every client format) translated for every provider dialect.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::translate::Wire;

const CLIENTS: [Wire; 4] = [Wire::Chat, Wire::Responses, Wire::Messages, Wire::Gemini];
const PROVIDERS: [Wire; 3] = [Wire::Chat, Wire::Messages, Wire::Gemini];

fuzz_target!(|data: &[u8]| {
    for from in CLIENTS {
        for to in PROVIDERS {
            let _ = modelgate::translate::request(data, from, to, "m", false, 1024);
        }
    }
});
