use std::process::ExitCode;

use clap::Parser;
use fleet::cli::{Cli, Command};
use fleet::logging::Role;

/// mimalloc rather than glibc's malloc: a worker allocates a task, hyper's
/// buffers and header maps per connection, and under callgrind glibc spent
/// about a fifth of `fleet serve`'s instructions in malloc/free (a quarter
/// of that in `posix_memalign` for tokio's cache-aligned task cells).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
