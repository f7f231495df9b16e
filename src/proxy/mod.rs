//! Listeners that accept client traffic. `gateway` is the base-URL mode:
//! Pingora's `ProxyHttp` answering every request itself.

pub mod conn;
pub mod ctx;
pub mod forward;
pub mod gateway;
pub mod guard;
pub mod head;
pub mod intake;
pub mod target;
pub mod tunnel;
