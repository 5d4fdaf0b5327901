//! One test per rejected key or value (ripgrep's per-flag habit), plus
//! acceptance tests that load the shipped fleet.yaml and examples/fleet.yaml
//! so neither can drift from the loader. Every test works in its own temp
//! dir and passes it as the current directory: nothing reads the real cwd.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Strategy;
use super::raw;
use super::*;
use crate::builtin::HEALTH_PATH;

const SHIPPED: &str = include_str!("../../fleet.yaml");
const EXAMPLE: &str = include_str!("../../examples/fleet.yaml");

/// `fleet up <flags>` as overrides. `config` knows nothing of clap, so the
/// flags are read here by name; `cli`'s own test checks that clap fills
/// every field the same way.
fn up(flags: &[&str]) -> Overrides {
    let mut o = Overrides::default();
    let mut it = flags.iter().copied();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || value.parse::<u32>().expect("a number, as clap requires");
        match flag {
            "-f" | "--file" => o.file = Some(value.into()),
            "--backends" => o.backends = Some(number()),
            "--base-port" => o.base_port = Some(number()),
            "--listen" => o.listen = Some(value.into()),
            "--www" => o.www = Some(value.into()),
            "--mode" => o.mode = Some(value.into()),
            "--admin" => o.admin = Some(value.into()),
            "--upstream" => o.upstreams.push(value.into()),
            other => panic!("not a flag of `fleet up` that overrides the file: {other}"),
        }
    }
    o
}

/// A temp dir that plays the current directory, with a `www/` in it.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        let d = tempfile::Builder::new().prefix("cfg").tempdir().unwrap();
        fs::create_dir(d.path().join("www")).unwrap();
        Dir(d)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
    fn write(&self, rel: &str, text: &str) -> &Dir {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
        self
    }
    fn mkdir(&self, rel: &str) -> &Dir {
        fs::create_dir_all(self.path().join(rel)).unwrap();
        self
    }
    fn load(&self, flags: &[&str]) -> Result<Config, ConfigError> {
        load_in(&up(flags), self.path())
    }
}

/// Load `yaml` as ./fleet.yaml (next to a `www/`) with `flags`.
fn load_yaml(yaml: &str, flags: &[&str]) -> Result<Config, ConfigError> {
    let d = Dir::new();
    d.write("fleet.yaml", yaml).load(flags)
}

/// The one-line message for a config that must be rejected.
fn err(yaml: &str, flags: &[&str]) -> String {
    match load_yaml(yaml, flags) {
        Ok(c) => panic!("accepted:\n{yaml}\nas {c:#?}"),
        Err(e) => e.to_string(),
    }
}

/// The lab defaults, with the paths `load` resolves.
fn lab(dir: &Path, source: Option<&str>) -> Config {
    Config {
        www: Www::Dir(dir.join("www")),
        source: source.map(|s| dir.join(s)),
        ..Config::default()
    }
}

