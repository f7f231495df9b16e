//! Response heads built as an `http::HeaderMap` with names known at compile
//! time. Pingora's `insert_header` parses each name again (and keeps a
//! second, case-preserving map); a `HeaderMap` of constant names does
//! neither. HTTP/1.1 writes the standard names in title case and ours in
//! lower case (names are case-insensitive).

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use pingora::http::ResponseHeader;

use crate::dialect::GatewayError;

pub const MODEL: HeaderName = HeaderName::from_static("x-modelgate-model");
pub const PROVIDER: HeaderName = HeaderName::from_static("x-modelgate-provider");
pub const ROUTE: HeaderName = HeaderName::from_static("x-modelgate-route");
pub const ARM: HeaderName = HeaderName::from_static("x-modelgate-arm");
pub const SHADOW_MODEL: HeaderName = HeaderName::from_static("x-modelgate-shadow-model");
pub const DOWNGRADED_BY: HeaderName = HeaderName::from_static("x-modelgate-downgraded-by");
pub const COMPLEXITY: HeaderName = HeaderName::from_static("x-modelgate-complexity");
pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-modelgate-attempts");
pub const COST_USD: HeaderName = HeaderName::from_static("x-modelgate-cost-usd");
pub const CACHE: HeaderName = HeaderName::from_static("x-modelgate-cache");
pub const TRACE_ID: HeaderName = HeaderName::from_static("x-modelgate-trace-id");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-modelgate-request-id");
pub const ESCALATED: HeaderName = HeaderName::from_static("x-modelgate-escalated");
pub const CHECK_FAILED: HeaderName = HeaderName::from_static("x-modelgate-check-failed");
pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// Response headers never relayed as they are (hop-by-hop, and the framing
/// modelgate sets itself).
pub const DROP_RESPONSE: [HeaderName; 8] = [
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
];

/// A value from text modelgate did not write itself (a model or route name
/// from the config, a provider's header): an error, not a panic, when it
/// cannot be a header value.
pub fn text(value: &str) -> Result<HeaderValue, GatewayError> {
    HeaderValue::from_str(value).map_err(|_| crate::upstream::request::internal(format!("{value:?} cannot be sent as a header value")))
}

/// The head Pingora writes.
pub fn response(status: StatusCode, headers: HeaderMap) -> ResponseHeader {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers;
    ResponseHeader::from(parts)
}

/// An owned copy of the client's request head: method, target, version and
/// headers, without Pingora's case-preserving copy of the names (upstream
/// requests are built from names and values; standard names go out in
/// title case).
pub fn owned_request(client: &pingora::http::RequestHeader) -> pingora::http::RequestHeader {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = client.method.clone();
    parts.uri = client.uri.clone();
    parts.version = client.version;
    parts.headers = client.headers.clone();
    pingora::http::RequestHeader::from(parts)
}
