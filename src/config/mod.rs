//! fleet.yaml and its command-line overrides.
//!
//! Two layers, as in ripgrep's low/high args: `raw` is what serde reads
//! (every key optional, unknown keys rejected, each value kept with its
//! line), `Config` is the validated result the rest of the program uses
//! (durations parsed, ranges checked, paths absolute). Nothing outside this
//! module sees an unvalidated value, and every rejection is a [`ConfigError`]
//! naming the file and line (or flag), the key and the problem.
//!
//! # Rules that are decisions, not facts
//! - Precedence: command-line flag > fleet.yaml > built-in default. The file
//!   is validated as a whole, including keys a flag overrides, and a
//!   `backends`/`base_port` pair written in the file must fit even if a flag
//!   changes one of them. Filesystem checks apply only to the paths used,
//!   and upstream names are resolved only for the list used; both run last.
//! - Without `-f`, the file is `./fleet.yaml`, else the nearest parent
//!   directory's ([`find_file`]), as docker compose finds its file.
//! - Paths in the file (`www`, `backend.cwd`), and the defaults standing in
//!   for them, are relative to the file's directory, so a fleet.yaml means
//!   the same from any directory. `--www` is relative to the current
//!   directory, like any path on a command line. With no file, defaults are
//!   relative to the current directory.
//! - `www` must be an existing directory only when the built-in worker runs,
//!   and only when it is configured: with no `www:` or `--www` and no
//!   `www/` where the default points, the workers serve the embedded page.
//! - A key with no value (`backends:` or `~`) means the default.
//! - Durations follow the one grammar of [`crate::duration`] (`250ms`, `1s`,
//!   `2m`, `1m 30s`; a bare number is rejected as missing its unit), and
//!   here must be longer than 0 and at most [`MAX_DURATION`].
//! - `health.timeout <= health.interval`: probes of one backend never overlap.
//! - `restart.max_restarts >= 1`; "never restart" is `policy: never`.
//! - `backend.env` may not set `PORT`: fleet sets it for each backend.
//! - `admin_hosts` are host names or IP literals without a port, stored
//!   lowercase; they only widen what the admin address answers to.
//! - `upstreams` are `HOST:PORT`, resolved when the config is loaded (the
//!   first address a name resolves to); `--upstream` flags replace the
//!   file's list. No two may be the same address, none may be a local
//!   backend's, and `backends: 0` is allowed only with at least one.

mod checks;
mod error;
mod lookup;
mod parse;
mod precedence;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU8;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use crate::builtin::Www;
use crate::builtin::{DEFAULT_WWW, HEALTH_PATH};
pub(crate) use error::ConfigError;

/// The file `fleet up` reads when there is no `-f` ([`find_file`]).
pub(crate) const DEFAULT_FILE: &str = "fleet.yaml";

/// The most backends one fleet may have: far more than one machine should
/// run, few enough that a typo (`backends: 40000`) is caught.
pub(crate) const MAX_BACKENDS: u16 = 1000;

/// The longest duration any key accepts. Longer is surely a typo, and the
/// cap keeps `Instant + duration` far from overflowing.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// What the command line says over fleet.yaml (`fleet up`, `fleet export`),
/// as the user typed it: each value is checked here, against its flag, like
/// a file value against its line. The CLI fills it (`cli::UpArgs::overrides`);
/// `None` (or an empty list) leaves the file's value, or the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Overrides {
    /// `-f`: the file to read instead of finding one ([`find_file`]).
    pub file: Option<PathBuf>,
    /// `--backends`.
    pub backends: Option<u32>,
    /// `--base-port`.
    pub base_port: Option<u32>,
    /// `--listen`: `ADDR:PORT` or `PORT`.
    pub listen: Option<String>,
    /// `--www`, relative to the current directory.
    pub www: Option<PathBuf>,
    /// `--mode`: `http` or `tcp`.
    pub mode: Option<String>,
    /// `--admin`: `ADDR:PORT` or `PORT`.
    pub admin: Option<String>,
    /// `--upstream` (repeatable): `HOST:PORT`; replaces the file's list.
    pub upstreams: Vec<String>,
    /// `--watch [PATH...]`: `Some` turns watch mode on; its paths (relative
    /// to the current directory) replace the file's, none keeps the file's
    /// or the default.
    pub watch: Option<Vec<PathBuf>>,
}