/// `text` with the commented-out `# backend:` block uncommented.
fn uncomment_backend(text: &str) -> String {
    let mut inside = false;
    text.lines()
        .map(|line| {
            if line.starts_with("# backend:") {
                inside = true;
            } else if !(line.starts_with("#   ") || line.starts_with("#  ")) {
                inside = false;
            }
            match line.strip_prefix("# ") {
                Some(code) if inside => code.to_owned(),
                _ => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// --- acceptance -------------------------------------------------------------

#[test]
fn defaults_when_no_file() {
    let d = Dir::new();
    assert_eq!(d.load(&[]).unwrap(), lab(d.path(), None));
}

#[test]
fn empty_or_comment_only_file_means_defaults() {
    for text in ["", "\n", "# nothing here\n", "---\n"] {
        let d = Dir::new();
        let c = d.write("fleet.yaml", text).load(&[]).unwrap();
        assert_eq!(c, lab(d.path(), Some("fleet.yaml")), "{text:?}");
    }
}

#[test]
fn key_without_value_means_default() {
    let c = load_yaml("backends:\nhealth:\nrestart:\n  policy: ~\n", &[]).unwrap();
    assert_eq!(c.backends, 4);
    assert_eq!(c.restart.policy, RestartPolicy::Always);
}

#[test]
fn shipped_fleet_yaml_reproduces_lab_defaults() {
    let d = Dir::new();
    let c = d.write("fleet.yaml", SHIPPED).load(&[]).unwrap();
    assert_eq!(c, lab(d.path(), Some("fleet.yaml")));
    assert_eq!(c.ports().collect::<Vec<_>>(), [9002, 9003, 9004, 9005]);
}

#[test]
fn example_fleet_yaml_states_every_default() {
    let d = Dir::new();
    let c = d.write("fleet.yaml", EXAMPLE).load(&[]).unwrap();
    assert_eq!(c, lab(d.path(), Some("fleet.yaml")));
    for (section, keys) in raw::sections() {
        if section == "backend" || section == "watch" {
            // Commented out as a whole: the default is the built-in worker,
            // and watch mode is off.
            assert!(EXAMPLE.contains(&format!("\n# {section}:\n")));
            for key in keys {
                assert!(
                    EXAMPLE.contains(&format!("\n#   {key}:")),
                    "{section}.{key}"
                );
            }
            continue;
        }
        let top_sections = raw::sections().map(|(name, _)| name);
        for key in keys.iter().filter(|k| !top_sections.contains(k)) {
            let indent = if section.is_empty() { "" } else { "  " };
            let needle = format!("\n{indent}{key}:");
            let commented = format!("\n{indent}# {key}:");
            assert!(
                EXAMPLE.contains(&needle) || EXAMPLE.contains(&commented),
                "examples/fleet.yaml lacks {section}.{key}"
            );
        }
    }
}

#[test]
fn example_custom_backend_parses() {
    let text = uncomment_backend(EXAMPLE);
    assert!(
        text.contains("\nbackend:\n"),
        "no backend block to uncomment"
    );
    let d = Dir::new();
    let c = d.write("fleet.yaml", &text).load(&[]).unwrap();
    let BackendProgram::Custom {
        program,
        args,
        cwd,
        env,
    } = &c.backend
    else {
        panic!("not a command backend: {:?}", c.backend)
    };
    assert_eq!(program, "python3");
    assert_eq!(
        args,
        &["-m", "http.server", "{port}", "--bind", "127.0.0.1"]
    );
    assert_eq!(cwd, d.path());
    assert_eq!(env.get("LANG").map(String::as_str), Some("C.UTF-8"));
    let (prog, argv) = c.backend.argv(9003).unwrap();
    assert_eq!(prog, "python3");
    assert_eq!(argv, ["-m", "http.server", "9003", "--bind", "127.0.0.1"]);
}

#[test]
fn shipped_custom_backend_parses() {
    let text = uncomment_backend(SHIPPED);
    let c = load_yaml(&text, &[]).unwrap();
    assert_eq!(
        c.backend.argv(9002),
        Some((
            "python3",
            vec!["async_server.py".to_owned(), "9002".to_owned()]
        ))
    );
}

#[test]
fn every_key_is_derived_from_the_raw_structs_and_parses() {
    let sections = raw::sections();
    let top = sections[0].1;
    assert!(top.contains(&"base_port") && top.contains(&"health"));
    let mut yaml = String::new();
    for key in top {
        match sections.iter().find(|(name, _)| name == key) {
            Some((_, keys)) => {
                yaml.push_str(&format!("{key}:\n"));
                for k in *keys {
                    yaml.push_str(&format!("  {k}: ~\n"));
                }
            }
            None => yaml.push_str(&format!("{key}: ~\n")),
        }
    }
    // Every section but the top level is a top-level key.
    for (name, _) in &sections[1..] {
        assert!(top.contains(name), "section {name} is not a top-level key");
    }
    raw::parse(&yaml, Path::new("fleet.yaml")).unwrap();
}

#[test]
fn all_values_are_read() {
    let d = Dir::new();
    d.mkdir("srv");
    let yaml = "\
backends: 2
base_port: 7000
listen: 0.0.0.0:8080
backend:
  command: [./server, --port, '{port}']
  cwd: srv
  env: {A: x, N: 3, B: true}
health:
  kind: http
  path: /healthz
  interval: 2s
  timeout: 1s 500ms
  rise: 1
  fall: 7
  restart_after: 9
restart:
  policy: on-failure
  initial_backoff: 50ms
  max_backoff: 1m
  max_restarts: 3
  window: 5m
shutdown:
  timeout: 3s
  drain_timeout: 4s
balancer:
  mode: tcp
  strategy: least-connections
  max_connections: 64
  connect_timeout: 200ms
  idle_timeout: 2m
  response_timeout: 5s
  eject_after: 3
  eject_window: 30s
  max_ejection_percent: 25%
  backend_header: false
  slow_start: 15s
  threads: 3
";
    let c = d.write("fleet.yaml", yaml).load(&[]).unwrap();
    assert_eq!(c.backends, 2);
    assert_eq!(c.base_port, 7000);
    assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
    let BackendProgram::Custom { cwd, env, .. } = &c.backend else {
        panic!("builtin")
    };
    assert_eq!(cwd, &d.path().join("srv"));
    let env: Vec<_> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(env, ["A=x", "B=true", "N=3"]);
    assert_eq!(c.backend.argv(7001).unwrap().1, ["--port", "7001"]);
    assert_eq!(
        c.health,
        HealthConfig {
            kind: HealthKind::Http {
                path: "/healthz".into()
            },
            interval: Duration::from_secs(2),
            timeout: Duration::from_millis(1500),
            rise: 1,
            fall: 7,
            restart_after: 9,
        }
    );
    assert_eq!(
        c.restart,
        RestartConfig {
            policy: RestartPolicy::OnFailure,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(60),
            max_restarts: 3,
            window: Duration::from_secs(300),
        }
    );
    assert_eq!(c.shutdown.timeout, Duration::from_secs(3));
    assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(4));
    assert_eq!(
        c.balancer,
        BalancerConfig {
            mode: BalancerMode::Tcp,
            strategy: Strategy::LeastConnections,
            max_connections: 64,
            connect_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(120),
            response_timeout: Duration::from_secs(5),
            passive: PassiveHealth {
                eject_after: 3,
                eject_window: Duration::from_secs(30),
                max_ejection_percent: 25,
            },
            access_log: None,
            backend_header: false,
            slow_start: Duration::from_secs(15),
            threads: std::num::NonZeroU8::new(3),
        }
    );
}

#[test]
fn threads_are_a_count_or_auto() {
    let c = load_yaml("", &[]).unwrap();
    assert_eq!(c.balancer.threads, None, "one per core unless set");
    assert!(c.balancer.engine_threads() >= 1);
    let c = load_yaml("balancer:\n  threads: auto\n", &[]).unwrap();
    assert_eq!(c.balancer.threads, None);
    let c = load_yaml("balancer:\n  threads: 64\n", &[]).unwrap();
    assert_eq!(c.balancer.engine_threads(), 64);
}

#[test]
fn backend_header_is_true_or_false() {
    assert!(load_yaml("", &[]).unwrap().balancer.backend_header);
    let c = load_yaml("balancer:\n  backend_header: true\n", &[]).unwrap();
    assert!(c.balancer.backend_header);
    assert_eq!(
        err("balancer:\n  backend_header: \"false\"\n", &[]),
        "fleet.yaml:2: balancer.backend_header: expected true or false, got the string 'false' (remove the quotes)"
    );
    assert_eq!(
        err("balancer:\n  backend_header: 0\n", &[]),
        "fleet.yaml:2: balancer.backend_header: expected true or false, got 0"
    );
}

#[test]
fn health_kind_tcp_and_all_policies_parse() {
    let c = load_yaml("health: {kind: tcp, path: /ignored}\n", &[]).unwrap();
    assert_eq!(c.health.kind, HealthKind::Tcp);
    for (word, policy) in [
        ("always", RestartPolicy::Always),
        ("on-failure", RestartPolicy::OnFailure),
        ("never", RestartPolicy::Never),
    ] {
        let c = load_yaml(&format!("restart:\n  policy: {word}\n"), &[]).unwrap();
        assert_eq!(c.restart.policy, policy);
    }
}

#[test]
fn builtin_backend_has_no_argv() {
    assert_eq!(BackendProgram::Builtin.argv(9002), None);
}

// --- precedence ---------------------------------------------------------------

#[test]
fn flags_override_file() {
    let d = Dir::new();
    d.mkdir("other");
    let yaml = "backends: 2\nbase_port: 9100\nlisten: 127.0.0.1:5000\nwww: www\n";
    let flags = [
        "--backends",
        "3",
        "--base-port",
        "9200",
        "--listen",
        "0.0.0.0:6000",
        "--www",
        "other",
    ];
    let c = d.write("fleet.yaml", yaml).load(&flags).unwrap();
    assert_eq!((c.backends, c.base_port), (3, 9200));
    assert_eq!(c.listen.to_string(), "0.0.0.0:6000");
    assert_eq!(c.www, Www::Dir(d.path().join("other")));
}

#[test]
fn file_overrides_defaults() {
    let c = load_yaml("backends: 6\n", &["--base-port", "9500"]).unwrap();
    assert_eq!((c.backends, c.base_port), (6, 9500));
    assert_eq!(c.listen, Config::default().listen);
}

#[test]
fn file_is_validated_despite_flag_override() {
    assert_eq!(
        err("backends: 0\n", &["--backends", "4"]),
        "fleet.yaml:1: backends: must be at least 1 when there are no upstreams (got 0)"
    );
    assert_eq!(
        err("listen: nowhere\n", &["--listen", "127.0.0.1:1"]),
        "fleet.yaml:1: listen: 'nowhere' is not an ADDR:PORT address such as 127.0.0.1:44444, or a PORT"
    );
}

#[test]
fn file_port_range_is_checked_even_when_a_flag_fixes_it() {
    assert_eq!(
        err("backends: 4\nbase_port: 65534\n", &["--backends", "1"]),
        "fleet.yaml:2: base_port: 65534 with 4 backends needs ports 65534..=65537, and port 65536 \
         is past 65535 (use base_port 65532 or at most 2 backends)"
    );
}

// --- files and paths --------------------------------------------------------------

#[test]
fn missing_file_flag_is_named() {
    let d = Dir::new();
    let e = d.load(&["-f", "nope.yaml"]).unwrap_err();
    assert_eq!(e.to_string(), "nope.yaml: config file (-f) does not exist");
    assert_eq!(e.path(), Some(Path::new("nope.yaml")));
}

#[test]
fn file_that_is_not_utf8_is_rejected() {
    let d = Dir::new();
    fs::write(d.path().join("fleet.yaml"), b"backends: \xff\n").unwrap();
    assert_eq!(
        d.load(&[]).unwrap_err().to_string(),
        "fleet.yaml: config file is not UTF-8 text"
    );
}

#[test]
fn paths_from_file_are_relative_to_the_file() {
    let d = Dir::new();
    d.mkdir("conf/site").mkdir("conf/app");
    d.write(
        "conf/fleet.yaml",
        "www: site\nbackend:\n  command: [x]\n  cwd: app\n",
    );
    let c = d.load(&["-f", "conf/fleet.yaml"]).unwrap();
    assert_eq!(c.www, Www::Dir(d.path().join("conf/site")));
    assert_eq!(c.source, Some(d.path().join("conf/fleet.yaml")));
    let BackendProgram::Custom { cwd, .. } = &c.backend else {
        panic!("builtin")
    };
    assert_eq!(cwd, &d.path().join("conf/app"));
}

#[test]
fn default_www_is_relative_to_the_file() {
    let d = Dir::new();
    d.mkdir("conf/www");
    let c = d
        .write("conf/fleet.yaml", "")
        .load(&["-f", "conf/fleet.yaml"])
        .unwrap();
    assert_eq!(c.www, Www::Dir(d.path().join("conf/www")));
}

#[test]
fn www_flag_is_relative_to_the_current_dir() {
    let d = Dir::new();
    d.mkdir("conf/site").mkdir("site");
    d.write("conf/fleet.yaml", "www: site\n");
    let c = d
        .load(&["-f", "conf/fleet.yaml", "--www", "./site"])
        .unwrap();
    assert_eq!(c.www, Www::Dir(d.path().join("site")));
}

#[test]
fn paths_in_config_are_absolute() {
    let d = Dir::new();
    let c = d.write("fleet.yaml", "www: ./www/.\n").load(&[]).unwrap();
    assert_eq!(c.www, Www::Dir(d.path().join("www")));
    assert!(c.source.unwrap().is_absolute());
}

// --- rejected values ------------------------------------------------------------

/// Every rejected value that needs no more than its message checked: the
/// config (as ./fleet.yaml, next to a `www/`), the flags, and the one line
/// the user sees. Named for what it shows; tests that check more than the
/// message follow the table.
const REJECTED: &[(&str, &str, &[&str], &str)] = &[
    (
        "backends_zero_is_rejected",
        "backends: 0\n",
        &[],
        "fleet.yaml:1: backends: must be at least 1 when there are no upstreams (got 0)",
    ),
    (
        "backends_past_cap_is_rejected",
        "backends: 1001\n",
        &[],
        "fleet.yaml:1: backends: must be at most 1000 (got 1001)",
    ),
    (
        "backends_flag_zero_is_rejected",
        "",
        &["--backends", "0"],
        "--backends: must be at least 1 when there are no upstreams (got 0)",
    ),
    (
        "backends_fraction_is_rejected",
        "backends: 2.5\n",
        &[],
        "fleet.yaml:1: backends: expected a whole number, got 2.5",
    ),
    (
        "quoted_number_is_rejected_with_hint",
        "backends: '4'\n",
        &[],
        "fleet.yaml:1: backends: expected a whole number, got the string '4' (remove the quotes)",
    ),
    (
        "base_port_past_65535_is_rejected",
        "backends: 4\nbase_port: 70000\n",
        &[],
        "fleet.yaml:2: base_port: 70000 is past 65535",
    ),
    (
        "base_port_zero_is_rejected",
        "base_port: 0\n",
        &[],
        "fleet.yaml:1: base_port: must be at least 1 (got 0)",
    ),
    (
        "base_port_negative_is_rejected",
        "base_port: -9002\n",
        &[],
        "fleet.yaml:1: base_port: must be at least 1 (got -9002)",
    ),
    (
        "base_port_flag_past_65535_is_rejected",
        "",
        &["--base-port", "70000"],
        "--base-port: 70000 is past 65535",
    ),
    (
        "port_range_overflow_names_the_port",
        "base_port: 65534\n",
        &[],
        "fleet.yaml:1: base_port: 65534 with 4 backends (the default) needs ports 65534..=65537, \
         and port 65536 is past 65535 (use base_port 65532 or at most 2 backends)",
    ),
    (
        "malformed_listen_is_rejected",
        "listen: localhost\n",
        &[],
        "fleet.yaml:1: listen: 'localhost' is not an ADDR:PORT address such as 127.0.0.1:44444, or a PORT",
    ),
    (
        "listen_port_alone_out_of_range_is_rejected",
        "listen: 70000\n",
        &[],
        "fleet.yaml:1: listen: port 70000 is out of range (0-65535)",
    ),
    (
        "listen_flag_malformed_is_rejected",
        "",
        &["--listen", "nowhere:x"],
        "--listen: 'nowhere:x' is not an ADDR:PORT address such as 127.0.0.1:44444, or a PORT",
    ),
    (
        "negative_duration_is_rejected",
        "health:\n  interval: -1s\n",
        &[],
        "fleet.yaml:2: health.interval: must not be negative (got -1s)",
    ),
    (
        "malformed_duration_is_rejected",
        "shutdown:\n  timeout: fast\n",
        &[],
        "fleet.yaml:2: shutdown.timeout: 'fast' is not a duration; write it like 250ms, 1s or 2m",
    ),
    (
        "zero_duration_is_rejected",
        "restart:\n  window: 0s\n",
        &[],
        "fleet.yaml:2: restart.window: must be longer than 0 (got 0s)",
    ),
    (
        "zero_duration_is_rejected",
        "restart:\n  window: 0\n",
        &[],
        "fleet.yaml:2: restart.window: must be longer than 0 (got 0)",
    ),
    (
        "duration_past_a_day_is_rejected",
        "balancer: {connect_timeout: 2days}\n",
        &[],
        "fleet.yaml:1: balancer.connect_timeout: must be at most 1day (got 2days)",
    ),
    (
        "health_timeout_longer_than_interval_is_rejected",
        "health:\n  interval: 1s\n  timeout: 2s\n",
        &[],
        "fleet.yaml:3: health.timeout: 2s is longer than health.interval (1s); a probe must \
         finish before the next one is due",
    ),
    (
        "health_interval_below_default_timeout_blames_interval",
        "health:\n  interval: 100ms\n",
        &[],
        "fleet.yaml:2: health.interval: 100ms is shorter than health.timeout (500ms, the \
         default); a probe must finish before the next one is due",
    ),
    (
        "health_rise_zero_is_rejected",
        "health:\n  rise: 0\n",
        &[],
        "fleet.yaml:2: health.rise: must be at least 1 (got 0)",
    ),
    (
        "health_fall_zero_is_rejected",
        "health:\n  fall: 0\n",
        &[],
        "fleet.yaml:2: health.fall: must be at least 1 (got 0)",
    ),
    (
        "health_restart_after_zero_is_rejected",
        "health:\n  restart_after: -2\n",
        &[],
        "fleet.yaml:2: health.restart_after: must be at least 1 (got -2)",
    ),
    (
        "max_restarts_zero_is_rejected",
        "restart:\n  max_restarts: 0\n",
        &[],
        "fleet.yaml:2: restart.max_restarts: must be at least 1 (got 0); to never restart, set \
         restart.policy: never",
    ),
    (
        "max_connections_zero_is_rejected",
        "balancer:\n  max_connections: 0\n",
        &[],
        "fleet.yaml:2: balancer.max_connections: must be at least 1 (got 0)",
    ),
    (
        "threads_zero_is_rejected",
        "balancer:\n  threads: 0\n",
        &[],
        "fleet.yaml:2: balancer.threads: must be between 1 and 64 (got 0)",
    ),
    (
        "threads_above_64_are_rejected",
        "balancer:\n  threads: 65\n",
        &[],
        "fleet.yaml:2: balancer.threads: must be between 1 and 64 (got 65)",
    ),
    (
        "threads_that_are_not_a_number_are_rejected",
        "balancer:\n  threads: many\n",
        &[],
        "fleet.yaml:2: balancer.threads: expected a number of threads from 1 to 64 or auto, \
         got 'many'",
    ),
    (
        "eject_after_zero_is_rejected",
        "balancer:\n  eject_after: 0\n",
        &[],
        "fleet.yaml:2: balancer.eject_after: must be at least 1 (got 0)",
    ),
    (
        "max_ejection_percent_above_100_is_rejected",
        "balancer:\n  max_ejection_percent: 150%\n",
        &[],
        "fleet.yaml:2: balancer.max_ejection_percent: must be between 0 and 100 (got 150)",
    ),
    (
        "max_ejection_percent_that_is_not_a_share_is_rejected",
        "balancer:\n  max_ejection_percent: half\n",
        &[],
        "fleet.yaml:2: balancer.max_ejection_percent: expected a percentage such as 50 or 50%, \
         got 'half'",
    ),
    (
        "bad_health_kind_is_rejected",
        "health:\n  kind: udp\n",
        &[],
        "fleet.yaml:2: health.kind: 'udp' is not a health check kind; use one of: http, tcp",
    ),
    (
        "bad_restart_policy_is_rejected",
        "restart:\n  policy: sometimes\n",
        &[],
        "fleet.yaml:2: restart.policy: 'sometimes' is not a restart policy; use one of: always, \
         on-failure, never",
    ),
    (
        "near_miss_restart_policy_gets_a_suggestion",
        "restart:\n  policy: on_failure\n",
        &[],
        "fleet.yaml:2: restart.policy: 'on_failure' is not a restart policy; did you mean \
         on-failure? (one of: always, on-failure, never)",
    ),
    (
        "health_path_without_slash_is_rejected",
        "health:\n  path: healthz\n",
        &[],
        "fleet.yaml:2: health.path: 'healthz' must start with '/'",
    ),
    (
        "health_path_with_space_is_rejected",
        "health:\n  path: /a b\n",
        &[],
        "fleet.yaml:2: health.path: '/a b' must not contain spaces or control characters \
         (percent-encode them)",
    ),
    (
        "missing_www_from_file_is_rejected",
        "www: ./x\n",
        &[],
        "fleet.yaml:1: www: directory ./x does not exist",
    ),
    (
        "missing_www_from_flag_is_rejected",
        "",
        &["--www", "./x"],
        "--www: directory ./x does not exist",
    ),
    (
        "empty_command_is_rejected",
        "backend:\n  command: []\n",
        &[],
        "fleet.yaml:2: backend.command: must name a program (got an empty list)",
    ),
    (
        "command_as_one_string_is_rejected",
        "backend:\n  command: python3 server.py {port}\n",
        &[],
        "fleet.yaml:2: backend.command: expected a list with one item per argument, such as \
         [\"python3\", \"server.py\", \"{port}\"], got the string 'python3 server.py {port}'",
    ),
    (
        "empty_command_item_is_rejected",
        "backend:\n  command:\n    - python3\n    - ''\n",
        &[],
        "fleet.yaml:4: backend.command[1]: must not be empty",
    ),
    (
        "backend_without_command_is_rejected",
        "backend:\n  cwd: .\n",
        &[],
        "fleet.yaml:2: backend.command: is missing; a backend section needs a command (remove \
         backend: to use the built-in worker)",
    ),
    (
        "env_name_with_equals_is_rejected",
        "backend:\n  command: [srv]\n  env:\n    A=B: x\n",
        &[],
        "fleet.yaml:4: backend.env.A=B: 'A=B' is not a valid variable name (no '=' or NUL)",
    ),
    (
        "env_empty_name_is_rejected",
        "backend:\n  command: [srv]\n  env: {'': x}\n",
        &[],
        "fleet.yaml:3: backend.env: a variable name must not be empty",
    ),
    (
        "env_port_is_rejected",
        "backend:\n  command: [srv]\n  env: {PORT: '80'}\n",
        &[],
        "fleet.yaml:3: backend.env.PORT: is set by fleet to each backend's port; use {port} in \
         backend.command instead",
    ),
    (
        "env_value_must_be_given",
        "backend:\n  command: [srv]\n  env:\n    DEBUG:\n",
        &[],
        "fleet.yaml:4: backend.env.DEBUG: has no value; write DEBUG: \"\" for an empty one",
    ),
    (
        "env_that_is_not_a_mapping_is_rejected",
        "backend:\n  command: [srv]\n  env: [A=1]\n",
        &[],
        "fleet.yaml:3: backend.env: expected a mapping of NAME: value, got a list",
    ),
    (
        "unknown_nested_key_is_named_with_its_section",
        "health:\n  kind: http\n  intreval: 1s\n",
        &[],
        "fleet.yaml:3: health.intreval: unknown key (did you mean `interval`?)",
    ),
    (
        "key_in_the_wrong_section_says_where_it_belongs",
        "interval: 1s\n",
        &[],
        "fleet.yaml:1: interval: unknown key (`interval` belongs under health:)",
    ),
    (
        "key_in_the_wrong_section_says_where_it_belongs",
        "health:\n  backends: 3\n",
        &[],
        "fleet.yaml:2: health.backends: unknown key (`backends` is a top-level key, not part \
         of health:)",
    ),
    (
        "bad_indentation_reports_line_and_column",
        "backends: 4\n  base_port: 9002\n",
        &[],
        "fleet.yaml:2:12: mapping values are not allowed in this context",
    ),
    (
        "duplicate_key_is_rejected",
        "backends: 4\nbackends: 5\n",
        &[],
        "fleet.yaml:2: backends: is set twice; a key may appear once per section",
    ),
    (
        "section_that_is_not_a_mapping_is_rejected",
        "health: 5\n",
        &[],
        "fleet.yaml:1: health: expected a section of `key: value` lines indented below it",
    ),
    (
        "section_that_is_not_a_mapping_is_rejected",
        "restart:\n  - always\n",
        &[],
        "fleet.yaml:2: restart: expected a section of `key: value` lines indented below it",
    ),
    (
        "top_level_that_is_not_a_mapping_is_rejected",
        "just some text\n",
        &[],
        "fleet.yaml:1:1: expected `key: value` lines at the top level (`fleet init --full` writes every key)",
    ),
];

#[test]
fn rejected_values_get_one_line_naming_the_place_and_the_key() {
    for (name, yaml, flags, message) in REJECTED {
        assert_eq!(err(yaml, flags), *message, "{name}");
    }
}

#[test]
fn backends_not_a_number_names_key_and_line() {
    let e = load_yaml("# lab\nbackends: four\n", &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "fleet.yaml:2: backends: expected a whole number, got 'four'"
    );
    assert_eq!(e.line(), Some(2));
    assert_eq!(e.key(), Some("backends"));
}

#[test]
fn port_range_overflow_from_flags_blames_the_flag() {
    let d = Dir::new();
    let e = d
        .load(&["--base-port", "65000", "--backends", "1000"])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--base-port: 65000 with 1000 backends (from --backends) needs ports 65000..=65999, \
         and port 65536 is past 65535 (use base_port 64536 or at most 536 backends)"
    );
}

#[test]
fn admin_is_off_by_default_and_set_by_file_or_flag() {
    let d = Dir::new();
    assert_eq!(
        d.write("fleet.yaml", "backends: 1\n")
            .load(&[])
            .unwrap()
            .admin,
        None
    );
    let c = d
        .write("fleet.yaml", "admin: 127.0.0.1:44400\n")
        .load(&[])
        .unwrap();
    assert_eq!(c.admin, Some("127.0.0.1:44400".parse().unwrap()));
    let c = d
        .write("fleet.yaml", "admin: 127.0.0.1:44400\n")
        .load(&["--admin", "127.0.0.1:5"])
        .unwrap();
    assert_eq!(c.admin, Some("127.0.0.1:5".parse().unwrap()));
}

#[test]
fn access_log_is_relative_to_the_file() {
    let d = Dir::new();
    let c = d
        .write("fleet.yaml", "balancer:\n  access_log: logs/access.log\n")
        .load(&[])
        .unwrap();
    assert_eq!(
        c.balancer.access_log,
        Some(d.path().join("logs/access.log"))
    );
    assert_eq!(Config::default().balancer.access_log, None);
}

#[test]
fn access_log_naming_a_directory_is_rejected() {
    assert_eq!(
        err("balancer:\n  access_log: logs/\n", &[]),
        "fleet.yaml:2: balancer.access_log: 'logs/' names a directory; name a file"
    );
}

#[test]
fn admin_hosts_are_names_without_a_port_kept_lowercase() {
    let d = Dir::new();
    let c = d
        .write(
            "fleet.yaml",
            "admin: 0.0.0.0:44400\nadmin_hosts: [Fleet.Lab, 192.168.1.5, \"[fe80::1]\"]\n",
        )
        .load(&[])
        .unwrap();
    assert_eq!(c.admin_hosts, ["fleet.lab", "192.168.1.5", "fe80::1"]);
    assert!(Config::default().admin_hosts.is_empty());
}

#[test]
fn malformed_admin_hosts_are_rejected() {
    assert_eq!(
        err("admin_hosts: fleet.lab\n", &[]),
        "fleet.yaml:1: admin_hosts: expected a list of host names such as [\"fleet.lab\"], got 'fleet.lab'"
    );
    assert_eq!(
        err("admin_hosts:\n  - ok.lab\n  - fleet.lab:44400\n", &[]),
        "fleet.yaml:3: admin_hosts[1]: 'fleet.lab:44400' has a port; write the name alone (any port is accepted)"
    );
    assert_eq!(
        err("admin_hosts: [\"a b\"]\n", &[]),
        "fleet.yaml:1: admin_hosts[0]: 'a b' is not a host name (letters, digits, '-' and '.')"
    );
}

#[test]
fn malformed_admin_is_rejected() {
    assert_eq!(
        err("admin: [1, 2]\n", &[]),
        "fleet.yaml:1: admin: expected ADDR:PORT such as 127.0.0.1:44444 or a PORT, got a list (quote an IPv6 address: \"[::1]:44444\")"
    );
}

#[test]
fn admin_on_a_backend_port_is_rejected() {
    assert_eq!(
        err("backends: 2\nbase_port: 9002\nadmin: 127.0.0.1:9003\n", &[]),
        "fleet.yaml:3: admin: port 9003 is a backend's port: base_port 9002 with backends 2 uses \
         9002..=9003; pick a port for admin outside that range, or move base_port"
    );
}

#[test]
fn admin_on_the_balancers_address_is_rejected() {
    assert_eq!(
        err("listen: 127.0.0.1:5000\n", &["--admin", "0.0.0.0:5000"]),
        "--admin: 0.0.0.0:5000 is the balancer's address (listen: 127.0.0.1:5000); give the admin \
         address a port of its own"
    );
}

#[test]
fn malformed_admin_flag_is_rejected() {
    assert!(err("", &["--admin", "nowhere"]).contains("--admin"));
}

#[test]
fn unquoted_ipv6_listen_gets_a_hint() {
    let e = err("listen: [::1]:44444\n", &[]);
    assert!(e.starts_with("fleet.yaml:1:"), "{e}");
    assert!(
        e.ends_with("(quote an IPv6 address: listen: \"[::1]:44444\")"),
        "{e}"
    );
    let c = load_yaml("listen: \"[::1]:44444\"\n", &[]).unwrap();
    assert_eq!(c.listen.to_string(), "[::1]:44444");
}

// --- rejected values: durations ----------------------------------------------------

#[test]
fn unknown_balancer_mode_is_rejected() {
    assert_eq!(
        err("balancer:\n  mode: htp\n", &[]),
        "fleet.yaml:2: balancer.mode: 'htp' is not a balancer mode; did you mean http? (one of: http, tcp)"
    );
}

#[test]
fn unknown_mode_flag_is_rejected() {
    assert_eq!(
        err("", &["--mode", "udp"]),
        "--mode: 'udp' is not a balancer mode; use one of: http, tcp"
    );
}

#[test]
fn mode_flag_overrides_the_file() {
    let d = Dir::new();
    let c = d
        .write("fleet.yaml", "balancer:\n  mode: http\n")
        .load(&["--mode", "tcp"])
        .unwrap();
    assert_eq!(c.balancer.mode, BalancerMode::Tcp);
    assert_eq!(
        Dir::new()
            .write("fleet.yaml", "")
            .load(&[])
            .unwrap()
            .balancer
            .mode,
        BalancerMode::Http
    );
}

#[test]
fn unknown_strategy_is_rejected() {
    assert_eq!(
        err("balancer:\n  strategy: least-connection\n", &[]),
        "fleet.yaml:2: balancer.strategy: 'least-connection' is not a balancing strategy; did you mean least-connections? (one of: round-robin, least-connections, power-of-two, ip-hash)"
    );
    assert_eq!(
        err("balancer:\n  strategy: 3\n", &[]),
        "fleet.yaml:2: balancer.strategy: expected one of: round-robin, least-connections, power-of-two, ip-hash, got 3"
    );
}

#[test]
fn every_duration_key_is_checked() {
    for (section, key) in [
        ("health", "interval"),
        ("health", "timeout"),
        ("restart", "initial_backoff"),
        ("restart", "max_backoff"),
        ("restart", "window"),
        ("shutdown", "timeout"),
        ("shutdown", "drain_timeout"),
        ("balancer", "connect_timeout"),
        ("balancer", "idle_timeout"),
        ("balancer", "response_timeout"),
        ("balancer", "eject_window"),
    ] {
        let e = err(&format!("{section}:\n  {key}: soon\n"), &[]);
        assert_eq!(
            e,
            format!(
                "fleet.yaml:2: {section}.{key}: 'soon' is not a duration; write it like 250ms, 1s or 2m"
            )
        );
    }
}

#[test]
fn max_backoff_below_initial_backoff_is_rejected() {
    assert_eq!(
        err("restart:\n  initial_backoff: 2s\n  max_backoff: 1s\n", &[]),
        "fleet.yaml:3: restart.max_backoff: 1s is shorter than restart.initial_backoff (2s)"
    );
    assert_eq!(
        err("restart:\n  initial_backoff: 30s\n", &[]),
        "fleet.yaml:2: restart.initial_backoff: 30s is longer than restart.max_backoff (10s, \
         the default)"
    );
}

// --- rejected values: counts ----------------------------------------------------------

#[test]
fn count_past_u32_is_rejected() {
    assert_eq!(
        err("health:\n  rise: 5000000000\n", &[]),
        "fleet.yaml:2: health.rise: must be at most 4294967295 (got 5000000000)"
    );
}

// --- rejected values: words and paths -----------------------------------------------

#[test]
fn www_from_another_dir_shows_where_it_looked() {
    let d = Dir::new();
    d.write("conf/fleet.yaml", "www: site\n");
    let e = d.load(&["-f", "conf/fleet.yaml"]).unwrap_err().to_string();
    let looked = d.path().join("conf/site");
    assert_eq!(
        e,
        format!(
            "conf/fleet.yaml:1: www: directory site does not exist (resolved to {})",
            looked.display()
        )
    );
}

#[test]
fn www_that_is_a_file_is_rejected() {
    let d = Dir::new();
    d.write("page.html", "hi")
        .write("fleet.yaml", "www: page.html\n");
    assert_eq!(
        d.load(&[]).unwrap_err().to_string(),
        "fleet.yaml:1: www: page.html is not a directory"
    );
}

#[test]
fn www_is_not_required_with_a_custom_command() {
    let d = tempfile::tempdir().unwrap();
    fs::write(
        d.path().join("fleet.yaml"),
        "www: gone\nbackend:\n  command: [srv]\n",
    )
    .unwrap();
    let c = load_in(&up(&[]), d.path()).unwrap();
    assert_eq!(c.www, Www::Dir(d.path().join("gone")));
}

#[test]
fn empty_www_is_rejected() {
    assert_eq!(
        err("www: ''\n", &[]),
        "fleet.yaml:1: www: must not be empty"
    );
}

// --- rejected values: backend ----------------------------------------------------------

#[test]
fn numeric_command_item_is_rejected() {
    assert_eq!(
        err(
            "backend:\n  command: [python3, -m, http.server, 8000]\n",
            &[]
        ),
        "fleet.yaml:2: backend.command[3]: expected a string, got 8000 (quote it: \"8000\")"
    );
}

#[test]
fn missing_backend_cwd_is_rejected() {
    let d = Dir::new();
    d.write("fleet.yaml", "backend:\n  command: [srv]\n  cwd: app\n");
    assert_eq!(
        d.load(&[]).unwrap_err().to_string(),
        format!(
            "fleet.yaml:3: backend.cwd: directory app does not exist (resolved to {})",
            d.path().join("app").display()
        )
    );
}

// --- unknown keys and YAML errors ----------------------------------------------------

#[test]
fn unknown_top_level_key_is_named_with_a_suggestion() {
    let e = load_yaml("backends: 4\nbase-port: 9002\n", &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "fleet.yaml:2: base-port: unknown key (did you mean `base_port`?)"
    );
    assert_eq!(e.line(), Some(2));
}

#[test]
fn unknown_key_in_every_section_names_the_section() {
    for section in ["backend", "health", "restart", "shutdown", "balancer"] {
        let e = err(&format!("{section}:\n  zzz: 1\n"), &[]);
        assert!(
            e.starts_with(&format!(
                "fleet.yaml:2: {section}.zzz: unknown key (expected one of: "
            )),
            "{e}"
        );
    }
}

#[test]
fn bad_yaml_syntax_reports_line_and_column() {
    let e = load_yaml("backends: 4\nhealth:\n  rise: [1, 2\n", &[]).unwrap_err();
    let ConfigError::Syntax { line, column, .. } = &e else {
        panic!("not a syntax error: {e:?}")
    };
    assert!(*line >= 3 && *column >= 1, "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("fleet.yaml:{line}:{column}: ")),
        "{e}"
    );
    assert_eq!(e.line(), Some(*line));
}

#[test]
fn error_accessors_describe_the_error() {
    let e = load_yaml("health:\n  rise: 0\n", &[]).unwrap_err();
    assert_eq!(e.line(), Some(2));
    assert_eq!(e.path(), Some(Path::new("fleet.yaml")));
    assert_eq!(e.key(), Some("health.rise"));
    assert_eq!(e.problem(), "must be at least 1 (got 0)");
    let flag = Dir::new().load(&["--backends", "0"]).unwrap_err();
    assert_eq!(
        (flag.line(), flag.path(), flag.key()),
        (None, None, Some("--backends"))
    );
}

#[test]
fn explicit_file_path_is_shown_as_given() {
    let d = Dir::new();
    d.write("sub/my.yaml", "backends: 0\n");
    let given = PathBuf::from("sub/my.yaml");
    let e = d.load(&["-f", given.to_str().unwrap()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sub/my.yaml:1: backends: must be at least 1 when there are no upstreams (got 0)"
    );
}

#[test]
fn health_path_defaults_to_the_builtin_endpoint_and_to_root_for_a_command() {
    let builtin = load_yaml("", &[]).unwrap();
    assert_eq!(
        builtin.health.kind,
        HealthKind::Http {
            path: HEALTH_PATH.into()
        }
    );
    let custom = load_yaml(
        "backend:\n  command: [\"python3\", \"srv.py\", \"{port}\"]\n",
        &[],
    )
    .unwrap();
    assert_eq!(custom.health.kind, HealthKind::Http { path: "/".into() });
    let set = load_yaml("health:\n  path: /up\n", &[]).unwrap();
    assert_eq!(set.health.kind, HealthKind::Http { path: "/up".into() });
}

// --- upstreams ----------------------------------------------------------------

#[test]
fn upstreams_are_resolved_and_keep_their_name() {
    let c = load_yaml("upstreams: [\"127.0.0.2:80\", \"localhost:81\"]\n", &[]).unwrap();
    assert_eq!(c.upstreams.len(), 2);
    assert_eq!(c.upstreams[0].name, "127.0.0.2:80");
    assert_eq!(c.upstreams[0].addr, "127.0.0.2:80".parse().unwrap());
    assert_eq!(c.upstreams[1].name, "localhost:81");
    assert_eq!(c.upstreams[1].addr.port(), 81);
}

#[test]
fn upstream_flags_replace_the_files_list() {
    let c = load_yaml(
        "upstreams: [\"127.0.0.2:80\"]\n",
        &["--upstream", "127.0.0.3:80", "--upstream", "127.0.0.4:80"],
    )
    .unwrap();
    let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["127.0.0.3:80", "127.0.0.4:80"]);
}

#[test]
fn zero_backends_are_allowed_with_upstreams() {
    let c = load_yaml("backends: 0\nupstreams: [\"127.0.0.2:80\"]\n", &[]).unwrap();
    assert_eq!(c.backends, 0);
    assert_eq!(c.ports().count(), 0);
    let d = Dir::new();
    let c = d
        .load(&["--backends", "0", "--upstream", "127.0.0.2:80"])
        .unwrap();
    assert_eq!(c.backends, 0);
}

#[test]
fn upstream_without_a_port_is_rejected() {
    assert_eq!(
        err("upstreams: [\"lab-pc-2\"]\n", &[]),
        "fleet.yaml:1: upstreams[0]: 'lab-pc-2' is not HOST:PORT (such as lab-pc-2:9002)"
    );
}

#[test]
fn upstream_with_port_zero_is_rejected() {
    let d = Dir::new();
    assert_eq!(
        d.load(&["--upstream", "127.0.0.2:0"])
            .unwrap_err()
            .to_string(),
        "--upstream: '127.0.0.2:0' is not HOST:PORT with a port from 1 to 65535"
    );
}

#[test]
fn upstream_that_does_not_resolve_is_rejected() {
    let e = err("upstreams: [\"no-such-host.invalid:80\"]\n", &[]);
    assert!(
        e.starts_with("fleet.yaml:1: upstreams[0]: cannot resolve 'no-such-host.invalid:80'"),
        "{e}"
    );
}

#[test]
fn names_are_resolved_only_after_every_other_check_passed() {
    // A config that fails a pure check never waits on the resolver: the
    // port error is reported, not the name that does not resolve.
    let e = err(
        "upstreams: [\"no-such-host.invalid:80\"]\nbackends: 2\nbase_port: 65535\n",
        &[],
    );
    assert!(e.starts_with("fleet.yaml:3: base_port:"), "{e}");
    let e = err(
        "upstreams: [\"no-such-host.invalid:80\"]\nbackend:\n  command: [x]\n  cwd: nope\n",
        &[],
    );
    assert!(e.contains("backend.cwd"), "{e}");
}

#[test]
fn a_files_upstreams_replaced_by_flags_are_not_resolved() {
    let c = load_yaml(
        "upstreams: [\"no-such-host.invalid:80\"]\n",
        &["--upstream", "127.0.0.3:80"],
    )
    .unwrap();
    assert_eq!(c.upstreams[0].name, "127.0.0.3:80");
}

#[test]
fn upstreams_that_are_not_a_list_are_rejected() {
    assert_eq!(
        err("upstreams: lab-pc-2:9002\n", &[]),
        "fleet.yaml:1: upstreams: expected a list of HOST:PORT such as [\"lab-pc-2:9002\"], got 'lab-pc-2:9002'"
    );
}

#[test]
fn duplicate_upstreams_are_rejected() {
    assert_eq!(
        err("upstreams:\n  - 127.0.0.2:80\n  - 127.0.0.2:80\n", &[]),
        "fleet.yaml:3: upstreams[1]: '127.0.0.2:80' is the same address as '127.0.0.2:80' (127.0.0.2:80)"
    );
}

#[test]
fn upstream_that_is_a_local_backend_is_rejected() {
    assert_eq!(
        err("upstreams: [\"127.0.0.1:9003\"]\n", &[]),
        "fleet.yaml:1: upstreams[0]: '127.0.0.1:9003' is one of this fleet's own backends (ports 9002..9005)"
    );
}

// --- listen: a bare port, and the embedded page -------------------------------

#[test]
fn listen_port_alone_means_loopback() {
    let c = load_yaml("listen: 44444\n", &[]).unwrap();
    assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 44444)));
}

