//! `fleet man [-o DIR]`: the man page, rendered by clap_mangen from the clap
//! types (so it carries every flag's help and each subcommand's examples).
//! Without `-o` it prints `fleet.1`; with `-o DIR` it writes `fleet.1` and
//! one page per subcommand (`fleet-up.1`, ...) into DIR.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};
use crate::exit;

/// Why no man page was written.
#[derive(Debug, thiserror::Error)]
pub enum ManError {
    #[error("cannot render the man page")]
    Render(#[source] std::io::Error),
    #[error("cannot write man pages to {}", dir.display())]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ManError {
    pub fn exit_code(&self) -> u8 {
        exit::FAILURE
    }
}

pub(crate) fn run(args: ManArgs) -> Result<(), ManError> {
    let cmd = Cli::command();
    match args.out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .map_err(ManError::Render)?;
            // A closed pipe (`fleet man | head`) is the reader's choice.
            let _ = std::io::stdout().lock().write_all(&page);
        }
        Some(dir) => {
            write_pages(cmd, &dir).map_err(|source| ManError::Write {
                dir: dir.clone(),
                source,
            })?;
            crate::outln!("fleet: wrote man pages to {}", dir.display());
        }
    }
    Ok(())
}

fn write_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Hidden subcommands (the internal `guard`) get no page.
    clap_mangen::generate_to(cmd, dir)
}
