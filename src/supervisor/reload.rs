//! `fleet reload` (and SIGHUP to a detached fleet): re-read fleet.yaml with
//! the flags given to `up`, validate it whole, and apply the difference.
//!
//! All or nothing up front: a file that does not validate, a missing www, or
//! a port a change needs that is busy (a new `listen`, the ports of a moved
//! `base_port` or of a grown fleet) is refused before anything is touched.
//!
//! A reload cannot take the fleet down: a new probe (`health.*`) or a new
//! command (`backend.*`, `www`) is tried on one backend first. A new probe is
//! run against one running backend; a new command (with the new probe)
//! restarts one backend on it. If that backend does not pass within the
//! start-up limit, the reload is rolled back (the tried backend goes back to
//! the old command and probe), nothing else changes, and the command fails
//! with what the probe saw. A moved `base_port` is blue/green instead
//! (`blue_green`): the whole new set is the try, beside the old one.
//!
//! In this order: new upstreams (each must pass a probe before it takes
//! traffic, else nothing changed: `upstream_set`); then either the
//! blue/green move, or the in-place changes: the try, settings that apply
//! at once (health, restart, shutdown, balancer timeouts), the backend count
//! (through `scale`), and the new command line through a rolling restart of
//! the other backends that were already there; then removed upstreams are
//! drained and removed, `admin_hosts` swapped, and last the balancer moves
//! to a new `listen` (bound at the start: `front`).
//!
//! The backend count: a `fleet scale` outlives a reload that does not change
//! `backends` in fleet.yaml (the count the file gave at the last `up` or
//! reload); a changed `backends` in the file wins.

use std::sync::Arc;
use std::time::Duration;

/// When a key read once by the balancer (`balancer.mode`, `threads`,
/// `max_connections`) takes effect: a reload that moves `listen` starts a
/// new balancer, which reads them, as do `fleet up` and `fleet upgrade`.
const NEXT_START: &str =
    "takes effect when the balancer next starts: `fleet up`, `fleet upgrade` or a new `listen`";

use tokio::time::Instant;

use super::front::Front;
use super::ops::{Fleet, OpError, Out, check_free, list, serving};
use super::state::{Policy, policy_name};
use super::{STARTUP_TIMEOUT, health, launch_for};
use crate::config::{self, BackendProgram, BalancerConfig, Config, HealthKind, Upstream, Www};
use crate::lifecycle::Phase;

