//! `fleet completions SHELL`: the completion script clap_complete derives
//! from the same clap types that parse the command line, so it cannot drift.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

pub(crate) fn run(args: CompletionsArgs) {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "fleet", &mut out);
}
