use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use fleet::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr (a terminal, or logs/supervisor.log when detached);
    // RUST_LOG overrides the default level.
    let default = match cli.command {
        Command::Up(_) | Command::Serve(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr (`fleet up | head`) must not kill the supervisor: the
        // default reports write errors with eprintln!, which panics on EPIPE.
        .log_internal_errors(false)
        .init();
    let result = fleet::commands::run(cli.command);
    // The one place a command's failure is printed and given its exit code.
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("fleet: {}", e.to_line());
            ExitCode::from(e.exit_code())
        }
    }
}