/// The validated configuration of one fleet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// Number of local backends (>= 1, or >= 0 when there are upstreams).
    pub backends: u16,
    /// Backends listen on `base_port .. base_port + backends` (checked to fit in u16).
    pub base_port: u16,
    /// The balancer's address; port 0 means "let the OS choose".
    pub listen: SocketAddr,
    /// What the built-in worker serves: a directory (absolute; checked to
    /// exist only when `backend` is `Builtin`), or the embedded page when no
    /// www is configured and the default one does not exist.
    pub www: Www,
    /// What each backend runs.
    pub backend: BackendProgram,
    pub health: HealthConfig,
    pub restart: RestartConfig,
    pub shutdown: ShutdownConfig,
    pub balancer: BalancerConfig,
    /// The admin HTTP address (`/metrics`, `/status.json`, dashboard); off
    /// unless set. Port 0 lets the OS choose.
    pub admin: Option<SocketAddr>,
    /// More names the admin address answers to (lowercase, no port), beside
    /// `localhost`, loopback literals and its own address (`admin::host`).
    pub admin_hosts: Vec<String>,
    /// Remote backends, balanced beside the local ones (or instead of them:
    /// `backends` may be 0 when there are upstreams).
    pub upstreams: Vec<Upstream>,
    /// Watch mode (`watch:` or `up --watch`): off unless set.
    pub watch: Option<WatchConfig>,
    /// The file this came from (absolute), if any.
    pub source: Option<PathBuf>,
}

/// Watch mode: a change under `paths`, debounced, rolls the fleet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WatchConfig {
    /// What to watch, recursively (absolute; checked to exist). By default
    /// the backend's `cwd` for a custom command, `www` for the built-in
    /// worker.
    pub paths: Vec<PathBuf>,
    /// Glob patterns ignored beside the built-in ones (`watcher::ignore`).
    pub ignore: Vec<String>,
    /// Quiet time after the last change before acting.
    pub debounce: Duration,
}

/// `watch.debounce` when not set: long enough for an editor's save (write a
/// temp file, rename, touch) to arrive as one change.
pub(crate) const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(300);

/// A backend fleet does not run: an address it balances to and health-checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// As written (`lab-pc-2:9002`): its name in status and logs.
    pub name: String,
    /// Resolved once, when the config is loaded.
    pub addr: SocketAddr,
}

