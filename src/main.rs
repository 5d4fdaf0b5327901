use std::process::ExitCode;

use clap::Parser;
use fleet::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Up(a) => fleet::commands::up::run(a),
        Command::Status(a) => fleet::commands::status::run(a),
        Command::Down(a) => fleet::commands::down::run(a),
        Command::Logs(a) => fleet::commands::logs::run(a),
        Command::Serve(a) => fleet::worker::run(a),
        Command::Bench(a) => fleet::bench::run(a),
    };
    ExitCode::from(code)
}