impl Fleet {
    pub(super) async fn reload(&mut self, out: &Out) -> Result<String, OpError> {
        let Some((args, cwd)) = self.reload_from.clone() else {
            return Err(OpError::Invalid(
                "reload: this fleet does not know how it was started".into(),
            ));
        };
        // Reading the file, checking directories and resolving upstream
        // names all block: done on the blocking pool, not a runtime thread.
        let loaded = tokio::task::spawn_blocking(move || {
            config::load_in(&args, &cwd).map(|new| {
                let no_www = new.backend == BackendProgram::Builtin
                    && matches!(&new.www, Www::Dir(dir) if !dir.is_dir());
                (new, no_www)
            })
        })
        .await
        .map_err(|e| OpError::Invalid(format!("reload: reading the config failed: {e}")))?;
        let (mut new, no_www) = loaded?;
        if no_www && let Www::Dir(dir) = &new.www {
            return Err(OpError::Invalid(format!(
                "reload: www directory {} does not exist; nothing changed",
                dir.display()
            )));
        }
        let old = &self.config;
        // A count set by `fleet scale` stays unless fleet.yaml's changed.
        let have = self.jobs.len() as u16;
        let file_backends = new.backends;
        let kept = file_backends == self.file_backends && have != file_backends;
        if kept {
            new.backends = have;
        }
        // Every port a reload needs is checked before anything is applied,
        // so a busy one changes nothing.
        let moved = new.base_port != old.base_port;
        if moved {
            // Blue/green: the new set starts beside the old one.
            if let Some(p) = new.ports().find(|p| self.jobs.contains_key(p)) {
                return Err(OpError::PortInUse(format!(
                    "reload: backend port {p} is in use by this fleet's backend {p}; a moved \
                     base_port needs {} ports apart from the current {}",
                    new.backends,
                    list(&self.jobs.keys().copied().collect::<Vec<_>>())
                )));
            }
            check_free(new.ports().collect()).await?;
        } else if new.backends > have {
            // A grown fleet needs its new ports free.
            check_free((new.base_port + have..new.base_port + new.backends).collect()).await?;
        }
        // The new address is bound before the old one closes; held (not
        // accepting) until everything else has applied.
        let listener = match (&self.front, new.listen != old.listen) {
            (Some(_), true) => Some(
                Front::bind(new.listen).map_err(|e| OpError::PortInUse(format!("reload: {e}")))?,
            ),
            _ => None,
        };
        if kept {
            out.progress(format!(
                "reload: backends: kept at {have} (set by fleet scale; fleet.yaml says \
                 {file_backends}, unchanged)"
            ))
            .await;
        }
        let changes = diff(old, &new);
        if changes.is_empty() {
            self.file_backends = file_backends;
            return Ok("reload: no setting changed; nothing to do".into());
        }
        for c in &changes {
            out.progress(format!("reload: {c}")).await;
        }

        // New upstreams first: one that does not pass changes nothing.
        let added = not_in(&new.upstreams, &old.upstreams);
        let removed = not_in(&old.upstreams, &new.upstreams);
        self.add_upstreams(&added, &new.health, out).await?;

        if moved {
            // The new set runs the new command and probe from its start:
            // it is its own try, and a failure leaves the old set serving.
            let balancer = new.balancer.clone();
            let grace = new.shutdown.timeout;
            if let Err(e) = self.blue_green(new, out).await {
                self.remove_upstreams(&added, out).await;
                return Err(e);
            }
            self.backends.set_config(balancer);
            self.grace_tx.send_replace(grace);
            self.file_backends = file_backends;
        } else {
            let (listen, admin_hosts) = (self.config.listen, self.config.admin_hosts.clone());
            if let Err(e) = self.apply_in_place(new, file_backends, out).await {
                // Past the try, a failure (a backend that did not come back)
                // leaves the rest unapplied: the config says what is in
                // force, so the next reload tries it again.
                self.config.listen = listen;
                self.config.admin_hosts = admin_hosts;
                self.config.upstreams = self.upstreams.iter().map(|u| u.config.clone()).collect();
                return Err(e);
            }
        }
        self.remove_upstreams(&removed, out).await;
        if let Some(front) = &mut self.front {
            front
                .admin_hosts
                .store(Arc::new(self.config.admin_hosts.clone()));
            if let Some(listener) = listener {
                let from = front.listen();
                let to = front.move_to(listener);
                out.progress(format!(
                    "reload: the balancer accepts on {to}; {from} stopped accepting \
                     (its open connections finish their requests)"
                ))
                .await;
            }
        }
        Ok(format!(
            "reloaded {} ({} change{})",
            self.config
                .source
                .as_ref()
                .map_or("the configuration".into(), |p| p.display().to_string()),
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        ))
    }

    /// The backends stay on their ports: a new probe or command is tried on
    /// one first, settings apply at once, the count through `scale`, the
    /// command through a rolling restart. An `Err` before anything applied
    /// has rolled back (and removed the upstreams just added).
    async fn apply_in_place(
        &mut self,
        mut new: Config,
        file_backends: u16,
        out: &Out,
    ) -> Result<(), OpError> {
        let old = &self.config;
        // Tried on one backend first; an `Err` has rolled it back.
        let relaunch = new.backend != old.backend || new.www != old.www;
        let added: Vec<Upstream> = new
            .upstreams
            .iter()
            .filter(|u| !old.upstreams.contains(u))
            .cloned()
            .collect();
        let tried = if relaunch {
            self.try_command(&new, out).await
        } else if new.health != old.health {
            self.try_probe(&new, out).await.map(|()| None)
        } else {
            Ok(None)
        };
        let tried = match tried {
            Ok(t) => t,
            Err(e) => {
                self.remove_upstreams(&added, out).await;
                return Err(e);
            }
        };
        let old = &self.config;

        // At once: the balancer reads its settings per connection, backend
        // tasks take theirs from the next probe or exit.
        self.backends.set_config(new.balancer.clone());
        self.grace_tx.send_replace(new.shutdown.timeout);
        if new.health != old.health || new.restart != old.restart {
            let policy = Policy::new(&new.restart, &new.health);
            for job in self.jobs.values() {
                let _ = job
                    .configure(new.health.clone(), policy.clone())
                    .await
                    .await;
            }
        }
        let count = new.backends;
        // Until `scale` below, the fleet still has the old count.
        new.backends = old.backends;
        self.config = new;
        self.file_backends = file_backends;
        let before: Vec<u16> = self.jobs.keys().copied().collect();
        if relaunch {
            for (&port, job) in &self.jobs {
                let _ = job
                    .relaunch(launch_for(&self.config, self.exe(), port))
                    .await
                    .await;
            }
        }
        if count != self.config.backends {
            self.scale(count, out).await?;
        }
        if relaunch {
            let survivors: Vec<u16> = before
                .into_iter()
                .filter(|p| Some(*p) != tried && self.jobs.contains_key(p) && !self.held(*p))
                .collect();
            if !survivors.is_empty() {
                self.restart(&survivors, false, out).await?;
            }
        }
        Ok(())
    }

