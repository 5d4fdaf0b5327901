//! Precedence: flag > file > default, with every value remembering where
//! it came from ([`Origin`]) so an error blames the key or flag the user
//! wrote, never a default standing in for it ([`Report`]).

use std::path::Path;

use serde_saphyr::Spanned;

use super::ConfigError;
use super::parse::Problem;
use super::raw::{Node, Value};

/// A file value and its dotted key from one spelling of the raw struct's
/// field, so a key cannot be misspelt here: `entry!(h, health.interval)` is
/// `("health.interval", h.interval.as_ref())`.
macro_rules! entry {
    ($raw:expr, $section:ident . $field:ident) => {
        (
            concat!(stringify!($section), ".", stringify!($field)),
            $raw.$field.as_ref(),
        )
    };
    ($raw:expr, $field:ident) => {
        (stringify!($field), $raw.$field.as_ref())
    };
}
pub(super) use entry;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Default,
    /// The line in the config file.
    File(usize),
    /// The flag, e.g. `--backends`.
    Flag(&'static str),
}

/// A value and where it came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Set<T> {
    pub(super) value: T,
    pub(super) from: Origin,
}

/// Builds errors that point at an origin.
pub(super) struct Report<'a> {
    pub(super) file: Option<&'a Path>,
}

impl Report<'_> {
    pub(super) fn at(&self, from: Origin, key: &str, problem: impl Into<String>) -> ConfigError {
        let problem = problem.into();
        match (from, self.file) {
            (Origin::File(line), Some(path)) => ConfigError::File {
                path: path.to_path_buf(),
                line,
                key: key.to_owned(),
                problem,
            },
            (Origin::Flag(flag), _) => ConfigError::Flag {
                flag: flag.to_owned(),
                problem,
            },
            (Origin::Default | Origin::File(_), _) => ConfigError::Default {
                key: key.to_owned(),
                problem,
            },
        }
    }

    /// Check a value from the file, if present; `entry!` gives the key and
    /// the node from one spelling of the field.
    pub(super) fn file<T>(
        &self,
        (key, node): (&str, Option<&Node>),
        check: impl FnOnce(&Value) -> Result<T, Problem>,
    ) -> Result<Option<Set<T>>, ConfigError> {
        node.map(|n| {
            let from = Origin::File(line_of(n));
            check(&n.value)
                .map(|value| Set { value, from })
                .map_err(|problem| self.at(from, key, problem.0))
        })
        .transpose()
    }

    /// Check a flag's value, if given.
    pub(super) fn flag<R, T>(
        &self,
        flag: &'static str,
        raw: Option<R>,
        check: impl FnOnce(R) -> Result<T, Problem>,
    ) -> Result<Option<Set<T>>, ConfigError> {
        let from = Origin::Flag(flag);
        raw.map(|r| {
            check(r)
                .map(|value| Set { value, from })
                .map_err(|problem| self.at(from, flag, problem.0))
        })
        .transpose()
    }
}

pub(super) fn line_of<T>(node: &Spanned<T>) -> usize {
    usize::try_from(node.referenced.line()).unwrap_or(usize::MAX)
}

/// Precedence: flag > file > default.
pub(super) fn pick<T>(flag: Option<Set<T>>, file: Option<Set<T>>, default: T) -> Set<T> {
    flag.or(file).unwrap_or(Set {
        value: default,
        from: Origin::Default,
    })
}

/// The file's value, or the default.
pub(super) fn or_default<T>(file: Option<Set<T>>, default: T) -> Set<T> {
    pick(None, file, default)
}

/// `", the default"` for messages that mention a value the user did not write.
pub(super) fn note(from: Origin) -> &'static str {
    match from {
        Origin::Default => ", the default",
        Origin::File(_) | Origin::Flag(_) => "",
    }
}
