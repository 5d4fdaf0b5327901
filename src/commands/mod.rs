//! One module per subcommand: parse-level glue that turns arguments into calls
//! on the library. Each returns its own error type; none prints its failure
//! (`main` does, through `crate::run`).

pub mod completions;
pub mod down;
pub mod export;
pub mod init;
pub mod logs;
pub mod man;
pub(crate) mod operate;
pub mod reload;
pub mod restart;
pub mod scale;
pub mod start;
pub mod status;
pub mod stop;
pub mod up;
pub(crate) mod watch;

pub(crate) use crate::logging::no_color;

/// Write a line to stdout, ignoring a closed pipe (`fleet status | head`):
/// the reader has what it wanted.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