    /// A new probe, run against one running backend (the first in rotation,
    /// else the first with a worker) until it passes or `STARTUP_TIMEOUT`;
    /// no backend uses it yet, so a failure leaves nothing to undo.
    async fn try_probe(&self, new: &Config, out: &Out) -> Result<(), OpError> {
        let running = |routable: bool| {
            self.jobs.values().find(|j| {
                let l = j.lifecycle();
                l.state == Phase::Running
                    && l.pid.or(l.guard_pid).is_some()
                    && (!routable || j.routable())
            })
        };
        let Some(slot) = running(true)
            .or_else(|| running(false))
            .map(|j| j.slot().clone())
        else {
            out.progress(
                "reload: no backend is running to try the new health probe on; applying it as is"
                    .into(),
            )
            .await;
            return Ok(());
        };
        let port = slot.port;
        out.progress(format!(
            "reload: trying the new health probe on backend {port} first (up to {})",
            humantime::format_duration(STARTUP_TIMEOUT)
        ))
        .await;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut failures = 0u32;
        loop {
            let seen = match health::probe(&new.health.kind, slot.addr, new.health.timeout).await {
                Ok(()) => {
                    out.progress(format!("backend {port}: passed the new health probe"))
                        .await;
                    return Ok(());
                }
                Err(e) => e,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(OpError::Invalid(format!(
                    "reload: backend {port} did not pass the new health probe within {}: {seen}; \
                     rolled back: nothing changed, the old probe stays in force",
                    humantime::format_duration(STARTUP_TIMEOUT)
                )));
            }
            failures = failures.saturating_add(1);
            let wait = health::starting_delay(failures, new.health.interval);
            tokio::time::sleep_until((now + wait).min(deadline)).await;
        }
    }

    /// A new command line (with the new probe and policy), tried by
    /// restarting one backend on it (the first one not held by `fleet
    /// stop`). `Ok(Some(port))`: it passed and runs the new command;
    /// `Ok(None)`: every backend is held, nothing runs to try it on. On a
    /// failure the backend goes back to the old settings and is restarted.
    async fn try_command(&self, new: &Config, out: &Out) -> Result<Option<u16>, OpError> {
        let Some(port) = self.jobs.keys().copied().find(|p| !self.held(*p)) else {
            return Ok(None);
        };
        let limit = self.restart_limit();
        out.progress(format!(
            "reload: trying the new settings on backend {port} first (up to {})",
            humantime::format_duration(limit)
        ))
        .await;
        self.retarget(port, new).await;
        let ticket = self.restarted(port, out).await;
        let why = match serving(ticket).await {
            Ok(pid) => {
                out.progress(format!(
                    "backend {port}: passed with the new settings (pid {pid})"
                ))
                .await;
                return Ok(Some(port));
            }
            Err(why) => why,
        };
        // Roll back: the old command and probe, and a worker running it.
        out.progress(format!(
            "backend {port}: did not pass ({why}); rolling back"
        ))
        .await;
        self.retarget(port, &self.config).await;
        let ticket = self.restarted(port, out).await;
        let after = match serving(ticket).await {
            Ok(pid) => format!("backend {port} is back on the old settings (pid {pid})"),
            Err(w) => {
                format!("backend {port} did not come back on the old settings either: {w}")
            }
        };
        Err(OpError::Invalid(format!(
            "reload: backend {port} did not pass with the new settings within {}: {why}; \
             rolled back: nothing changed ({after})",
            humantime::format_duration(limit)
        )))
    }