#[test]
fn listen_flag_port_alone_means_loopback() {
    let d = Dir::new();
    let c = d.load(&["--listen", "44444"]).unwrap();
    assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 44444)));
}

#[test]
fn missing_default_www_means_the_embedded_page() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(load_in(&up(&[]), d.path()).unwrap().www, Www::Embedded);
}

#[test]
fn missing_default_www_beside_a_file_means_the_embedded_page() {
    let d = Dir::new();
    d.write("conf/fleet.yaml", "backends: 2\n");
    let c = d.load(&["-f", "conf/fleet.yaml"]).unwrap();
    assert_eq!(c.www, Www::Embedded);
}

#[test]
fn default_www_that_is_a_file_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("www"), "not a dir").unwrap();
    assert_eq!(
        load_in(&up(&[]), d.path()).unwrap_err().to_string(),
        "www: www is not a directory"
    );
}

#[test]
fn an_alias_bomb_is_refused_in_one_plain_line() {
    let mut text = String::from(
        "backends: 1\nbackend:\n  env:\n    l0: &l0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
    );
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 9].join(", ");
        text.push_str(&format!("    l{i}: &l{i} [{refs}]\n"));
    }
    let e = load_yaml(&text, &[]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("safety limits"), "{msg}");
    assert!(
        !msg.contains('{') && !msg.contains('\n'),
        "no debug dump: {msg}"
    );
}

