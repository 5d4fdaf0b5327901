//! One module per subcommand: parse-level glue that turns arguments into calls
//! on the library and errors into one-line messages and exit codes.
pub mod down;
pub mod logs;
pub mod status;
pub mod up;
pub(crate) mod watch;

/// `NO_COLOR` (no-color.org): set and not empty means no colour anywhere.
pub(crate) fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Write a line to stdout, ignoring a closed pipe (`fleet status | head`):
/// the reader has what it wanted.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
