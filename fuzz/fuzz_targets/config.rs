//! Config files: YAML, `${VAR}` substitution and validation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = modelgate::config::load_str(text, &|_| Some("x".into()));
    }
});
