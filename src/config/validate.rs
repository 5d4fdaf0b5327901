//! Raw file values + overrides -> `Config`, in a fixed order so that every
//! error is reported against the place the user wrote the value:
//!
//! 1. every key present in the file is checked on its own, even one a flag
//!    overrides (the file must be valid as a whole, not just the parts used:
//!    `parse`);
//! 2. every flag is checked on its own (`parse`);
//! 3. values are merged: flag > file > default, each remembering its origin
//!    (`precedence`);
//! 4. rules that relate two keys (port range, timeout <= interval, backoff
//!    order) run on the file's own values when it sets both, then on the
//!    merged values, and blame the key the user wrote rather than a default
//!    (`checks`);
//! 5. last, the checks that ask the system (`lookup`): backend.cwd and www
//!    are directories, upstream names resolve (then no two upstreams share
//!    an address and none is a local backend). They block, so a config
//!    that fails a pure check never waits on the resolver.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::checks::{
    Blame, NO_BACKENDS, admin_apart_from_listen, check_upstreams, listen_outside_backends,
    not_longer, port_range,
};
use super::lookup::Need;
use super::parse::{
    MODES, Problem, admin_host, backends_in_range, boolean, clean, count, duration,
    duration_or_zero, engine_threads, file_path, host_port, http_path, listen, mode_of, one_of,
    parse_listen, path_text, percent, port_in_range, problem, whole,
};
use super::precedence::{Origin, Report, Set, entry, line_of, or_default, pick};
use super::raw::{Node, RawConfig, RawWatch, RawWatchEntry, Value, quote};
use super::{
    BackendProgram, BalancerConfig, BalancerMode, Config, ConfigError, DEFAULT_DEBOUNCE,
    HealthConfig, HealthKind, Overrides, PassiveHealth, RestartConfig, RestartPolicy,
    ShutdownConfig, Strategy, Upstream, WatchConfig, Www, lookup,
};
use crate::builtin::DEFAULT_WWW;

/// The config file being applied.
pub(super) struct FileSource<'a> {
    pub(super) raw: RawConfig,
    /// As the user named it, for messages.
    pub(super) shown: &'a Path,
    /// Absolute path, for `Config::source`.
    pub(super) abs: PathBuf,
}

