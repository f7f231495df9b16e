//! Listeners that accept client traffic. `gateway` is the base-URL mode:
//! Pingora's `ProxyHttp` answering every request itself; `body` is the
//! request-body view that rewrites only what it must.

mod body;
pub mod gateway;
