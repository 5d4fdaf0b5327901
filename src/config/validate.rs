//! Raw file values + flags -> `Config`, in a fixed order so that every error
//! is reported against the place the user wrote the value:
//!
//! 1. every key present in the file is checked on its own, even one a flag
//!    overrides (the file must be valid as a whole, not just the parts used);
//! 2. every flag is checked on its own;
//! 3. values are merged: flag > file > default, each remembering its origin;
//! 4. rules that relate two keys (port range, timeout <= interval, backoff
//!    order) run on the file's own values when it sets both, then on the
//!    merged values, and blame the key the user wrote rather than a default;
//! 5. filesystem checks (www, backend.cwd) run on the paths that will be used.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::Strategy;
use super::raw::{Node, RawConfig, Value, closest, quote};
use super::{
    BackendCommand, BalancerConfig, BalancerMode, Config, ConfigError, HealthConfig, HealthKind,
    MAX_BACKENDS, MAX_DURATION, PassiveHealth, RestartConfig, RestartPolicy, ShutdownConfig,
    Upstream, Www,
};
use crate::cli::UpArgs;

const NO_BACKENDS: &str = "must be at least 1 when there are no upstreams (got 0)";

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

/// What is wrong with one value, in a few lowercase words: the tail of the
/// `ConfigError` line, which adds where the value was written and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem(String);

impl From<&str> for Problem {
    fn from(text: &str) -> Self {
        Problem(text.to_owned())
    }
}