    /// Give one backend `config`'s probe, policy and command line (used
    /// from its next probe and spawn).
    async fn retarget(&self, port: u16, config: &Config) {
        let job = self.job(port);
        let policy = Policy::new(&config.restart, &config.health);
        let _ = job.configure(config.health.clone(), policy).await.await;
        let _ = job
            .relaunch(launch_for(config, self.exe(), port))
            .await
            .await;
    }

    /// Drain and restart one backend: the ticket of its return.
    async fn restarted(&self, port: u16, out: &Out) -> super::job::Ticket {
        let mut tickets = self.drain_then_restart(&[port], out).await;
        tickets.pop().expect("one port, one ticket").1
    }
}

/// Every setting that differs, as `key: old -> new`.
fn diff(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |key: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{key}: {a} -> {b}"));
        }
    };
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let names = |v: &mut dyn Iterator<Item = &String>| {
        let v: Vec<&str> = v.map(String::as_str).collect();
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    field("listen", old.listen.to_string(), new.listen.to_string());
    field(
        "base_port",
        old.base_port.to_string(),
        new.base_port.to_string(),
    );
    field(
        "backends",
        old.backends.to_string(),
        new.backends.to_string(),
    );
    field("www", www(&old.www), www(&new.www));
    let (oc, ocwd, oenv) = backend_parts(&old.backend);
    let (nc, ncwd, nenv) = backend_parts(&new.backend);
    field("backend.command", oc, nc);
    field("backend.cwd", ocwd, ncwd);
    field("backend.env", oenv, nenv);
    let (oh, nh) = (&old.health, &new.health);
    match (&oh.kind, &nh.kind) {
        (HealthKind::Http { path: a }, HealthKind::Http { path: b }) => {
            field("health.path", a.clone(), b.clone())
        }
        (a, b) => field("health.kind", kind(a), kind(b)),
    }
    field("health.interval", d(oh.interval), d(nh.interval));
    field("health.timeout", d(oh.timeout), d(nh.timeout));
    field("health.rise", oh.rise.to_string(), nh.rise.to_string());
    field("health.fall", oh.fall.to_string(), nh.fall.to_string());
    field(
        "health.restart_after",
        oh.restart_after.to_string(),
        nh.restart_after.to_string(),
    );
    let (or, nr) = (&old.restart, &new.restart);
    field(
        "restart.policy",
        policy_name(or.policy).into(),
        policy_name(nr.policy).into(),
    );
    field(
        "restart.initial_backoff",
        d(or.initial_backoff),
        d(nr.initial_backoff),
    );
    field("restart.max_backoff", d(or.max_backoff), d(nr.max_backoff));
    field(
        "restart.max_restarts",
        or.max_restarts.to_string(),
        nr.max_restarts.to_string(),
    );
    field("restart.window", d(or.window), d(nr.window));
    // An upstream whose name now resolves elsewhere is named with its
    // address, so the change shows.
    let upstreams = |c: &Config| {
        let shown: Vec<String> = c
            .upstreams
            .iter()
            .map(|u| {
                let moved = old
                    .upstreams
                    .iter()
                    .chain(&new.upstreams)
                    .any(|o| o.name == u.name && o.addr != u.addr);
                match moved {
                    true => format!("{} ({})", u.name, u.addr),
                    false => u.name.clone(),
                }
            })
            .collect();
        names(&mut shown.iter())
    };
    field("upstreams", upstreams(old), upstreams(new));
    if old.admin != new.admin {
        let addr =
            |a: Option<std::net::SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
        field(
            "admin",
            addr(old.admin),
            format!("{} (takes effect at the next `fleet up`)", addr(new.admin)),
        );
    }
    if old.watch != new.watch {
        // The watcher runs from `up` to `down`; say so rather than let a
        // changed `watch:` look applied.
        let shown = |w: &Option<crate::config::WatchConfig>| {
            w.as_ref().map_or_else(
                || "off".to_owned(),
                |w| {
                    let paths: Vec<String> =
                        w.paths.iter().map(|p| p.display().to_string()).collect();
                    paths.join(", ")
                },
            )
        };
        field(
            "watch",
            shown(&old.watch),
            format!(
                "{} (takes effect at the next `fleet up`)",
                shown(&new.watch)
            ),
        );
    }
    field(
        "admin_hosts",
        names(&mut old.admin_hosts.iter()),
        names(&mut new.admin_hosts.iter()),
    );
    field(
        "shutdown.timeout",
        d(old.shutdown.timeout),
        d(new.shutdown.timeout),
    );
    field(
        "shutdown.drain_timeout",
        d(old.shutdown.drain_timeout),
        d(new.shutdown.drain_timeout),
    );
    // Destructured in full so that a new balancer setting cannot be
    // forgotten here: the compiler asks for it.
    let BalancerConfig {
        mode,
        strategy,
        max_connections,
        connect_timeout,
        idle_timeout,
        response_timeout,
        passive,
        access_log,
        backend_header,
        slow_start,
        threads,
    } = &new.balancer;
    let ob = &old.balancer;
    if ob.mode != *mode {
        let name = |m: &crate::config::BalancerMode| match m {
            crate::config::BalancerMode::Http => "http",
            crate::config::BalancerMode::Tcp => "tcp",
        };
        field(
            "balancer.mode",
            name(&ob.mode).to_owned(),
            format!("{} ({NEXT_START})", name(mode)),
        );
    }
    field(
        "balancer.strategy",
        ob.strategy.name().to_owned(),
        strategy.name().to_owned(),
    );
    field(
        "balancer.response_timeout",
        d(ob.response_timeout),
        d(*response_timeout),
    );
    field("balancer.slow_start", d(ob.slow_start), d(*slow_start));
    field(
        "balancer.eject_after",
        ob.passive.eject_after.to_string(),
        passive.eject_after.to_string(),
    );
    field(
        "balancer.eject_window",
        d(ob.passive.eject_window),
        d(passive.eject_window),
    );
    field(
        "balancer.max_ejection_percent",
        ob.passive.max_ejection_percent.to_string(),
        passive.max_ejection_percent.to_string(),
    );
    if ob.threads != *threads {
        let name = |t: &Option<std::num::NonZeroU8>| t.map_or("auto".to_owned(), |n| n.to_string());
        field(
            "balancer.threads",
            name(&ob.threads),
            format!("{} ({NEXT_START})", name(threads)),
        );
    }
    if ob.max_connections != *max_connections {
        field(
            "balancer.max_connections",
            ob.max_connections.to_string(),
            format!("{max_connections} ({NEXT_START})"),
        );
    }
    field(
        "balancer.connect_timeout",
        d(ob.connect_timeout),
        d(*connect_timeout),
    );
    field(
        "balancer.idle_timeout",
        d(ob.idle_timeout),
        d(*idle_timeout),
    );
    let on_off = |b: bool| if b { "on" } else { "off" }.to_owned();
    field(
        "balancer.backend_header",
        on_off(ob.backend_header),
        on_off(*backend_header),
    );
    if ob.access_log != *access_log {
        let path = |p: &Option<std::path::PathBuf>| {
            p.as_ref()
                .map_or_else(|| "off".to_owned(), |p| p.display().to_string())
        };
        field(
            "balancer.access_log",
            path(&ob.access_log),
            format!("{} (takes effect at the next `fleet up`)", path(access_log)),
        );
    }
    out
}