/// The program a backend runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BackendProgram {
    /// `fleet serve --port P --www DIR` from this same executable.
    Builtin,
    /// A configured program; `{port}` in `args` is replaced, `PORT` is set.
    Custom {
        program: String,
        args: Vec<String>,
        /// Working directory (absolute).
        cwd: PathBuf,
        env: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HealthKind {
    /// GET `path`; a 2xx or 3xx status passes.
    Http { path: String },
    /// A TCP connect passes.
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HealthConfig {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes before an unhealthy running backend takes traffic again.
    pub rise: u32,
    /// Consecutive failures before a backend stops taking traffic.
    pub fall: u32,
    /// Consecutive failures before a running backend is killed and restarted.
    pub restart_after: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RestartConfig {
    pub policy: RestartPolicy,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// More restarts than this within `window` marks the backend failed.
    pub max_restarts: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ShutdownConfig {
    /// Drain and SIGTERM grace before SIGKILL.
    pub timeout: Duration,
    /// How long a draining backend (`fleet restart`, `stop`, `scale`) may
    /// finish its in-flight work before it gets SIGTERM anyway.
    pub drain_timeout: Duration,
}

/// The balancing strategy, `balancer.strategy` in fleet.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// Each eligible backend in turn.
    RoundRobin,
    /// The backend with the least in-flight work (`Slot::active`); ties go
    /// round-robin so an idle fleet still spreads.
    LeastConnections,
    /// Two backends at random, the less busy of them (Mitzenmacher's "power
    /// of two choices": nearly least-connections without scanning).
    PowerOfTwo,
    /// The same client address keeps the same backend while it is up
    /// (rendezvous hashing: when a backend leaves, only its clients move).
    IpHash,
}

impl Strategy {
    /// The names fleet.yaml accepts, in the order messages list them.
    pub(crate) const NAMES: &'static [&'static str] = &[
        "round-robin",
        "least-connections",
        "power-of-two",
        "ip-hash",
    ];

    pub(crate) fn from_name(name: &str) -> Option<Strategy> {
        Some(match name {
            "round-robin" => Strategy::RoundRobin,
            "least-connections" => Strategy::LeastConnections,
            "power-of-two" => Strategy::PowerOfTwo,
            "ip-hash" => Strategy::IpHash,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastConnections => "least-connections",
            Strategy::PowerOfTwo => "power-of-two",
            Strategy::IpHash => "ip-hash",
        }
    }
}

/// What the balancer sees of the traffic it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BalancerMode {
    /// Parse HTTP/1: every request chooses its backend; backend connections are pooled.
    Http,
    /// Splice bytes: one backend per client connection, for any TCP protocol.
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BalancerConfig {
    /// Fixed for the balancer's life (a reload cannot switch engines).
    pub mode: BalancerMode,
    /// How a request (http) or connection (tcp) chooses among routable backends.
    pub strategy: Strategy,
    /// Concurrent client connections; when full, idle ones are closed (oldest
    /// first) to admit new clients, else new clients wait in the listen backlog.
    pub max_connections: u32,
    /// Per-backend connect timeout before trying the next backend.
    pub connect_timeout: Duration,
    /// A proxied connection with no bytes either way for this long is closed
    /// (in http mode also: a kept-alive client with no next request).
    pub idle_timeout: Duration,
    /// http mode: a backend that sends no response head this long after the
    /// request was sent gets the client a 504.
    pub response_timeout: Duration,
    /// When failed requests take a backend out of rotation (`balancer::passive`).
    pub passive: PassiveHealth,
    /// One line per request (tcp mode: per connection), rotated; off unless
    /// set. Absolute (relative in the file to the file's directory).
    pub access_log: Option<PathBuf>,
    /// http mode: add `X-Fleet-Backend` (the backend's port, an upstream's
    /// name) to a response whose backend did not set it.
    pub backend_header: bool,
    /// A backend coming (back) into rotation while the fleet serves gets a
    /// share of new requests that grows linearly from 0 to its full share
    /// over this long (HAProxy's `slowstart`); zero turns it off.
    pub slow_start: Duration,
    /// Engine threads of the data plane, each a runtime accepting on its
    /// own socket (`balancer::run`); `None`: one per core the process may
    /// use. Fixed for the balancer's life, as `mode` is.
    pub threads: Option<NonZeroU8>,
}

/// The most engine threads `balancer.threads` may ask for (and the most
/// one per core gives).
pub(crate) const MAX_ENGINE_THREADS: u8 = 64;

impl BalancerConfig {
    /// How many engine threads to run: `threads`, else one per core the
    /// process may use (1 if that is unknown), at most
    /// [`MAX_ENGINE_THREADS`].
    pub(crate) fn engine_threads(&self) -> usize {
        match self.threads {
            Some(n) => usize::from(n.get()),
            None => std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(usize::from(MAX_ENGINE_THREADS)),
        }
    }
}

/// Passive health: how many requests a backend may fail after they reached
/// it before it leaves rotation (`balancer.eject_after`, `eject_window`,
/// `max_ejection_percent`). A refused connect is not counted here: it takes
/// the backend out at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PassiveHealth {
    /// Consecutive failed requests (closed, reset, timed out or malformed
    /// after the request was written) that take a backend out of rotation.
    pub eject_after: u32,
    /// Those failures must all fall within this long of the first one.
    pub eject_window: Duration,
    /// The largest share of the backends (percent) that may be out of
    /// rotation for a failed-request ejection to happen; 0 turns it off.
    pub max_ejection_percent: u8,
}

impl Default for PassiveHealth {
    /// Envoy's outlier detection defaults (5 in a row, a 10 s interval), but
    /// half of the fleet rather than 10%: fleets are small.
    fn default() -> Self {
        PassiveHealth {
            eject_after: 5,
            eject_window: Duration::from_secs(10),
            max_ejection_percent: 50,
        }
    }
}

impl Default for Config {
    /// The lab's setup: 4 built-in workers on 9002..9005 behind 127.0.0.1:44444.
    fn default() -> Self {
        Config {
            backends: 4,
            base_port: 9002,
            listen: SocketAddr::from(([127, 0, 0, 1], 44444)),
            www: Www::Dir(PathBuf::from(DEFAULT_WWW)),
            backend: BackendProgram::Builtin,
            health: HealthConfig {
                kind: HealthKind::Http {
                    path: HEALTH_PATH.into(),
                },
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                rise: 2,
                fall: 3,
                restart_after: 5,
            },
            restart: RestartConfig {
                policy: RestartPolicy::Always,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                max_restarts: 5,
                window: Duration::from_secs(60),
            },
            shutdown: ShutdownConfig {
                timeout: Duration::from_secs(10),
                drain_timeout: Duration::from_secs(10),
            },
            admin: None,
            admin_hosts: Vec::new(),
            balancer: BalancerConfig {
                mode: BalancerMode::Http,
                strategy: Strategy::RoundRobin,
                max_connections: 4096,
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(60),
                response_timeout: Duration::from_secs(30),
                passive: PassiveHealth::default(),
                access_log: None,
                backend_header: true,
                slow_start: Duration::ZERO,
                threads: None,
            },
            upstreams: Vec::new(),
            watch: None,
            source: None,
        }
    }
}

impl BackendProgram {
    /// The program and arguments for the backend on `port`, with `{port}`
    /// replaced in every argument; `None` for the built-in worker, whose
    /// command line the supervisor builds from its own executable.
    pub(crate) fn argv(&self, port: u16) -> Option<(&str, Vec<String>)> {
        match self {
            BackendProgram::Builtin => None,
            BackendProgram::Custom { program, args, .. } => {
                let port = port.to_string();
                let args = args.iter().map(|a| a.replace("{port}", &port)).collect();
                Some((program.as_str(), args))
            }
        }
    }
}

impl Config {
    /// The backends' ports, in order.
    pub(crate) fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.backends).map(|i| self.base_port + i)
    }
}

