//! What the rest of fleet knows of the built-in worker (`fleet serve`),
//! kept apart from the worker itself so that `config`, which chooses these
//! values, does not depend on the server that uses them.

use std::path::PathBuf;

/// What a worker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Www {
    /// Files under this directory.
    Dir(PathBuf),
    /// The pages compiled into fleet (`index.html` and `page.html`), for a
    /// worker given no directory where there is no `./www`.
    Embedded,
}

/// The directory `fleet serve` serves when given no `--www`, if it exists
/// (and `www:` in fleet.yaml when it is not set).
pub(crate) const DEFAULT_WWW: &str = "www";

/// The built-in worker's health endpoint, the supervisor's default probe for
/// it: answered 200 whatever the www dir holds (a www without `index.html`
/// must not look unhealthy). A dot segment, so no served file can shadow it.
pub(crate) const HEALTH_PATH: &str = "/.fleet/health";
