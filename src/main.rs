use std::process::ExitCode;

use clap::Parser;
use fleet::cli::{Cli, Command};
use fleet::logging::Role;

fn main() -> ExitCode {
    let cli = Cli::parse();
    fleet::logging::init(match &cli.command {
        Command::Up(a) => Role::Supervisor {
            detached: a.detached_child,
        },
        Command::Serve(a) => Role::Worker {
            supervised: a.lifeline,
        },
        _ => Role::Command,
    });
    let code = match cli.command {
        Command::Up(a) => fleet::commands::up::run(a),
        Command::Status(a) => fleet::commands::status::run(a),
        Command::Top(a) => fleet::commands::status::run(fleet::cli::StatusArgs {
            json: false,
            watch: true,
            state: a.state,
        }),
        Command::Down(a) => fleet::commands::down::run(a),
        Command::Logs(a) => fleet::commands::logs::run(a),
        Command::Serve(a) => fleet::worker::run(a),
        Command::Bench(a) => fleet::bench::run(a),
        Command::Guard(a) => fleet::guard::run(a),
    };
    ExitCode::from(code)
}
