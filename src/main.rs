use std::process::ExitCode;

use clap::Parser;
use fleet::cli::{Cli, Command};
use fleet::exit;
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
    let result: Result<u8, fleet::Error> = match cli.command {
        Command::Up(a) => Ok(fleet::commands::up::run(a)),
        Command::Status(a) => Ok(fleet::commands::status::run(a)),
        Command::Top(a) => Ok(fleet::commands::status::run(fleet::cli::StatusArgs {
            json: false,
            watch: true,
            state: a.state,
        })),
        Command::Down(a) => Ok(fleet::commands::down::run(a)),
        Command::Restart(a) => Ok(fleet::commands::restart::run(a)),
        Command::Stop(a) => Ok(fleet::commands::stop::run(a)),
        Command::Start(a) => Ok(fleet::commands::start::run(a)),
        Command::Scale(a) => Ok(fleet::commands::scale::run(a)),
        Command::Reload(a) => Ok(fleet::commands::reload::run(a)),
        Command::Logs(a) => Ok(fleet::commands::logs::run(a)),
        Command::Serve(a) => fleet::worker::run(a).map(|()| exit::OK).map_err(Into::into),
        Command::Bench(a) => Ok(fleet::bench::run(a)),
        Command::Guard(a) => Ok(fleet::guard::run(a)),
        Command::Init => Ok(fleet::commands::init::run()),
        Command::Completions(a) => Ok(fleet::commands::completions::run(a)),
        Command::Man(a) => Ok(fleet::commands::man::run(a)),
        Command::Export(a) => Ok(fleet::commands::export::run(a)),
    };
    // The one place a command's failure is printed and given its exit code.
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("fleet: {}", e.to_line());
            ExitCode::from(e.exit_code())
        }
    }
}
