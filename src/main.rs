use std::process::ExitCode;

use clap::Parser;
use fleet::cli::{Cli, Command, GuardArgs};
use fleet::logging::Role;

fn main() -> ExitCode {
    // The supervisor starts a `fleet guard` per custom backend: that exact
    // argv goes straight to the guard, without clap or the logging setup
    // (it logs nothing), which are a fifth of each backend's start.
    let command = match GuardArgs::from_exact_argv(std::env::args_os().skip(1)) {
        Some(args) => Command::Guard(args),
        None => parse(),
    };
    let result = fleet::run(command);
    // The one place a command's failure is printed and given its exit code.
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("fleet: {}", e.to_line());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Every other command: parse it, and set up this process's logging.
fn parse() -> Command {
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
    cli.command
}
