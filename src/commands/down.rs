use crate::cli::DownArgs;

pub fn run(_args: DownArgs) -> u8 {
    crate::cli::exit::FAILURE
}
