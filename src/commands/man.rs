//! `fleet man [-o DIR]`: the man page, rendered by clap_mangen from the clap
//! types (so it carries every flag's help and each subcommand's examples).
//! Without `-o` it prints `fleet.1`; with `-o DIR` it writes `fleet.1` and
//! one page per subcommand (`fleet-up.1`, ...) into DIR.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};
use crate::exit;

pub fn run(args: ManArgs) -> u8 {
    let cmd = Cli::command();
    match args.out_dir {
        None => {
            let mut page = Vec::new();
            if let Err(e) = clap_mangen::Man::new(cmd).render(&mut page) {
                eprintln!("fleet: cannot render the man page: {e}");
                return exit::FAILURE;
            }
            // A closed pipe (`fleet man | head`) is the reader's choice.
            let _ = std::io::stdout().lock().write_all(&page);
            exit::OK
        }
        Some(dir) => match write_pages(cmd, &dir) {
            Ok(()) => {
                crate::outln!("fleet: wrote man pages to {}", dir.display());
                exit::OK
            }
            Err(e) => {
                eprintln!("fleet: cannot write man pages to {}: {e}", dir.display());
                exit::FAILURE
            }
        },
    }
}

fn write_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Hidden subcommands (the internal `guard`) get no page.
    clap_mangen::generate_to(cmd, dir)
}
