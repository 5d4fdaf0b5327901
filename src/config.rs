//! fleet.yaml and its command-line overrides.
//!
//! Two layers, as in ripgrep's low/high args: `RawConfig` is what serde reads
//! (every key optional, unknown keys rejected), `Config` is the validated
//! result the rest of the program uses (durations parsed, ranges checked,
//! paths resolved). Nothing outside this module sees an unvalidated value.
//! Precedence: command-line flag > fleet.yaml > built-in default. The whole
//! file is validated even where a flag overrides a key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::UpArgs;

/// The validated configuration of one fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Number of backends (>= 1).
    pub backends: u16,
    /// Backends listen on `base_port .. base_port + backends` (checked to fit in u16).
    pub base_port: u16,
    /// The balancer's address; port 0 means "let the OS choose".
    pub listen: SocketAddr,
    /// Directory the built-in worker serves (absolute, exists).
    pub www: PathBuf,
    /// What each backend runs.
    pub backend: BackendCommand,
    pub health: HealthConfig,
    pub restart: RestartConfig,
    pub shutdown: ShutdownConfig,
    pub balancer: BalancerConfig,
    /// The file this came from, if any (for messages).
    pub source: Option<PathBuf>,
}

/// The program a backend runs.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendCommand {
    /// `fleet serve --port P --www DIR` from this same executable.
    Builtin,
    /// A configured program; `{port}` in `args` is replaced, `PORT` is set.
    Command {
        program: String,
        args: Vec<String>,
        /// Working directory (absolute).
        cwd: PathBuf,
        env: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthKind {
    /// GET `path`; a 2xx or 3xx status passes.
    Http { path: String },
    /// A TCP connect passes.
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
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
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestartConfig {
    pub policy: RestartPolicy,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// More restarts than this within `window` marks the backend failed.
    pub max_restarts: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownConfig {
    /// Drain and SIGTERM grace before SIGKILL.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BalancerConfig {
    /// Concurrent client connections; past it new clients wait in the listen backlog.
    pub max_connections: u32,
    /// Per-backend connect timeout before trying the next backend.
    pub connect_timeout: Duration,
    /// A proxied connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Config {
    /// The lab's setup: 4 built-in workers on 9002..9005 behind 127.0.0.1:44444.
    fn default() -> Self {
        Config {
            backends: 4,
            base_port: 9002,
            listen: SocketAddr::from(([127, 0, 0, 1], 44444)),
            www: PathBuf::from("www"),
            backend: BackendCommand::Builtin,
            health: HealthConfig {
                kind: HealthKind::Http { path: "/".into() },
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
            },
            balancer: BalancerConfig {
                max_connections: 4096,
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(60),
            },
            source: None,
        }
    }
}

impl Config {
    /// The backends' ports, in order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.backends).map(|i| self.base_port + i)
    }
}

/// A configuration error: exit code 2, nothing started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

/// Read fleet.yaml (the `-f` file, or `./fleet.yaml` when present) and apply
/// the command-line overrides.
pub fn load(args: &UpArgs) -> Result<Config, ConfigError> {
    // PLACEHOLDER: replaced by the full loader (RawConfig + validation).
    let mut c = Config::default();
    if let Some(n) = args.backends {
        c.backends = u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
            ConfigError::Invalid(format!("--backends: must be 1..=1000 (got {n})"))
        })?;
    }
    if let Some(p) = args.base_port {
        c.base_port = u16::try_from(p)
            .map_err(|_| ConfigError::Invalid(format!("--base-port: {p} is past 65535")))?;
    }
    if let Some(l) = &args.listen {
        c.listen = crate::cli::parse_listen(l)
            .map_err(|e| ConfigError::Invalid(format!("--listen: {e}")))?;
    }
    if let Some(w) = &args.www {
        c.www = w.clone();
    }
    c.www = std::path::absolute(&c.www).map_err(|e| ConfigError::Invalid(format!("www: {e}")))?;
    if !c.www.is_dir() {
        return Err(ConfigError::Invalid(format!(
            "www: directory {} does not exist",
            c.www.display()
        )));
    }
    Ok(c)
}
