use crate::cli::StatusArgs;

pub fn run(_args: StatusArgs) -> u8 {
    crate::cli::exit::FAILURE
}
