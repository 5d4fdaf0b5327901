//! One module per subcommand: parse-level glue that turns arguments into calls
//! on the library and errors into one-line messages and exit codes.
pub mod down;
pub mod logs;
pub mod status;
pub mod up;

/// Print `fleet: <error>` on stderr (with its causes, ripgrep-style `{:#}`).
pub fn report(err: &anyhow::Error) {
    eprintln!("fleet: {err:#}");
}