impl From<Problem> for String {
    fn from(p: Problem) -> String {
        p.0
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `Problem(format!(...))`.
macro_rules! problem {
    ($($arg:tt)*) => {
        Problem(format!($($arg)*))
    };
}

/// The config file being applied.
pub(super) struct FileSource<'a> {
    pub(super) raw: RawConfig,
    /// As the user named it, for messages.
    pub(super) shown: &'a Path,
    /// Absolute path, for `Config::source`.
    pub(super) abs: PathBuf,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Default,
    /// The line in the config file.
    File(usize),
    /// The flag, e.g. `--backends`.
    Flag(&'static str),
}

/// A value and where it came from.
#[derive(Debug, Clone, Copy)]
struct Set<T> {
    value: T,
    from: Origin,
}

/// Builds errors that point at an origin.
struct Report<'a> {
    file: Option<&'a Path>,
}

impl Report<'_> {
    fn at(&self, from: Origin, key: &str, problem: impl Into<String>) -> ConfigError {
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
    fn file<T>(
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
    fn flag<R, T>(
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

fn line_of<T>(node: &Spanned<T>) -> usize {
    usize::try_from(node.referenced.line()).unwrap_or(usize::MAX)
}

/// Precedence: flag > file > default.
fn pick<T>(flag: Option<Set<T>>, file: Option<Set<T>>, default: T) -> Set<T> {
    flag.or(file).unwrap_or(Set {
        value: default,
        from: Origin::Default,
    })
}

/// The file's value, or the default.
fn or_default<T>(file: Option<Set<T>>, default: T) -> Set<T> {
    pick(None, file, default)
}

/// `", the default"` for messages that mention a value the user did not write.
fn note(from: Origin) -> &'static str {
    match from {
        Origin::Default => ", the default",
        Origin::File(_) | Origin::Flag(_) => "",
    }
}

pub(super) fn resolve(
    file: Option<FileSource<'_>>,
    args: &UpArgs,
    cwd: &Path,
) -> Result<Config, ConfigError> {
    let rep = Report {
        file: file.as_ref().map(|f| f.shown),
    };
    let (raw, source) = match file {
        Some(f) => (f.raw, Some(clean(&f.abs))),
        None => (RawConfig::default(), None),
    };
    // Relative paths in the file (and defaults, which stand in for it) are
    // relative to the file, so a fleet.yaml means the same from any cwd.
    let base_dir = source
        .as_deref()
        .and_then(Path::parent)
        .map_or_else(|| cwd.to_path_buf(), Path::to_path_buf);
    let d = Config::default();

    // 1 + 2: each value on its own.
    let file_backends = rep.file(entry!(raw, backends), |v| {
        whole(v).and_then(backends_in_range)
    })?;
    let file_base = rep.file(entry!(raw, base_port), |v| whole(v).and_then(port_in_range))?;
    let file_listen = rep.file(entry!(raw, listen), listen)?;
    let file_www = rep.file(entry!(raw, www), |v| path_text(v, "www"))?;
    let file_admin = rep.file(entry!(raw, admin), listen)?;

    let flag_backends = rep.flag("--backends", args.backends, |n| {
        backends_in_range(i128::from(n))
    })?;
    let flag_base = rep.flag("--base-port", args.base_port, |n| {
        port_in_range(i128::from(n))
    })?;
    let flag_listen = rep.flag("--listen", args.listen.as_deref(), parse_listen)?;
    let flag_admin = rep.flag("--admin", args.admin.as_deref(), parse_listen)?;
    let flag_www = rep.flag("--www", args.www.as_deref(), |p| {
        if p.as_os_str().is_empty() {
            Err(Problem::from("must not be empty"))
        } else {
            Ok(p.to_path_buf())
        }
    })?;

    let backend = backend_section(&rep, &raw, &base_dir)?;
    // The default probe path is the built-in worker's health endpoint, which
    // answers whatever www holds; a custom command gets `/` instead.
    let health_default = match backend {
        BackendCommand::Builtin => d.health.clone(),
        BackendCommand::Command { .. } => HealthConfig {
            kind: HealthKind::Http {
                path: "/".to_owned(),
            },
            ..d.health.clone()
        },
    };
    let health = health_section(&rep, &raw, &health_default)?;
    let restart = restart_section(&rep, &raw, &d.restart)?;
    let shutdown = shutdown_section(&rep, &raw, &d.shutdown)?;
    let flag_mode = rep.flag("--mode", args.mode.as_deref(), |m| {
        one_of(&Value::Str(m.to_owned()), MODES, "a balancer mode").map(mode_of)
    })?;
    let balancer = balancer_section(&rep, &raw, &d.balancer, flag_mode, &base_dir)?;
    let admin_hosts = raw
        .admin_hosts
        .as_ref()
        .map(|node| admin_host_list(&rep, node))
        .transpose()?
        .unwrap_or_default();
    let file_upstreams = raw
        .upstreams
        .as_ref()
        .map(|node| upstream_list(&rep, node))
        .transpose()?;
    let flag_upstreams = args
        .upstreams
        .iter()
        .map(|u| {
            let from = Origin::Flag("--upstream");
            resolve_upstream(u)
                .map(|u| (from, u))
                .map_err(|problem| rep.at(from, "--upstream", problem))
        })
        .collect::<Result<Vec<_>, _>>()?;

    // 4: the file as a whole must describe a possible fleet ...
    if let (Some(n), Some(p)) = (file_backends, file_base) {
        port_range(&rep, n, p)?;
    }
    if let Some(n) = file_backends
        && n.value == 0
        && file_upstreams.as_ref().is_none_or(Vec::is_empty)
    {
        return Err(rep.at(n.from, "backends", NO_BACKENDS));
    }
    let upstreams = if args.upstreams.is_empty() {
        file_upstreams.unwrap_or_default()
    } else {
        flag_upstreams
    };
    // 3 + 4: ... and so must what will actually run.
    let backends = pick(flag_backends, file_backends, d.backends);
    let base_port = pick(flag_base, file_base, d.base_port);
    port_range(&rep, backends, base_port)?;
    if backends.value == 0 && upstreams.is_empty() {
        return Err(rep.at(backends.from, "backends", NO_BACKENDS));
    }
    check_upstreams(&rep, &upstreams, backends.value, base_port.value)?;
    let listen: Set<SocketAddr> = pick(flag_listen, file_listen, d.listen);
    listen_outside_backends(&rep, "listen", &listen, backends.value, base_port.value)?;
    let admin = flag_admin.or(file_admin);
    if let Some(admin) = &admin {
        listen_outside_backends(&rep, "admin", admin, backends.value, base_port.value)?;
        admin_apart_from_listen(&rep, admin, listen.value)?;
    }

    // 5: paths. `--www` is relative to where the command runs, like any
    // path on a command line; `www:` (and the default) to the file.
    let www = pick(
        flag_www,
        file_www,
        PathBuf::from(crate::worker::DEFAULT_WWW),
    );
    let www_base = match www.from {
        Origin::Flag(_) => cwd,
        Origin::Default | Origin::File(_) => base_dir.as_path(),
    };
    let www_abs = clean(&www_base.join(&www.value));
    // Runs anywhere: no www configured and none beside the file (or here)
    // means the built-in page, not an error. A www that exists but cannot be
    // read is still checked (cannot read is never "not there").
    let embedded = backend == BackendCommand::Builtin
        && www.from == Origin::Default
        && matches!(std::fs::metadata(&www_abs), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    if backend == BackendCommand::Builtin && !embedded {
        check_dir(&rep, www.from, "www", &www.value, &www_abs, www_base != cwd)?;
    }
    let www = if embedded {
        Www::Embedded
    } else {
        Www::Dir(www_abs)
    };

    Ok(Config {
        backends: backends.value,
        base_port: base_port.value,
        listen: listen.value,
        www,
        backend,
        health,
        restart,
        shutdown,
        balancer,
        admin: admin.map(|s| s.value),
        admin_hosts,
        upstreams: upstreams.into_iter().map(|(_, u)| u).collect(),
        source,
    })
}

// --- sections -------------------------------------------------------------

fn backend_section(
    rep: &Report<'_>,
    raw: &RawConfig,
    base_dir: &Path,
) -> Result<BackendCommand, ConfigError> {
    let Some(section) = &raw.backend else {
        return Ok(BackendCommand::Builtin);
    };
    let b = &section.value;
    let Some(command) = &b.command else {
        return Err(rep.at(
            Origin::File(line_of(section)),
            "backend.command",
            "is missing; a backend section needs a command (remove backend: to use the built-in worker)",
        ));
    };
    let mut argv = command_argv(rep, command)?.into_iter();
    let program = argv.next().ok_or_else(|| {
        rep.at(
            Origin::File(line_of(command)),
            "backend.command",
            "must name a program (got an empty list)",
        )
    })?;
    let args: Vec<String> = argv.collect();

    let cwd_text = rep.file(entry!(b, backend.cwd), |v| path_text(v, "backend.cwd"))?;
    let cwd = match cwd_text {
        Some(written) => {
            let abs = clean(&base_dir.join(&written.value));
            check_dir(rep, written.from, "backend.cwd", &written.value, &abs, true)?;
            abs
        }
        None => base_dir.to_path_buf(),
    };
    let env = match &b.env {
        Some(node) => env_map(rep, node)?,
        None => BTreeMap::new(),
    };
    Ok(BackendCommand::Command {
        program,
        args,
        cwd,
        env,
    })
}

fn health_section(
    rep: &Report<'_>,
    raw: &RawConfig,
    d: &HealthConfig,
) -> Result<HealthConfig, ConfigError> {
    let empty = Default::default();
    let h = raw.health.as_ref().map_or(&empty, |s| &s.value);
    let kind = rep.file(entry!(h, health.kind), |v| {
        one_of(v, &["http", "tcp"], "a health check kind")
    })?;
    let path = rep.file(entry!(h, health.path), http_path)?;
    let interval = rep.file(entry!(h, health.interval), duration)?;
    let timeout = rep.file(entry!(h, health.timeout), duration)?;
    let rise = rep.file(entry!(h, health.rise), count)?;
    let fall = rep.file(entry!(h, health.fall), count)?;
    let restart_after = rep.file(entry!(h, health.restart_after), count)?;

    let default_path = match &d.kind {
        HealthKind::Http { path } => path.clone(),
        HealthKind::Tcp => "/".to_owned(),
    };
    let kind = match kind.map(|k| k.value) {
        Some("tcp") => HealthKind::Tcp,
        Some(_) => HealthKind::Http {
            path: path.map_or(default_path, |p| p.value),
        },
        None => match &d.kind {
            HealthKind::Tcp => HealthKind::Tcp,
            HealthKind::Http { .. } => HealthKind::Http {
                path: path.map_or(default_path, |p| p.value),
            },
        },
    };
    let interval = or_default(interval, d.interval);
    let timeout = or_default(timeout, d.timeout);
    // A probe that may outlive the interval would overlap the next one and
    // make "consecutive results" ambiguous, so timeout <= interval.
    not_longer(
        rep,
        ("health.timeout", timeout),
        ("health.interval", interval),
        Blame::Short,
        "; a probe must finish before the next one is due",
    )?;
    Ok(HealthConfig {
        kind,
        interval: interval.value,
        timeout: timeout.value,
        rise: or_default(rise, d.rise).value,
        fall: or_default(fall, d.fall).value,
        restart_after: or_default(restart_after, d.restart_after).value,
    })
}

fn restart_section(
    rep: &Report<'_>,
    raw: &RawConfig,
    d: &RestartConfig,
) -> Result<RestartConfig, ConfigError> {
    let empty = Default::default();
    let r = raw.restart.as_ref().map_or(&empty, |s| &s.value);
    let policy = rep.file(entry!(r, restart.policy), |v| {
        one_of(v, &["always", "on-failure", "never"], "a restart policy").map(|p| match p {
            "on-failure" => RestartPolicy::OnFailure,
            "never" => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        })
    })?;
    let initial = rep.file(entry!(r, restart.initial_backoff), duration)?;
    let max = rep.file(entry!(r, restart.max_backoff), duration)?;
    let max_restarts = rep.file(entry!(r, restart.max_restarts), |v| {
        count(v).map_err(|e| problem!("{e}; to never restart, set restart.policy: never"))
    })?;
    let window = rep.file(entry!(r, restart.window), duration)?;

    let initial = or_default(initial, d.initial_backoff);
    let max = or_default(max, d.max_backoff);
    not_longer(
        rep,
        ("restart.initial_backoff", initial),
        ("restart.max_backoff", max),
        Blame::Long,
        "",
    )?;
    Ok(RestartConfig {
        policy: or_default(policy, d.policy).value,
        initial_backoff: initial.value,
        max_backoff: max.value,
        max_restarts: or_default(max_restarts, d.max_restarts).value,
        window: or_default(window, d.window).value,
    })
}

fn shutdown_section(
    rep: &Report<'_>,
    raw: &RawConfig,
    d: &ShutdownConfig,
) -> Result<ShutdownConfig, ConfigError> {
    let empty = Default::default();
    let s = raw.shutdown.as_ref().map_or(&empty, |s| &s.value);
    let timeout = rep.file(entry!(s, shutdown.timeout), duration)?;
    let drain = rep.file(entry!(s, shutdown.drain_timeout), duration)?;
    Ok(ShutdownConfig {
        timeout: or_default(timeout, d.timeout).value,
        drain_timeout: or_default(drain, d.drain_timeout).value,
    })
}

const MODES: &[&str] = &["http", "tcp"];

fn mode_of(word: &str) -> BalancerMode {
    match word {
        "tcp" => BalancerMode::Tcp,
        _ => BalancerMode::Http,
    }
}

fn balancer_section(
    rep: &Report<'_>,
    raw: &RawConfig,
    d: &BalancerConfig,
    flag_mode: Option<Set<BalancerMode>>,
    base_dir: &Path,
) -> Result<BalancerConfig, ConfigError> {
    let empty = Default::default();
    let b = raw.balancer.as_ref().map_or(&empty, |s| &s.value);
    let mode = rep.file(entry!(b, balancer.mode), |v| {
        one_of(v, MODES, "a balancer mode").map(mode_of)
    })?;
    let strategy = rep.file(entry!(b, balancer.strategy), |v| {
        one_of(v, Strategy::NAMES, "a balancing strategy")
            .map(|w| Strategy::from_name(w).expect("NAMES lists only known strategies"))
    })?;
    let response_timeout = rep.file(entry!(b, balancer.response_timeout), duration)?;
    let max_connections = rep.file(entry!(b, balancer.max_connections), count)?;
    let connect_timeout = rep.file(entry!(b, balancer.connect_timeout), duration)?;
    let idle_timeout = rep.file(entry!(b, balancer.idle_timeout), duration)?;
    let access_log = rep.file(entry!(b, balancer.access_log), file_path)?;
    let dp = &d.passive;
    let eject_after = rep.file(entry!(b, balancer.eject_after), count)?;
    let eject_window = rep.file(entry!(b, balancer.eject_window), duration)?;
    let max_ejection = rep.file(entry!(b, balancer.max_ejection_percent), percent)?;
    let passive = PassiveHealth {
        eject_after: or_default(eject_after, dp.eject_after).value,
        eject_window: or_default(eject_window, dp.eject_window).value,
        max_ejection_percent: or_default(max_ejection, dp.max_ejection_percent).value,
    };
    let backend_header = rep.file(entry!(b, balancer.backend_header), boolean)?;
    Ok(BalancerConfig {
        passive,
        mode: pick(flag_mode, mode, d.mode).value,
        strategy: or_default(strategy, d.strategy).value,
        response_timeout: or_default(response_timeout, d.response_timeout).value,
        access_log: access_log.map(|p| clean(&base_dir.join(p.value))),
        max_connections: or_default(max_connections, d.max_connections).value,
        connect_timeout: or_default(connect_timeout, d.connect_timeout).value,
        idle_timeout: or_default(idle_timeout, d.idle_timeout).value,
        backend_header: or_default(backend_header, d.backend_header).value,
    })
}

// --- cross-key and filesystem rules ---------------------------------------

/// Backends use `base_port ..= base_port + backends - 1`, which must fit in
/// a port number. Blames base_port unless it is the default.
fn port_range(rep: &Report<'_>, backends: Set<u16>, base: Set<u16>) -> Result<(), ConfigError> {
    let (n, p) = (u32::from(backends.value), u32::from(base.value));
    let last = p + n - 1;
    if last <= 65535 {
        return Ok(());
    }
    let fits = 65536 - p;
    let by_flag = match backends.from {
        Origin::Flag(flag) => format!(" (from {flag})"),
        Origin::Default => " (the default)".to_owned(),
        Origin::File(_) => String::new(),
    };
    let (from, key) = if base.from == Origin::Default {
        (backends.from, "backends")
    } else {
        (base.from, "base_port")
    };
    let problem = format!(
        "{p} with {n} backends{by_flag} needs ports {p}..={last}, and port 65536 is past 65535 \
         (use base_port {} or at most {fits} backends)",
        65536 - n
    );
    Err(rep.at(from, key, problem))
}

/// Which of two related keys an error names when the user wrote both.
enum Blame {
    Short,
    Long,
}

/// `short` must not be longer than `long`. The error names the key `blame`
/// prefers, or the other when the preferred one holds its default, so it
/// always points at a value the user wrote; `why` ends the message.
fn not_longer(
    rep: &Report<'_>,
    (short_key, short): (&str, Set<Duration>),
    (long_key, long): (&str, Set<Duration>),
    blame: Blame,
    why: &str,
) -> Result<(), ConfigError> {
    if short.value <= long.value {
        return Ok(());
    }
    let blame_short = match blame {
        Blame::Short => short.from != Origin::Default,
        Blame::Long => long.from == Origin::Default,
    };
    let (from, key, problem) = if blame_short {
        (
            short.from,
            short_key,
            format!(
                "{} is longer than {long_key} ({}{}){why}",
                fmt_duration(short.value),
                fmt_duration(long.value),
                note(long.from)
            ),
        )
    } else {
        (
            long.from,
            long_key,
            format!(
                "{} is shorter than {short_key} ({}{}){why}",
                fmt_duration(long.value),
                fmt_duration(short.value),
                note(short.from)
            ),
        )
    };
    Err(rep.at(from, key, problem))
}

/// The balancer must not listen on a backend's port: backends bind
/// 127.0.0.1, which collides with a listen address of 127.0.0.1 or any
/// address (0.0.0.0, [::]). Caught here, it is a config error naming both
/// keys rather than a "port in use by fleet" at start-up.
fn listen_outside_backends(
    rep: &Report<'_>,
    key: &str,
    listen: &Set<SocketAddr>,
    backends: u16,
    base: u16,
) -> Result<(), ConfigError> {
    let port = listen.value.port();
    let last = u32::from(base) + u32::from(backends) - 1;
    let ip = listen.value.ip();
    let collides = ip.is_unspecified() || ip == std::net::IpAddr::from([127, 0, 0, 1]);
    if port == 0 || !collides || !(u32::from(base)..=last).contains(&u32::from(port)) {
        return Ok(());
    }
    Err(rep.at(
        listen.from,
        key,
        format!(
            "port {port} is a backend's port: base_port {base} with backends {backends} uses \
             {base}..={last}; pick a port for {key} outside that range, or move base_port"
        ),
    ))
}

/// The admin address must not be the balancer's.
fn admin_apart_from_listen(
    rep: &Report<'_>,
    admin: &Set<SocketAddr>,
    listen: SocketAddr,
) -> Result<(), ConfigError> {
    let (a, l) = (admin.value, listen);
    let overlap = a.ip() == l.ip() || a.ip().is_unspecified() || l.ip().is_unspecified();
    if a.port() == 0 || a.port() != l.port() || !overlap {
        return Ok(());
    }
    Err(rep.at(
        admin.from,
        "admin",
        format!(
            "{a} is the balancer's address (listen: {l}); give the admin address a port of its own"
        ),
    ))
}

/// `written` (as the user wrote it, resolved to `abs`) must be a directory.
fn check_dir(
    rep: &Report<'_>,
    from: Origin,
    key: &str,
    written: &Path,
    abs: &Path,
    show_abs: bool,
) -> Result<(), ConfigError> {
    let resolved = if show_abs && written.is_relative() {
        format!(" (resolved to {})", abs.display())
    } else {
        String::new()
    };
    if !abs.exists() {
        return Err(rep.at(
            from,
            key,
            format!("directory {} does not exist{resolved}", written.display()),
        ));
    }
    if !abs.is_dir() {
        return Err(rep.at(
            from,
            key,
            format!("{} is not a directory{resolved}", written.display()),
        ));
    }
    Ok(())
}

/// Absolute `p` without `.` components (`..` is kept: it may cross a symlink).
fn clean(p: &Path) -> PathBuf {
    p.components().collect()
}

// --- admin_hosts ------------------------------------------------------------

/// `admin_hosts: ["fleet.lab", "192.168.1.5"]`: names without a port.
fn admin_host_list(rep: &Report<'_>, node: &Node) -> Result<Vec<String>, ConfigError> {
    let items = match &node.value {
        Value::Seq(items) => items,
        Value::Null => return Ok(Vec::new()),
        other => {
            return Err(rep.at(
                Origin::File(line_of(node)),
                "admin_hosts",
                format!(
                    "expected a list of host names such as [\"fleet.lab\"], got {}",
                    other.describe()
                ),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = Origin::File(line_of(item));
            let key = format!("admin_hosts[{i}]");
            match &item.value {
                Value::Str(s) => admin_host(s).map_err(|problem| rep.at(at, &key, problem)),
                other => Err(rep.at(
                    at,
                    &key,
                    format!("expected a host name, got {}", other.describe()),
                )),
            }
        })
        .collect()
}

/// One `admin_hosts` entry: a host name or IP literal (an IPv6 one with or
/// without brackets), without a port; lowercase.
fn admin_host(s: &str) -> Result<String, Problem> {
    let host = s.trim().to_ascii_lowercase();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&host);
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(bare.to_owned());
    }
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'))
    {
        return Err(problem!(
            "'{s}' is not a host name (letters, digits, '-' and '.')"
        ));
    }
    if host.contains(':') {
        return Err(problem!(
            "'{s}' has a port; write the name alone (any port is accepted)"
        ));
    }
    Ok(host)
}

// --- upstreams --------------------------------------------------------------

/// `upstreams: ["host:port", ...]`, each resolved, with where it was written.
fn upstream_list(rep: &Report<'_>, node: &Node) -> Result<Vec<(Origin, Upstream)>, ConfigError> {
    let items = match &node.value {
        Value::Seq(items) => items,
        Value::Null => return Ok(Vec::new()),
        other => {
            return Err(rep.at(
                Origin::File(line_of(node)),
                "upstreams",
                format!(
                    "expected a list of HOST:PORT such as [\"lab-pc-2:9002\"], got {}",
                    other.describe()
                ),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = Origin::File(line_of(item));
            let key = format!("upstreams[{i}]");
            match &item.value {
                Value::Str(s) => resolve_upstream(s)
                    .map(|u| (at, u))
                    .map_err(|problem| rep.at(at, &key, problem)),
                other => Err(rep.at(
                    at,
                    &key,
                    format!("expected HOST:PORT, got {}", other.describe()),
                )),
            }
        })
        .collect()
}

/// `HOST:PORT` -> the first address it resolves to. A blocking lookup, done
/// once at load time so a typo fails `fleet up` instead of every probe.
fn resolve_upstream(s: &str) -> Result<Upstream, Problem> {
    use std::net::ToSocketAddrs;
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(problem!("'{s}' is not HOST:PORT (such as lab-pc-2:9002)"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(problem!(
            "'{s}' is not HOST:PORT with a port from 1 to 65535"
        ));
    }
    let addr = s
        .to_socket_addrs()
        .map_err(|e| problem!("cannot resolve '{s}': {e}"))?
        .next()
        .ok_or_else(|| problem!("'{s}' resolves to no address"))?;
    Ok(Upstream {
        name: s.to_owned(),
        addr,
    })
}

/// No duplicates, and none that is one of the local backends.
fn check_upstreams(
    rep: &Report<'_>,
    upstreams: &[(Origin, Upstream)],
    backends: u16,
    base_port: u16,
) -> Result<(), ConfigError> {
    for (i, (from, u)) in upstreams.iter().enumerate() {
        let from = *from;
        let key = match from {
            Origin::Flag(f) => f.to_owned(),
            _ => format!("upstreams[{i}]"),
        };
        if let Some((_, first)) = upstreams[..i].iter().find(|(_, o)| o.addr == u.addr) {
            return Err(rep.at(
                from,
                &key,
                format!(
                    "'{}' is the same address as '{}' ({})",
                    u.name, first.name, u.addr
                ),
            ));
        }
        let local = u.addr.ip().is_loopback()
            && (u32::from(base_port)..u32::from(base_port) + u32::from(backends))
                .contains(&u32::from(u.addr.port()));
        if local {
            return Err(rep.at(
                from,
                &key,
                format!(
                    "'{}' is one of this fleet's own backends (ports {base_port}..{})",
                    u.name,
                    u32::from(base_port) + u32::from(backends) - 1
                ),
            ));
        }
    }
    Ok(())
}

// --- values -----------------------------------------------------------------

fn whole(v: &Value) -> Result<i128, Problem> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::Str(s) if s.trim().parse::<i128>().is_ok() => Err(problem!(
            "expected a whole number, got the string {} (remove the quotes)",
            quote(s)
        )),
        other => Err(problem!(
            "expected a whole number, got {}",
            other.describe()
        )),
    }
}

/// 0 is in range here: it is rejected later unless there are upstreams.
fn backends_in_range(n: i128) -> Result<u16, Problem> {
    if n < 0 {
        Err(problem!("must be at least 0 (got {n}); 0 needs upstreams"))
    } else if n > i128::from(MAX_BACKENDS) {
        Err(problem!("must be at most {MAX_BACKENDS} (got {n})"))
    } else {
        u16::try_from(n).map_err(|_| problem!("must be at most {MAX_BACKENDS} (got {n})"))
    }
}

fn port_in_range(n: i128) -> Result<u16, Problem> {
    if n < 1 {
        Err(problem!("must be at least 1 (got {n})"))
    } else {
        u16::try_from(n).map_err(|_| problem!("{n} is past 65535"))
    }
}

/// `true` or `false`, as YAML writes them.
fn boolean(v: &Value) -> Result<bool, Problem> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Str(s) if matches!(s.trim(), "true" | "false") => Err(problem!(
            "expected true or false, got the string {} (remove the quotes)",
            quote(s)
        )),
        other => Err(problem!("expected true or false, got {}", other.describe())),
    }
}

/// A count that must be at least 1 (rise, fall, max_connections, ...).
fn count(v: &Value) -> Result<u32, Problem> {
    let n = whole(v)?;
    if n < 1 {
        Err(problem!("must be at least 1 (got {n})"))
    } else {
        u32::try_from(n).map_err(|_| problem!("must be at most {} (got {n})", u32::MAX))
    }
}

/// A share in percent, 0 to 100: `50` or `50%`.
fn percent(v: &Value) -> Result<u8, Problem> {
    let n = match v {
        Value::Str(s) => match s.trim().strip_suffix('%').map(|n| n.trim().parse::<i128>()) {
            Some(Ok(n)) => n,
            _ => {
                return Err(problem!(
                    "expected a percentage such as 50 or 50%, got {}",
                    quote(s)
                ));
            }
        },
        other => whole(other)?,
    };
    u8::try_from(n)
        .ok()
        .filter(|n| *n <= 100)
        .ok_or_else(|| problem!("must be between 0 and 100 (got {n})"))
}

/// A duration by the one grammar (`crate::duration`), longer than 0 and at
/// most [`MAX_DURATION`]. A YAML number is read as the text it was written
/// as, so `10` is ten seconds here as in `--timeout 10`.
fn duration(v: &Value) -> Result<Duration, Problem> {
    let text = match v {
        Value::Str(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        other => {
            return Err(problem!(
                "expected a duration such as 250ms, 1s or 2m, got {}",
                other.describe()
            ));
        }
    };
    let d = crate::duration::parse(&text).map_err(|e| problem!("{e}"))?;
    let t = text.trim();
    if d.is_zero() {
        Err(problem!("must be longer than 0 (got {t})"))
    } else if d > MAX_DURATION {
        Err(problem!(
            "must be at most {} (got {t})",
            fmt_duration(MAX_DURATION)
        ))
    } else {
        Ok(d)
    }
}

fn fmt_duration(d: Duration) -> String {
    crate::duration::format(d)
}

/// `ADDR:PORT`, for `--listen` and `listen:`.
/// `ADDR:PORT`, or a bare `PORT` meaning `127.0.0.1:PORT` (loopback:
/// exposing the balancer is always spelled out), for `--listen` / `listen:`.
fn parse_listen(s: &str) -> Result<SocketAddr, Problem> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u16>()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| problem!("port {s} is out of range (0-65535)"));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        problem!("'{s}' is not an ADDR:PORT address such as 127.0.0.1:44444, or a PORT")
    })
}

