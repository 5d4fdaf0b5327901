//! The one HTTP/1 codec: pure, no I/O, shared by the http balancer and the
//! built-in worker so both frame a message by the same rules.
//!
//! `framing` parses and checks request and response heads strictly (RFC
//! 9112) and finds where a body ends; the balancer also rewrites heads
//! through it. Fuzzed by `fuzz/fuzz_targets/http_framing.rs`, whose checks
//! also run as unit tests. `response` writes a server's own response head
//! (the worker's answers).

pub mod framing;
pub(crate) mod response;
