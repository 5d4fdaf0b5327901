//! `fleet status [--json]`: ask the supervisor, print what it says.

use crate::cli::StatusArgs;
use crate::control::client::{self, ControlError};
use crate::state_dir::StateDir;

/// Why there is no status to show.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("status --watch")]
    Watch(#[source] std::io::Error),
}

impl StatusError {
    /// No fleet is exit 3 (see `ControlError::exit_code`).
    pub fn exit_code(&self) -> u8 {
        match self {
            StatusError::Control(e) => e.exit_code(),
            StatusError::Watch(_) => crate::exit::FAILURE,
        }
    }
}

/// Print the running fleet once (`--watch` and `fleet top` are
/// `commands::watch`, which `crate::run` calls).
pub(crate) fn run(args: StatusArgs) -> Result<(), StatusError> {
    let state = StateDir::new(args.state.resolve());
    let s = client::status(&state).inspect_err(|e| {
        if let Some(note) = e.note() {
            eprintln!("fleet: {note}");
        }
    })?;
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&s).expect("status serializes")
        );
    } else {
        // On a terminal, fitted to its width; on a pipe, whole.
        let width = std::io::IsTerminal::is_terminal(&std::io::stdout())
            .then(crossterm::terminal::size)
            .and_then(Result::ok)
            .map(|(cols, _)| usize::from(cols))
            .filter(|c| *c > 0);
        crate::outln!("{}", super::status_view::render_width(&s, width).trim_end());
    }
    Ok(())
}