fn listen(v: &Value) -> Result<SocketAddr, Problem> {
    match v {
        Value::Str(s) => parse_listen(s),
        // A bare port means loopback, as with `--listen PORT`.
        Value::Int(port) => parse_listen(&port.to_string()),
        other => Err(problem!(
            "expected ADDR:PORT such as 127.0.0.1:44444 or a PORT, got {} (quote an IPv6 address: \"[::1]:44444\")",
            other.describe()
        )),
    }
}

/// A file to write: a non-empty string that can be a path.
fn file_path(v: &Value) -> Result<PathBuf, Problem> {
    match v {
        Value::Str(s) if s.is_empty() => Err(Problem::from("must not be empty")),
        Value::Str(s) if s.contains('\0') => Err(Problem::from("must not contain a NUL byte")),
        Value::Str(s) if s.ends_with('/') => Err(problem!("'{s}' names a directory; name a file")),
        Value::Str(s) => Ok(PathBuf::from(s)),
        other => Err(problem!(
            "expected a file path (e.g. logs/access.log), got {}",
            other.describe()
        )),
    }
}

/// A non-empty string that can be a path.
fn path_text(v: &Value, key: &str) -> Result<PathBuf, Problem> {
    match v {
        Value::Str(s) if s.is_empty() => Err(Problem::from("must not be empty")),
        Value::Str(s) if s.contains('\0') => Err(Problem::from("must not contain a NUL byte")),
        Value::Str(s) => Ok(PathBuf::from(s)),
        other => Err(problem!(
            "expected a directory path (e.g. {key}: ./dir), got {}",
            other.describe()
        )),
    }
}