#[test]
fn watch_is_off_unless_asked_for() {
    assert_eq!(load_yaml("backends: 2\n", &[]).unwrap().watch, None);
    assert_eq!(load_yaml("watch: false\n", &[]).unwrap().watch, None);
}

#[test]
fn watch_true_watches_www_for_the_builtin_worker_and_cwd_for_a_command() {
    let d = Dir::new();
    let c = d.write("fleet.yaml", "watch: true\n").load(&[]).unwrap();
    let w = c.watch.expect("on");
    assert_eq!(w.paths, [d.path().join("www")]);
    assert_eq!(w.debounce, crate::config::DEFAULT_DEBOUNCE);
    assert!(w.ignore.is_empty());
    let yaml = "backend:\n  command: [python3, app.py, \"{port}\"]\nwatch: true\n";
    let c = d.write("fleet.yaml", yaml).load(&[]).unwrap();
    assert_eq!(c.watch.expect("on").paths, [d.path().to_path_buf()]);
}

#[test]
fn watch_takes_a_list_or_a_mapping_relative_to_the_file() {
    let d = Dir::new();
    std::fs::create_dir(d.path().join("src")).unwrap();
    let c = d
        .write("fleet.yaml", "watch: [src, www]\n")
        .load(&[])
        .unwrap();
    assert_eq!(
        c.watch.expect("on").paths,
        [d.path().join("src"), d.path().join("www")]
    );
    let yaml = "watch:\n  paths: [src]\n  ignore: ['*.log']\n  debounce: 50ms\n";
    let w = d
        .write("fleet.yaml", yaml)
        .load(&[])
        .unwrap()
        .watch
        .unwrap();
    assert_eq!(w.paths, [d.path().join("src")]);
    assert_eq!(w.ignore, ["*.log"]);
    assert_eq!(w.debounce, std::time::Duration::from_millis(50));
}

