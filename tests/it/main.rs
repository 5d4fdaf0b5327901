//! Integration tests: drive the real `fleet` binary.
#![allow(clippy::unwrap_used)]
mod bench;
