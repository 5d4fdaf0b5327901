use crate::cli::UpArgs;

pub fn run(_args: UpArgs) -> u8 {
    crate::cli::exit::FAILURE
}
