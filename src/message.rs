//! How fleet words a failure for a person: the message, then each of its
//! causes after `: `, on one line (`cannot read www: permission denied`).
//! `main` prints top-level errors this way; the few places that pass an
//! error on as text (the control socket's error reply, the detached start's
//! report) use the same words.

/// An error and its causes on one line, each after `: `.
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}
