//! The top-level error. Every command's failure converges here, and `main`
//! is the one place that prints it (`fleet: ` and the message, then each
//! cause after `: `) and turns it into an exit code. Each module keeps its
//! own error type for the failures its callers may handle; this enum only
//! gathers them and says which exit code each one means.

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Up(#[from] crate::commands::up::UpError),
    #[error(transparent)]
    Status(#[from] crate::commands::status::StatusError),
    #[error(transparent)]
    Down(#[from] crate::commands::down::DownError),
    #[error(transparent)]
    Operate(#[from] crate::commands::operate::OperateError),
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
    #[error(transparent)]
    Logs(#[from] crate::commands::logs::LogsError),
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    #[error(transparent)]
    Init(#[from] crate::commands::init::InitError),
    #[error(transparent)]
    Man(#[from] crate::commands::man::ManError),
    #[error(transparent)]
    Export(#[from] crate::commands::export::ExportError),
}

impl Error {
    /// The exit code documented in the README for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Up(e) => e.exit_code(),
            Error::Status(e) => e.exit_code(),
            Error::Down(e) => e.exit_code(),
            Error::Operate(e) => e.exit_code(),
            Error::Worker(e) => e.exit_code(),
            Error::Guard(e) => e.exit_code(),
            Error::Logs(e) => e.exit_code(),
            Error::Bench(e) => e.exit_code(),
            Error::Init(e) => e.exit_code(),
            Error::Man(e) => e.exit_code(),
            Error::Export(e) => e.exit_code(),
        }
    }

    /// The message and its causes on one line: `cannot read x: permission denied`.
    pub fn to_line(&self) -> String {
        crate::message::one_line(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit;

    #[test]
    fn causes_follow_the_message_on_one_line() {
        let e = Error::from(crate::worker::WorkerError::ReadWww {
            path: "www".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
        assert_eq!(
            e.to_line(),
            "cannot read www directory www: permission denied"
        );
        assert_eq!(e.exit_code(), exit::USAGE);
    }
}
