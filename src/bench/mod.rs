//! `fleet bench`: the lab's ApacheBench table, built in.
use crate::cli::BenchArgs;

/// Run `fleet bench` to completion; returns the exit code.
pub fn run(_args: BenchArgs) -> u8 {
    crate::cli::exit::FAILURE
}
