//! Integration tests: drive the real `fleet` binary.
