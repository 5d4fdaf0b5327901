//! `fleet completions SHELL`: the completion script clap_complete derives
//! from the same clap types that parse the command line, so it cannot drift.
//!
//! Only what a person may type is offered: clap_complete lists hidden
//! arguments too (`up --detached-child`, the internal re-exec flag;
//! `export -d`, which export refuses), so the script is generated from a
//! copy of the command tree without hidden arguments and subcommands.

use clap::{Command, CommandFactory};

use crate::cli::{Cli, CompletionsArgs};

pub(crate) fn run(args: CompletionsArgs) {
    let mut cmd = visible(&Cli::command());
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "fleet", &mut out);
}

/// `cmd` with only what completions should offer: its visible arguments,
/// aliases and subcommands, and the texts the shells show beside them.
fn visible(cmd: &Command) -> Command {
    let mut out = Command::new(cmd.get_name().to_owned())
        .visible_aliases(cmd.get_visible_aliases().map(str::to_owned))
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(about) = cmd.get_long_about() {
        out = out.long_about(about.clone());
    }
    if let Some(v) = cmd.get_version() {
        out = out.version(v.to_owned());
    }
    out.subcommands(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(visible),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of<'a>(cmd: &'a Command, sub: &str) -> Vec<&'a str> {
        cmd.find_subcommand(sub)
            .unwrap_or_else(|| panic!("no {sub}"))
            .get_arguments()
            .filter_map(|a| a.get_long())
            .collect()
    }

    #[test]
    fn hidden_arguments_and_subcommands_are_not_offered() {
        let cmd = visible(&Cli::command());
        assert!(!args_of(&cmd, "up").contains(&"detached-child"));
        assert!(args_of(&cmd, "up").contains(&"detach"));
        let export = args_of(&cmd, "export");
        assert!(!export.contains(&"detach") && !export.contains(&"state-dir"));
        assert!(export.contains(&"file") && export.contains(&"image"));
        assert!(cmd.find_subcommand("guard").is_none());
        assert!(cmd.find_subcommand("ps").is_some(), "visible aliases stay");
        // The copy is a valid command (clap checks it in debug builds).
        cmd.clone().debug_assert();
    }
}