/// Where `fleet up` finds fleet.yaml without `-f`: in the current
/// directory or the nearest parent that has one, as docker compose finds
/// compose.yaml (and the other verbs find `.fleet`, `crate::discover`).
/// The levels above `cwd` (0: here) and the file's path; `None` when no
/// directory up to the root has one. `cwd` must be absolute.
pub(crate) fn find_file(cwd: &Path) -> Option<(usize, PathBuf)> {
    cwd.ancestors()
        .map(|dir| dir.join(DEFAULT_FILE))
        .enumerate()
        .find(|(_, f)| f.exists())
}

/// Read fleet.yaml (the `-f` file, or the one [`find_file`] finds) and apply
/// the command-line overrides; relative paths on the command line are
/// relative to the current directory. Blocking: it reads files and resolves
/// upstream names (last, after every other check); on a runtime thread, call
/// it inside `spawn_blocking`.
pub(crate) fn load(args: &Overrides) -> Result<Config, ConfigError> {
    let cwd = std::env::current_dir().map_err(|e| ConfigError::Default {
        key: "current directory".into(),
        problem: format!("cannot be determined: {e}"),
    })?;
    load_in(args, &cwd)
}

/// [`load`], with the current directory passed in (tests, and a future
/// `fleet reload` that must resolve paths as `fleet up` did). `cwd` must be
/// absolute.
pub(crate) fn load_in(args: &Overrides, cwd: &Path) -> Result<Config, ConfigError> {
    let (shown, abs, explicit) = match &args.file {
        Some(f) => (f.clone(), cwd.join(f), true),
        None => match find_file(cwd) {
            None => return validate::resolve(None, args, cwd),
            Some((0, here)) => (PathBuf::from(DEFAULT_FILE), here, false),
            // Named in full: "fleet.yaml:3" would mean the one here.
            Some((_, above)) => (above.clone(), above, false),
        },
    };
    let text = std::fs::read_to_string(&abs).map_err(|e| ConfigError::Read {
        path: shown.clone(),
        problem: read_problem(&e, explicit),
    })?;
    let raw = raw::parse(&text, &shown)?;
    let file = validate::FileSource {
        raw,
        shown: &shown,
        abs,
    };
    validate::resolve(Some(file), args, cwd)
}

/// A read error in a few lowercase words.
fn read_problem(e: &std::io::Error, explicit: bool) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound if explicit => "config file (-f) does not exist".into(),
        ErrorKind::NotFound => "config file does not exist".into(),
        ErrorKind::PermissionDenied => "cannot read config file: permission denied".into(),
        ErrorKind::IsADirectory => "is a directory, not a config file".into(),
        ErrorKind::InvalidData => "config file is not UTF-8 text".into(),
        _ => format!("cannot read config file: {e}"),
    }
}

#[cfg(test)]
mod tests;