pub(super) fn resolve(
    file: Option<FileSource<'_>>,
    args: &Overrides,
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

    let (backend, backend_cwd) = backend_section(&rep, &raw, &base_dir)?;
    // The default probe path is the built-in worker's health endpoint, which
    // answers whatever www holds; a custom command gets `/` instead.
    let health_default = match backend {
        BackendProgram::Builtin => d.health.clone(),
        BackendProgram::Custom { .. } => HealthConfig {
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
            host_port(u)
                .map(|u| (from, u.to_owned()))
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
    let listen: Set<std::net::SocketAddr> = pick(flag_listen, file_listen, d.listen);
    listen_outside_backends(&rep, "listen", &listen, backends.value, base_port.value)?;
    let admin = flag_admin.or(file_admin);
    if let Some(admin) = &admin {
        listen_outside_backends(&rep, "admin", admin, backends.value, base_port.value)?;
        admin_apart_from_listen(&rep, admin, listen.value)?;
    }

    // 5: what asks the system, last. `--www` is relative to where the
    // command runs, like any path on a command line; `www:` (and the
    // default) to the file.
    if let Some(dir) = backend_cwd {
        dir.check(&rep)?;
    }
    let upstreams = resolve_upstreams(&rep, &upstreams)?;
    check_upstreams(&rep, &upstreams, backends.value, base_port.value)?;
    let www = pick(flag_www, file_www, PathBuf::from(DEFAULT_WWW));
    let www_base = match www.from {
        Origin::Flag(_) => cwd,
        Origin::Default | Origin::File(_) => base_dir.as_path(),
    };
    let www_abs = clean(&www_base.join(&www.value));
    // Runs anywhere: no www configured and none beside the file (or here)
    // means the built-in page, not an error. A www that exists but cannot be
    // read is still checked (cannot read is never "not there").
    let embedded = backend == BackendProgram::Builtin
        && www.from == Origin::Default
        && matches!(std::fs::metadata(&www_abs), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    if backend == BackendProgram::Builtin && !embedded {
        let check = DirCheck {
            from: www.from,
            key: "www",
            written: www.value,
            abs: www_abs.clone(),
            show_abs: www_base != cwd,
        };
        check.check(&rep)?;
    }
    let www = if embedded {
        Www::Embedded
    } else {
        Www::Dir(www_abs)
    };
    let watch = watch_section(&rep, &raw, args, &backend, &www, &base_dir, cwd)?;

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
        watch,
        source,
    })
}

/// `watch:` and `--watch`: on when either says so (`watch: false` is off
/// unless `--watch`). Paths: the flag's (relative to the current
/// directory), else the file's (relative to the file), else what the
/// backends run from. Each must exist.
fn watch_section(
    rep: &Report<'_>,
    raw: &RawConfig,
    args: &Overrides,
    backend: &BackendProgram,
    www: &Www,
    base_dir: &Path,
    cwd: &Path,
) -> Result<Option<WatchConfig>, ConfigError> {
    let empty = RawWatch::default();
    let (file_on, file_paths, section) = match &raw.watch {
        None => (None, None, &empty),
        Some(node) => {
            let at = Origin::File(line_of(node));
            match &node.value {
                RawWatchEntry::Switch(on) => (Some((at, *on)), None, &empty),
                RawWatchEntry::Paths(items) => {
                    (Some((at, true)), Some((at, items.as_slice())), &empty)
                }
                RawWatchEntry::Section(w) => {
                    let paths = match &w.paths {
                        Some(n) => match &n.value {
                            Value::Seq(items) => Some((Origin::File(line_of(n)), items.as_slice())),
                            Value::Null => None,
                            other => {
                                return Err(rep.at(
                                    Origin::File(line_of(n)),
                                    "watch.paths",
                                    format!(
                                        "expected a list of paths such as [src], got {}",
                                        other.describe()
                                    ),
                                ));
                            }
                        },
                        None => None,
                    };
                    (Some((at, true)), paths, &**w)
                }
            }
        }
    };
    let ignore = match &section.ignore {
        None => Vec::new(),
        Some(n) => match &n.value {
            Value::Null => Vec::new(),
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match &item.value {
                    Value::Str(s) if !s.is_empty() => Ok(s.clone()),
                    other => Err(rep.at(
                        Origin::File(line_of(item)),
                        &format!("watch.ignore[{i}]"),
                        format!(
                            "expected a file name pattern such as '*.log', got {}",
                            other.describe()
                        ),
                    )),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(rep.at(
                    Origin::File(line_of(n)),
                    "watch.ignore",
                    format!(
                        "expected a list of patterns such as ['*.log'], got {}",
                        other.describe()
                    ),
                ));
            }
        },
    };
    let debounce = rep.file(entry!(section, watch.debounce), duration)?;
    let on = args.watch.is_some() || file_on.is_some_and(|(_, on)| on);
    if !on {
        return Ok(None);
    }
    // (origin, key, as written, absolute, show the absolute path)
    let mut wanted: Vec<(Origin, String, PathBuf, PathBuf, bool)> = Vec::new();
    match (&args.watch, file_paths) {
        (Some(flag), _) if !flag.is_empty() => {
            for p in flag {
                wanted.push((
                    Origin::Flag("--watch"),
                    "--watch".into(),
                    p.clone(),
                    clean(&cwd.join(p)),
                    false,
                ));
            }
        }
        (_, Some((_, items))) => {
            for (i, item) in items.iter().enumerate() {
                let at = Origin::File(line_of(item));
                let key = format!("watch.paths[{i}]");
                let written =
                    path_text(&item.value, "watch.paths").map_err(|p| rep.at(at, &key, p))?;
                let abs = clean(&base_dir.join(&written));
                wanted.push((at, key, written, abs, true));
            }
        }
        _ => {
            let from = file_on.map_or(Origin::Flag("--watch"), |(at, _)| at);
            let dir = match (backend, www) {
                (BackendProgram::Custom { cwd, .. }, _) => cwd.clone(),
                (BackendProgram::Builtin, Www::Dir(dir)) => dir.clone(),
                (BackendProgram::Builtin, Www::Embedded) => {
                    return Err(rep.at(
                        from,
                        "watch",
                        "nothing to watch: the built-in worker serves its embedded page; name the paths to watch or create www/",
                    ));
                }
            };
            wanted.push((from, "watch".into(), dir.clone(), dir, false));
        }
    }
    if wanted.is_empty() {
        return Err(rep.at(
            file_on.map_or(Origin::Flag("--watch"), |(at, _)| at),
            "watch.paths",
            "is empty; name the paths to watch, or remove it to watch the default",
        ));
    }
    for (from, key, written, abs, show_abs) in &wanted {
        lookup::check_path(rep, *from, key, written, abs, *show_abs, Need::Exists)?;
    }
    Ok(Some(WatchConfig {
        paths: wanted.into_iter().map(|w| w.3).collect(),
        ignore,
        debounce: debounce.map_or(DEFAULT_DEBOUNCE, |d| d.value),
    }))
}

// --- sections -------------------------------------------------------------

fn backend_section(
    rep: &Report<'_>,
    raw: &RawConfig,
    base_dir: &Path,
) -> Result<(BackendProgram, Option<DirCheck>), ConfigError> {
    let Some(section) = &raw.backend else {
        return Ok((BackendProgram::Builtin, None));
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
    // Checked to be a directory last, with the other lookups.
    let (cwd, check) = match cwd_text {
        Some(written) => {
            let abs = clean(&base_dir.join(&written.value));
            let check = DirCheck {
                from: written.from,
                key: "backend.cwd",
                written: written.value,
                abs: abs.clone(),
                show_abs: true,
            };
            (abs, Some(check))
        }
        None => (base_dir.to_path_buf(), None),
    };
    let env = match &b.env {
        Some(node) => env_map(rep, node)?,
        None => BTreeMap::new(),
    };
    let command = BackendProgram::Custom {
        program,
        args,
        cwd,
        env,
    };
    Ok((command, check))
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
    let slow_start = rep.file(entry!(b, balancer.slow_start), duration_or_zero)?;
    let threads = rep.file(entry!(b, balancer.threads), engine_threads)?;
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
        slow_start: or_default(slow_start, d.slow_start).value,
        threads: or_default(threads, d.threads).value,
    })
}