#[test]
fn watch_flag_turns_it_on_and_its_paths_replace_the_files() {
    let d = Dir::new();
    std::fs::create_dir(d.path().join("src")).unwrap();
    let mut o = up(&[]);
    o.watch = Some(Vec::new());
    let c = load_in(&o, d.path()).unwrap();
    assert_eq!(c.watch.unwrap().paths, [d.path().join("www")]);
    d.write("fleet.yaml", "watch:\n  paths: [www]\n  debounce: 1s\n");
    o.watch = Some(vec!["src".into()]);
    let w = load_in(&o, d.path()).unwrap().watch.unwrap();
    assert_eq!(w.paths, [d.path().join("src")]);
    assert_eq!(w.debounce, std::time::Duration::from_secs(1));
}

#[test]
fn watch_mistakes_are_named() {
    let e = err("watch:\n  path: [www]\n", &[]);
    assert!(
        e.contains("watch.path") && e.contains("did you mean `paths`"),
        "{e}"
    );
    let e = err("watch: [nothere]\n", &[]);
    assert!(
        e.contains("watch.paths[0]") && e.contains("nothere does not exist"),
        "{e}"
    );
    let e = err("watch:\n  debounce: soon\n", &[]);
    assert!(e.contains("watch.debounce"), "{e}");
    let e = err("watch: 3\n", &[]);
    assert!(e.contains("expected watch: true, false, a list"), "{e}");
}