/// One of a fixed set of words, with a suggestion for a near miss.
fn one_of(v: &Value, words: &[&'static str], what: &str) -> Result<&'static str, Problem> {
    let list = words.join(", ");
    match v {
        Value::Str(s) => {
            words
                .iter()
                .copied()
                .find(|w| *w == s)
                .ok_or_else(|| match closest(s, words) {
                    Some(near) => problem!(
                        "{} is not {what}; did you mean {near}? (one of: {list})",
                        quote(s)
                    ),
                    None => problem!("{} is not {what}; use one of: {list}", quote(s)),
                })
        }
        other => Err(problem!(
            "expected one of: {list}, got {}",
            other.describe()
        )),
    }
}

/// The path of an HTTP probe: it goes verbatim into the request line.
fn http_path(v: &Value) -> Result<String, Problem> {
    match v {
        Value::Str(s) if !s.starts_with('/') => Err(problem!("{} must start with '/'", quote(s))),
        Value::Str(s) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => Err(problem!(
            "{} must not contain spaces or control characters (percent-encode them)",
            quote(s)
        )),
        Value::Str(s) => Ok(s.clone()),
        other => Err(problem!(
            "expected a URL path such as /health, got {}",
            other.describe()
        )),
    }
}

/// A command line: the program, then its arguments.
type Argv = Vec<String>;
/// Environment variables for a backend, by name.
type Env = BTreeMap<String, String>;

/// `backend.command`: a list of non-empty strings, each reported at its line.
fn command_argv(rep: &Report<'_>, node: &Node) -> Result<Argv, ConfigError> {
    let items = match &node.value {
        Value::Seq(items) => items,
        Value::Str(s) => {
            return Err(rep.at(
                Origin::File(line_of(node)),
                "backend.command",
                format!(
                    "expected a list with one item per argument, such as [\"python3\", \"server.py\", \"{{port}}\"], got the string {}",
                    quote(s)
                ),
            ));
        }
        other => {
            return Err(rep.at(
                Origin::File(line_of(node)),
                "backend.command",
                format!(
                    "expected a list such as [\"python3\", \"server.py\", \"{{port}}\"], got {}",
                    other.describe()
                ),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let key = format!("backend.command[{i}]");
            let at = Origin::File(line_of(item));
            match &item.value {
                Value::Str(s) if s.is_empty() => Err(rep.at(at, &key, "must not be empty")),
                Value::Str(s) if s.contains('\0') => {
                    Err(rep.at(at, &key, "must not contain a NUL byte"))
                }
                Value::Str(s) => Ok(s.clone()),
                Value::Int(n) => Err(rep.at(
                    at,
                    &key,
                    format!("expected a string, got {n} (quote it: \"{n}\")"),
                )),
                other => Err(rep.at(
                    at,
                    &key,
                    format!("expected a string, got {}", other.describe()),
                )),
            }
        })
        .collect()
}

/// `backend.env`: names a shell could export, values as text.
fn env_map(rep: &Report<'_>, node: &Node) -> Result<Env, ConfigError> {
    let Value::Map(entries) = &node.value else {
        return Err(rep.at(
            Origin::File(line_of(node)),
            "backend.env",
            format!(
                "expected a mapping of NAME: value, got {}",
                node.value.describe()
            ),
        ));
    };
    let mut env = BTreeMap::new();
    for (name, value) in entries {
        let key = format!("backend.env.{}", name.value);
        let at = Origin::File(line_of(name));
        if name.value.is_empty() {
            return Err(rep.at(at, "backend.env", "a variable name must not be empty"));
        }
        if name.value.contains(['=', '\0']) {
            return Err(rep.at(
                at,
                &key,
                format!(
                    "{} is not a valid variable name (no '=' or NUL)",
                    quote(&name.value)
                ),
            ));
        }
        if name.value == "PORT" {
            return Err(rep.at(
                at,
                &key,
                "is set by fleet to each backend's port; use {port} in backend.command instead",
            ));
        }
        let at = Origin::File(line_of(value));
        let text = match &value.value {
            Value::Str(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => {
                return Err(rep.at(
                    at,
                    &key,
                    format!("has no value; write {}: \"\" for an empty one", name.value),
                ));
            }
            other => {
                return Err(rep.at(
                    at,
                    &key,
                    format!("expected a string, got {}", other.describe()),
                ));
            }
        };
        if text.contains('\0') {
            return Err(rep.at(at, &key, "must not contain a NUL byte"));
        }
        env.insert(name.value.clone(), text);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_port_alone_means_loopback() {
        assert_eq!(
            parse_listen("44444"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 44444)))
        );
    }

    #[test]
    fn listen_address_and_port_are_taken_as_written() {
        assert_eq!(
            parse_listen("0.0.0.0:80"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 80)))
        );
        assert_eq!(parse_listen("[::1]:80").map(|a| a.is_ipv6()), Ok(true));
    }

    #[test]
    fn listen_port_out_of_range_is_named() {
        assert_eq!(
            parse_listen("70000"),
            Err(Problem::from("port 70000 is out of range (0-65535)"))
        );
    }

    #[test]
    fn listen_garbage_is_rejected() {
        assert!(parse_listen("localhost").is_err());
        assert!(parse_listen("").is_err());
    }
}