// --- admin_hosts, upstreams -------------------------------------------------

/// `admin_hosts: ["fleet.lab", "192.168.1.5"]`: names without a port.
fn admin_host_list(rep: &Report<'_>, node: &Node) -> Result<Vec<String>, ConfigError> {
    string_list(
        rep,
        node,
        "admin_hosts",
        "a list of host names such as [\"fleet.lab\"]",
        "a host name",
        |_, s| admin_host(s),
    )
}

/// `upstreams: ["host:port", ...]`, each as written and where.
fn upstream_list(rep: &Report<'_>, node: &Node) -> Result<Vec<(Origin, String)>, ConfigError> {
    string_list(
        rep,
        node,
        "upstreams",
        "a list of HOST:PORT such as [\"lab-pc-2:9002\"]",
        "HOST:PORT",
        |at, s| host_port(s).map(|u| (at, u.to_owned())),
    )
}

/// The list of strings at `key` (none when null), each read by `item`,
/// which is told where the string stands. `list` and `one` say what was
/// expected when the value is not a list or an entry not a string.
fn string_list<T>(
    rep: &Report<'_>,
    node: &Node,
    key: &str,
    list: &str,
    one: &str,
    item: impl Fn(Origin, &str) -> Result<T, Problem>,
) -> Result<Vec<T>, ConfigError> {
    let items = match &node.value {
        Value::Seq(items) => items,
        Value::Null => return Ok(Vec::new()),
        other => {
            return Err(rep.at(
                Origin::File(line_of(node)),
                key,
                format!("expected {list}, got {}", other.describe()),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = Origin::File(line_of(entry));
            let key = format!("{key}[{i}]");
            match &entry.value {
                Value::Str(s) => item(at, s).map_err(|problem| rep.at(at, &key, problem)),
                other => Err(rep.at(
                    at,
                    &key,
                    format!("expected {one}, got {}", other.describe()),
                )),
            }
        })
        .collect()
}

/// Each upstream resolved (`lookup::upstream`), blamed on its flag or its
/// place in the file's list.
fn resolve_upstreams(
    rep: &Report<'_>,
    written: &[(Origin, String)],
) -> Result<Vec<(Origin, Upstream)>, ConfigError> {
    written
        .iter()
        .enumerate()
        .map(|(i, (from, s))| {
            lookup::upstream(s).map(|u| (*from, u)).map_err(|problem| {
                let key = match from {
                    Origin::Flag(f) => (*f).to_owned(),
                    Origin::File(_) | Origin::Default => format!("upstreams[{i}]"),
                };
                rep.at(*from, &key, problem)
            })
        })
        .collect()
}

/// A directory the config names (www, backend.cwd), checked last.
struct DirCheck {
    from: Origin,
    key: &'static str,
    /// As the user wrote it, for the message.
    written: PathBuf,
    abs: PathBuf,
    /// Say what a relative path resolved to (it was not relative to the cwd).
    show_abs: bool,
}

impl DirCheck {
    fn check(&self, rep: &Report<'_>) -> Result<(), ConfigError> {
        lookup::check_path(
            rep,
            self.from,
            self.key,
            &self.written,
            &self.abs,
            self.show_abs,
            Need::Dir,
        )
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
