//! One module per subcommand: parse-level glue that turns arguments into calls
//! on the library, and [`run`], which picks the one the command line names.
//! Each returns its own error type; none prints its failure (`main` does).

use crate::cli::Command;
use crate::{Error, exit};

pub mod completions;
pub mod down;
pub mod export;
pub mod init;
pub mod logs;
pub mod man;
pub(crate) mod operate;
pub mod reload;
pub mod restart;
pub mod scale;
pub mod start;
pub mod status;
pub mod stop;
pub mod up;
pub(crate) mod watch;

pub(crate) use crate::logging::no_color;

/// Run one command to its end: the exit code of a command that did its job
/// (0, or for the hidden `guard` the code of the command it guarded), or the
/// error that stopped it, which `main` prints and turns into its exit code.
pub fn run(command: Command) -> Result<u8, Error> {
    /// A command that succeeded exits 0.
    fn done<E: Into<Error>>(r: Result<(), E>) -> Result<u8, Error> {
        r.map(|()| exit::OK).map_err(Into::into)
    }
    match command {
        Command::Up(a) => done(up::run(a)),
        Command::Status(a) => done(status::run(a)),
        Command::Top(a) => done(status::run(crate::cli::StatusArgs {
            json: false,
            watch: true,
            state: a.state,
        })),
        Command::Down(a) => done(down::run(a)),
        Command::Restart(a) => done(restart::run(a)),
        Command::Stop(a) => done(stop::run(a)),
        Command::Start(a) => done(start::run(a)),
        Command::Scale(a) => done(scale::run(a)),
        Command::Reload(a) => done(reload::run(a)),
        Command::Logs(a) => done(logs::run(a)),
        Command::Serve(a) => done(crate::worker::run(a)),
        Command::Bench(a) => done(crate::bench::run(&a)),
        Command::Guard(a) => crate::guard::run(a).map_err(Into::into),
        Command::Init => done(init::run()),
        Command::Completions(a) => {
            completions::run(a);
            Ok(exit::OK)
        }
        Command::Man(a) => done(man::run(a)),
        Command::Export(a) => done(export::run(a)),
    }
}

/// Write a line to stdout, ignoring a closed pipe (`fleet status | head`):
/// the reader has what it wanted.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
