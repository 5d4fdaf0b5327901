//! The one error type of configuration loading.
//!
//! Every variant prints as a single line that says *where* (file and line,
//! flag, or built-in default), *which key* and *what is wrong*, so `main`
//! can print `fleet: {err}` and exit 2 without adding context. The `Display`
//! text is complete on its own: there is deliberately no `source()` chain, so
//! printing it alone or with its causes gives the same line.

use std::path::{Path, PathBuf};

/// A configuration error: the fleet must not start (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read at all (missing `-f` file, not UTF-8, ...).
    #[error("{}: {problem}", path.display())]
    Read { path: PathBuf, problem: String },
    /// The file is not YAML, or not shaped like a fleet.yaml at this point.
    #[error("{}:{line}:{column}: {problem}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        problem: String,
    },
    /// A key in the file is unknown, or its value is invalid.
    #[error("{}:{line}: {key}: {problem}", path.display())]
    File {
        path: PathBuf,
        line: usize,
        /// Dotted key path as written in the file, e.g. `health.interval`.
        key: String,
        problem: String,
    },
    /// A command-line flag's value is invalid.
    #[error("{flag}: {problem}")]
    Flag { flag: String, problem: String },
    /// A built-in default does not work here (e.g. there is no `./www`).
    #[error("{key}: {problem}")]
    Default { key: String, problem: String },
}

impl ConfigError {
    /// The 1-based line in the config file the error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { line, .. } | ConfigError::File { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The config file involved, as the user named it, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::Syntax { path, .. }
            | ConfigError::File { path, .. } => Some(path),
            ConfigError::Flag { .. } | ConfigError::Default { .. } => None,
        }
    }

    /// The key (`health.interval`) or flag (`--backends`) at fault, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::File { key, .. } | ConfigError::Default { key, .. } => Some(key),
            ConfigError::Flag { flag, .. } => Some(flag),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }

    /// What is wrong, without the location prefix.
    pub fn problem(&self) -> &str {
        match self {
            ConfigError::Read { problem, .. }
            | ConfigError::Syntax { problem, .. }
            | ConfigError::File { problem, .. }
            | ConfigError::Flag { problem, .. }
            | ConfigError::Default { problem, .. } => problem,
        }
    }
}
