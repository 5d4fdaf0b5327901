//! `fleet reload` (and SIGHUP to a detached fleet): re-read fleet.yaml with
//! the flags given to `up`, validate it whole, and apply the difference.
//!
//! All or nothing up front: a file that does not validate, a missing www, or
//! a change a running fleet cannot make (`listen`, `base_port`) is refused
//! before anything is touched. Then, in this order: settings that apply at
//! once (health, restart, shutdown, balancer timeouts), the backend count
//! (through `scale`), and a new command line (command, cwd, env, www)
//! through a rolling restart of the backends that were already there.

use std::time::Duration;

use super::backend::BackendCmd;
use super::launch_for;
use super::ops::{Fleet, OpError, Out, check_free};
use super::state::{Policy, policy_name};
use crate::config::{self, BackendCommand, BalancerConfig, Config, HealthKind, Www};

impl Fleet {
    pub(super) async fn reload(&mut self, out: &Out) -> Result<String, OpError> {
        let Some((args, cwd)) = self.reload_from.clone() else {
            return Err(OpError::Invalid(
                "reload: this fleet does not know how it was started".into(),
            ));
        };
        let mut new = config::load_in(&args, &cwd)?;
        if new.backend == BackendCommand::Builtin
            && let Www::Dir(dir) = &new.www
            && !dir.is_dir()
        {
            return Err(OpError::Invalid(format!(
                "reload: www directory {} does not exist; nothing changed",
                dir.display()
            )));
        }
        let old = &self.config;
        if new.listen != old.listen {
            return Err(OpError::Invalid(format!(
                "reload: listen changed from {} to {}; a running fleet keeps its address \
                 (`fleet down`, then `fleet up` to move it); nothing changed",
                old.listen, new.listen
            )));
        }
        if new.base_port != old.base_port {
            return Err(OpError::Invalid(format!(
                "reload: base_port changed from {} to {}; a running fleet keeps its ports \
                 (`fleet down`, then `fleet up` to move them); nothing changed",
                old.base_port, new.base_port
            )));
        }
        if new.upstreams != old.upstreams {
            return Err(OpError::Invalid(
                "reload: upstreams changed; a running fleet keeps its upstreams \
                 (`fleet down`, then `fleet up`); nothing changed"
                    .into(),
            ));
        }
        if new.admin_hosts != old.admin_hosts {
            return Err(OpError::Invalid(
                "reload: admin_hosts changed; a running fleet keeps the names its admin address \
                 answers to (`fleet down`, then `fleet up`); nothing changed"
                    .into(),
            ));
        }
        // A grown fleet needs its new ports free: checked before anything
        // is applied, so a busy one changes nothing.
        let have = self.handles.len() as u16;
        if new.backends > have {
            check_free(&(new.base_port + have..new.base_port + new.backends).collect::<Vec<_>>())?;
        }
        let changes = diff(old, &new);
        if changes.is_empty() {
            return Ok("reload: no setting changed; nothing to do".into());
        }
        for c in &changes {
            out.progress(format!("reload: {c}")).await;
        }

        // At once: the balancer reads its settings per connection, backend
        // tasks take theirs from the next probe or exit.
        self.backends.set_config(new.balancer.clone());
        self.grace_tx.send_replace(new.shutdown.timeout);
        if new.health != old.health || new.restart != old.restart {
            let policy = Policy::new(&new.restart, &new.health);
            for h in self.handles.values() {
                let _ = h
                    .commands
                    .send(BackendCmd::Settings {
                        health: new.health.clone(),
                        policy: policy.clone(),
                    })
                    .await;
            }
        }
        let relaunch = new.backend != old.backend || new.www != old.www;
        let count = new.backends;
        // Until `scale` below, the fleet still has the old count.
        new.backends = old.backends;
        self.config = new;
        let before: Vec<u16> = self.handles.keys().copied().collect();
        if relaunch {
            for (&port, h) in &self.handles {
                let _ = h
                    .commands
                    .send(BackendCmd::Launch(launch_for(
                        &self.config,
                        self.exe(),
                        port,
                    )))
                    .await;
            }
        }
        if count != self.config.backends {
            self.scale(count, out).await?;
        }
        if relaunch {
            let survivors: Vec<u16> = before
                .into_iter()
                .filter(|p| self.handles.contains_key(p) && !self.held(*p))
                .collect();
            if !survivors.is_empty() {
                self.restart(&survivors, false, out).await?;
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
    field("health.kind", kind(&oh.kind), kind(&nh.kind));
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
        access_log,
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
            format!("{} (takes effect at the next `fleet up`)", name(mode)),
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
    if ob.max_connections != *max_connections {
        field(
            "balancer.max_connections",
            ob.max_connections.to_string(),
            format!("{max_connections} (takes effect at the next `fleet up`)"),
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
fn backend_parts(b: &BackendCommand) -> (String, String, String) {
    match b {
        BackendCommand::Builtin => ("the built-in worker".into(), "-".into(), "none".into()),
        BackendCommand::Command {
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

    #[test]
    fn an_unchanged_config_has_no_diff() {
        assert!(diff(&Config::default(), &Config::default()).is_empty());
    }

    #[test]
    fn the_diff_names_each_changed_key_with_old_and_new_values() {
        let old = Config::default();
        let mut new = Config {
            backends: 8,
            ..Config::default()
        };
        new.health.interval = Duration::from_millis(250);
        new.balancer.idle_timeout = Duration::from_secs(5);
        new.backend = BackendCommand::Command {
            program: "python3".into(),
            args: vec!["srv.py".into(), "{port}".into()],
            cwd: PathBuf::from("/lab"),
            env: BTreeMap::new(),
        };
        assert_eq!(
            diff(&old, &new),
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
    fn max_connections_is_reported_as_applying_at_the_next_up() {
        let old = Config::default();
        let mut new = Config::default();
        new.balancer.max_connections = 100;
        assert_eq!(
            diff(&old, &new),
            ["balancer.max_connections: 4096 -> 100 (takes effect at the next `fleet up`)"]
        );
    }
}
