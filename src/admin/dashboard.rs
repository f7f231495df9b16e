//! The web dashboard's files, compiled into the binary (no CDN, works
//! offline): `GET /` and `/dashboard` answer the page, `/dashboard/NAME`
//! its script, styles and the vendored uPlot chart library
//! (`assets/dashboard/`). The page reads the JSON endpoints; it holds no
//! data itself.

use http::StatusCode;

use super::{error, reply, Reply};

const INDEX: &[u8] = include_bytes!("../../assets/dashboard/index.html");

/// (name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/dashboard/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../assets/dashboard/app.css")),
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/dashboard/vendor/uPlot.iife.min.js")),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../../assets/dashboard/vendor/uPlot.min.css")),
    ("uPlot.LICENSE.txt", "text/plain; charset=utf-8", include_bytes!("../../assets/dashboard/vendor/uPlot.LICENSE")),
];

/// Only this origin's files and API; no inline script; no form may be
/// sent anywhere (the token field is read by the script, never submitted,
/// so it cannot end up in a URL).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn with_headers(mut r: Reply, page: bool) -> Reply {
    let h = r.headers_mut();
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    h.insert(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    h.insert(http::header::REFERRER_POLICY, http::HeaderValue::from_static("no-referrer"));
    if page {
        h.insert(http::header::CONTENT_SECURITY_POLICY, http::HeaderValue::from_static(CSP));
        h.insert(http::header::X_FRAME_OPTIONS, http::HeaderValue::from_static("DENY"));
    }
    r
}

/// `GET /`, `/dashboard`.
pub(super) fn page() -> Reply {
    with_headers(reply(StatusCode::OK, "text/html; charset=utf-8", INDEX.to_vec()), true)
}

/// `GET /dashboard/NAME`.
pub(super) fn asset(name: &str) -> Reply {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ct, body)) => with_headers(reply(StatusCode::OK, ct, body.to_vec()), false),
        None => error(StatusCode::NOT_FOUND, format!("the dashboard has no file {name}; open / for the dashboard")),
    }
}
