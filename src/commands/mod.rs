//! One module per subcommand: parse-level glue that turns arguments into calls
//! on the library and errors into one-line messages and exit codes.
pub mod completions;
pub mod down;
pub mod export;
pub mod init;
pub mod logs;
pub mod man;
pub mod status;
pub mod up;

/// Write a line to stdout, ignoring a closed pipe (`fleet status | head`):
/// the reader has what it wanted.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
