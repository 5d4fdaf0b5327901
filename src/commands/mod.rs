//! One module per subcommand: parse-level glue that turns arguments into calls
//! on the library. Each returns its own error type; none prints its failure
//! (`main` does, through `crate::run`).

pub(crate) mod completions;
pub(crate) mod down;
pub(crate) mod export;
pub(crate) mod init;
pub(crate) mod logs;
pub(crate) mod man;
pub(crate) mod operate;
pub(crate) mod reload;
pub(crate) mod restart;
pub(crate) mod scale;
pub(crate) mod start;
pub(crate) mod status;
pub(crate) mod status_view;
pub(crate) mod stop;
pub(crate) mod up;
pub(crate) mod upgrade;
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
