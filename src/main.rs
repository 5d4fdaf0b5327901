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
    let result = fleet::run(cli.command);
    // The one place a command's failure is printed and given its exit code.
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("fleet: {}", e.to_line());
            ExitCode::from(e.exit_code())
        }
    }
}
