use crate::cli::LogsArgs;

pub fn run(_args: LogsArgs) -> u8 {
    crate::cli::exit::FAILURE
}
