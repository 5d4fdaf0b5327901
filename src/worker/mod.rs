//! The built-in worker (`fleet serve`).
use crate::cli::ServeArgs;

/// Run `fleet serve` to completion; returns the exit code.
pub fn run(_args: ServeArgs) -> u8 {
    crate::cli::exit::FAILURE
}