/// The upstreams of `these` that are not in `those`.
fn not_in(these: &[Upstream], those: &[Upstream]) -> Vec<Upstream> {
    these
        .iter()
        .filter(|u| !those.contains(u))
        .cloned()
        .collect()
}

/// The directory, or the built-in page.
fn www(w: &Www) -> String {
    match w {
        Www::Dir(d) => d.display().to_string(),
        Www::Embedded => "the built-in page".into(),
    }
}

/// `http GET /path` or `tcp`.
fn kind(k: &HealthKind) -> String {
    match k {
        HealthKind::Http { path } => format!("http GET {path}"),
        HealthKind::Tcp => "tcp".into(),
    }
}

/// (command line, cwd, env) as words, for the diff.
fn backend_parts(b: &BackendProgram) -> (String, String, String) {
    match b {
        BackendProgram::Builtin => ("the built-in worker".into(), "-".into(), "none".into()),
        BackendProgram::Custom {
            program,
            args,
            cwd,
            env,
        } => (
            std::iter::once(program)
                .chain(args)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            cwd.display().to_string(),
            match env.is_empty() {
                true => "none".into(),
                false => env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    /// The diff from the default config to the default with `change` made.
    fn diff_from_default(change: impl FnOnce(&mut Config)) -> Vec<String> {
        let mut new = Config::default();
        change(&mut new);
        diff(&Config::default(), &new)
    }

    #[test]
    fn an_unchanged_config_has_no_diff() {
        assert!(diff(&Config::default(), &Config::default()).is_empty());
    }

    #[test]
    fn the_diff_names_each_changed_key_with_old_and_new_values() {
        let changed = diff_from_default(|c| {
            c.backends = 8;
            c.health.interval = Duration::from_millis(250);
            c.balancer.idle_timeout = Duration::from_secs(5);
            c.backend = BackendProgram::Custom {
                program: "python3".into(),
                args: vec!["srv.py".into(), "{port}".into()],
                cwd: PathBuf::from("/lab"),
                env: BTreeMap::new(),
            };
        });
        assert_eq!(
            changed,
            [
                "backends: 4 -> 8",
                "backend.command: the built-in worker -> python3 srv.py {port}",
                "backend.cwd: - -> /lab",
                "health.interval: 1s -> 250ms",
                "balancer.idle_timeout: 1m -> 5s",
            ]
        );
    }

    #[test]
    fn a_changed_health_path_is_named_health_path_and_a_changed_kind_health_kind() {
        assert_eq!(
            diff_from_default(|c| c.health.kind = HealthKind::Http {
                path: "/nope.html".into(),
            }),
            ["health.path: /.fleet/health -> /nope.html"]
        );
        assert_eq!(
            diff_from_default(|c| c.health.kind = HealthKind::Tcp),
            ["health.kind: http GET /.fleet/health -> tcp"]
        );
    }

    #[test]
    fn a_changed_watch_is_named_and_said_to_wait_for_the_next_up() {
        assert_eq!(
            diff_from_default(|c| c.watch = Some(crate::config::WatchConfig {
                paths: vec!["/srv/app".into()],
                ignore: Vec::new(),
                debounce: Duration::from_millis(300),
            })),
            ["watch: off -> /srv/app (takes effect at the next `fleet up`)"]
        );
    }

    #[test]
    fn listen_base_port_upstreams_and_admin_keys_are_named_in_the_diff() {
        let old = Config {
            upstreams: vec![Upstream {
                name: "a:1".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
            }],
            ..Config::default()
        };
        let mut new = Config {
            listen: "127.0.0.1:9999".parse().unwrap(),
            base_port: 9100,
            admin: Some("127.0.0.1:44400".parse().unwrap()),
            admin_hosts: vec!["fleet.lab".into()],
            ..Config::default()
        };
        new.upstreams = vec![Upstream {
            name: "b:2".into(),
            addr: "127.0.0.1:2".parse().unwrap(),
        }];
        assert_eq!(
            diff(&old, &new),
            [
                format!("listen: {} -> 127.0.0.1:9999", old.listen),
                format!("base_port: {} -> 9100", old.base_port),
                "upstreams: a:1 -> b:2".into(),
                "admin: off -> 127.0.0.1:44400 (takes effect at the next `fleet up`)".into(),
                "admin_hosts: none -> fleet.lab".into(),
            ]
        );
        // A name that now resolves elsewhere shows its addresses.
        let mut moved = old.clone();
        moved.upstreams[0].addr = "127.0.0.1:3".parse().unwrap();
        assert_eq!(
            diff(&old, &moved),
            ["upstreams: a:1 (127.0.0.1:1) -> a:1 (127.0.0.1:3)"]
        );
    }

    #[test]
    fn max_connections_is_reported_as_applying_at_the_next_up() {
        assert_eq!(
            diff_from_default(|c| c.balancer.max_connections = 100),
            [
                "balancer.max_connections: 4096 -> 100 (takes effect when the balancer next starts: `fleet up`, `fleet upgrade` or a new `listen`)"
            ]
        );
    }

    #[test]
    fn threads_are_reported_as_applying_when_the_balancer_next_starts() {
        assert_eq!(
            diff_from_default(|c| c.balancer.threads = std::num::NonZeroU8::new(4)),
            [
                "balancer.threads: auto -> 4 (takes effect when the balancer next starts: \
                 `fleet up`, `fleet upgrade` or a new `listen`)"
            ]
        );
    }
}
