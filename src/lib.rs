//! fleet: a supervisor for a fleet of HTTP server processes with a built-in
//! HTTP load balancer (every request balanced; a TCP mode for other protocols).
//!
//! # Layout
//! Every module, by what it does (a unit test below keeps this list equal to
//! the files in `src/`):
//!
//! Entry and commands
//! - `main`: parse the command line, set up logging, run, exit with the code.
//! - `cli`: the clap types of every subcommand but `serve`, whose flags the
//!   worker owns (`worker::args`); [`run`] (in this file) runs the command
//!   they name; `exit`: the exit codes; `error`: the top-level error each
//!   command's failure converges to, which only `main` prints, in the words
//!   of `message` (the message and its causes on one line).
//! - `commands`: one module per subcommand that talks to a fleet, the glue
//!   from arguments to library calls: `commands::up` (checks, binds, runs the
//!   supervisor in the foreground or detached), `commands::status`,
//!   `commands::down`, `commands::logs`, `commands::watch` (the live view of
//!   `fleet status --watch` / `fleet top`), `commands::status_view` (the
//!   status as text, which both print), and the verbs that operate a running
//!   fleet: `commands::restart`, `commands::stop`, `commands::start`,
//!   `commands::scale`, `commands::reload`, `commands::upgrade`, which share `commands::operate`
//!   (send one request, print its progress lines and outcome); and the ones
//!   that do not talk to a fleet:
//!   `commands::init` (a starter fleet.yaml and www/), `commands::export`
//!   (`commands::export::systemd` units, `commands::export::kubernetes`
//!   manifests), `commands::completions`, `commands::man`.
//! - `help`: the examples at the end of every subcommand's `--help`.
//! - `discover`: which fleet a command means: the nearest `.fleet` in this or
//!   a parent directory.
//!
//! Configuration and shared helpers
//! - `config`: fleet.yaml + `config::Overrides` (the flags, which the CLI
//!   fills: config knows nothing of clap or the worker) -> a validated
//!   `Config`: `config::raw` (what serde reads, the one place keys are
//!   spelled), `config::validate` (the order of the steps), `config::parse`
//!   (one value -> a typed value, pure), `config::precedence` (flag > file >
//!   default, each value remembering where it was written),
//!   `config::checks` (rules across keys), `config::lookup` (directories
//!   exist, names resolve: blocking, so last), `config::error`.
//! - `builtin`: what the rest of fleet knows of the built-in worker (`Www`,
//!   its default directory, its health path), so `config` needs no `worker`.
//! - `duration`: the one duration grammar, for fleet.yaml and every flag.
//! - `state_dir`: the pid file lock, the control socket's path, log paths.
//! - `listener`: binding with a deep backlog, the accept back-off loop, and
//!   the balancer's sockets (`Listening`: one per engine thread in a
//!   `SO_REUSEPORT` group on Linux, one shared elsewhere).
//! - `fd_limit`: raising the open-file limit, one policy for all.
//! - `idle`: idle tracking for a balancer connection's socket.
//! - `ports`: is a port free, and who holds it.
//! - `process`: is a pid alive (not a zombie).
//! - `lifecycle`: a backend's lifecycle as its task publishes it (`Phase`,
//!   `ExitInfo`, the `Lifecycle` snapshot): plain data, below both the
//!   supervisor and the balancer, which the control protocol re-exports.
//! - `rotating_file`: a size-capped log file, rotated once, for every log
//!   fleet writes.
//! - `log_writer`: writer threads (one for the access log, one shared by
//!   every backend log) fed by a bounded queue per log, so the access log
//!   and backend output never block a runtime thread (a full queue drops
//!   lines, counted and logged).
//! - `logging`: where this process's log lines go (stderr, the rotated
//!   supervisor.log), one timestamp each, colour only on a terminal without
//!   `NO_COLOR`.
//!
//! The supervisor (`fleet up`)
//! - `supervisor`: the `Supervisor` (start-up, serve, shut down) owns the
//!   backends, the balancer and the control server, and the one shutdown
//!   order. `supervisor::state` is the pure backend state machine (why a
//!   backend stopped is a `StopCause`); `supervisor::backend` the task per
//!   backend that executes its actions (spawning and probing through an `Io`
//!   seam, on tokio's clock); `supervisor::job` the supervisor's handle on
//!   that task: typed methods (drain, restart, halt, start, ready, retire,
//!   ...) whose tickets resolve with the task's outcome, reading the
//!   lifecycle the task publishes on its slot; `supervisor::health` the probes;
//!   `supervisor::output` each backend's log files (writing, size cap,
//!   rotation); `supervisor::orphans` what keeps workers from outliving the
//!   supervisor; `supervisor::ops` the one dispatch of the control protocol's
//!   requests and the operations on a running fleet (restart, stop, start,
//!   scale: drain, then act, as awaited tickets) and `supervisor::reload`
//!   (re-read fleet.yaml, apply the difference), with what a reload moves:
//!   `supervisor::front` (the balancer's listener, `admin_hosts`),
//!   `supervisor::blue_green` (a moved `base_port`: new set beside the old,
//!   one switch) and `supervisor::upstream_set` (upstreams added, drained
//!   and removed); `supervisor::handover` (`fleet upgrade`: both sides of
//!   handing the fleet, its sockets and its lock, to a new supervisor
//!   process); `supervisor::signals` what
//!   each signal means (stop, reload, or logged and ignored);
//!   `supervisor::upstream`
//!   the task per remote backend (no process, only health checks).
//! - `watcher`: watch mode: file changes (`notify`, on its own thread) ->
//!   debounced (`watcher::debounce`, pure) rolling restarts, one at a time,
//!   through the supervisor's loop; `watcher::ignore` which paths never
//!   count (pure).
//! - `balancer`: the accept loop and mode dispatch; `balancer::admission`
//!   (max_connections, closing the longest-idle client when full),
//!   `balancer::pool` the data plane's view of the backends (atomics behind
//!   a swapped snapshot; see "Three views" below), `balancer::passive`
//!   (when failed requests take a backend out of rotation: strikes, pure),
//!   `balancer::strategy`
//!   (how round-robin, least-connections, power-of-two and ip-hash choose,
//!   after health filtering; the setting itself is `config::Strategy`), `balancer::http` the default engine (every request
//!   balanced: `balancer::http::exchange` one request's tries and its
//!   request and response sides as state machines, generic over the
//!   streams, framed by `http1` (the strict RFC 9112 codec),
//!   `balancer::http::conn_pool` its kept-alive backend
//!   connections), `balancer::buffers` the per-thread free list of byte
//!   buffers a request takes and gives back, `balancer::tcp` the byte-splicing engine (both use `idle`
//!   for their idle timeouts), `balancer::select` the selection-and-retry
//!   state both engines share (which backend next, each at most once, the
//!   hold for a routable one, strikes), `balancer::outcome` the one record
//!   of a finished request (metrics, access log, debug line) both engines
//!   write, `balancer::access_log` the optional per-request log.
//! - `metrics`: per-backend and balancer counters and histograms in atomics
//!   (no lock per request), and per-second samples for the 10-second rates.
//! - `cost`: what an operation (restart, stop, scale, reload, ...) cost the
//!   clients, from two snapshots of those counters: its closing line, and
//!   the per-operation totals (`metrics::Totals`) `/metrics` shows.
//! - `admin`: the optional admin address: `admin::metrics` (Prometheus text
//!   format), `/status.json`, and `admin::dashboard` (the page, built in);
//!   `admin::host` which `Host` names it answers to.
//! - `control`: the Unix socket: `control::protocol` (versioned JSON lines,
//!   `FleetStatus`), `control::status` (the one place a snapshot of the
//!   backends becomes `FleetStatus`, for `fleet status`, `/status.json` and
//!   the dashboard), `control::command` (a request and where its replies
//!   go, for the supervisor's loop: the protocol's `Request` is the verb
//!   type), `control::server` (inside the supervisor),
//!   `control::client` (used by `fleet status`, `down`, `bench`).
//! - `guard`: `fleet guard`, which ties a custom backend command and
//!   everything it starts to the supervisor's lifeline (on every platform:
//!   the kernel's parent-death signal reaches only a direct child).
//!
//! The worker (`fleet serve`)
//! - `worker`: the built-in static-file HTTP/1.1 server: `worker::args` (its
//!   flags), `worker::conn` (one connection: read, parse with `http1`,
//!   answer, one vectored write; keep-alive, pipelining, timeouts),
//!   `worker::handler` (request -> reply), `worker::path` (which
//!   targets may name a file), `worker::files` (the file cache),
//!   `worker::embedded` (the built-in page, served without a www),
//!   `worker::socket` (`TCP_NODELAY` on client sockets).
//!
//! The HTTP/1 codec, below both
//! - `http1`: what the balancer and the worker share of HTTP/1, pure:
//!   `http1::framing` the strict RFC 9112 parser (request and response
//!   heads, where a body ends) and the balancer's head rewriter, fuzzed;
//!   `http1::response` a server's own response head (the worker's).
//!
//! The load generator (`fleet bench`)
//! - `bench`: the lab's ApacheBench table: `bench::args` (its flags),
//!   `bench::target` (what to
//!   measure), `bench::load` (the driver: exactly `n` requests per level),
//!   `bench::load::one_shot` and `bench::load::keepalive` (the two clients),
//!   `bench::report` (rows and output formats), `bench::plot` (the SVG).
//!
//! # Three views of a backend
//! Each has one owner. The backend task (`supervisor::backend`,
//! `supervisor::upstream`) owns the lifecycle and publishes a `Lifecycle`
//! snapshot on each change. The data plane reads only a slot's atomics
//! (routable, counters, strikes) through the `ArcSwap`ped `balancer::pool`
//! snapshot, never the lifecycle. `control::status` alone turns both into
//! the protocol's `BackendStatus`; the supervisor decides from the
//! lifecycle, never from `BackendStatus`. The http engine's kept-alive
//! connections belong to `balancer::http::conn_pool`; a slot only holds them.
//! The layout test below keeps the rule: `BackendStatus` is built only in
//! `control`, and neither `balancer` nor `supervisor::state` imports
//! `control::protocol`.
//!
//! # Layers
//! Dependencies point down. Top to bottom, each module imports only those
//! after it (a test below fails on an import that points up, and on two
//! submodules of one module that import each other):
//! `main`, `lib`, `error`, `commands`, `cli`, `bench`, `supervisor`, `watcher`,
//! `admin`, `cost`, `control`, `balancer`, `worker`, `http1`, `guard`, `idle`, `metrics`,
//! `lifecycle`, `config`, `builtin`, `discover`, `logging`, `log_writer`,
//! `rotating_file`, `state_dir`, `ports`, `process`, `listener`, `fd_limit`,
//! `duration`, `message`, `exit`, `help`
//!
//! # Process model
//! The supervisor never forks inside its tokio runtime: every worker is a
//! fresh exec of this same binary, `fleet serve` or `fleet guard -- COMMAND`
//! for a configured command, in its own process group, with a lifeline (stdin
//! pipe). The built-in worker also gets Linux's parent-death signal; the guard
//! kills its command's group, and on Linux (a child subreaper) every
//! descendant, when the lifeline ends. So nothing outlives the supervisor
//! (`supervisor::orphans`, `guard`). `process::portable` selects the macOS
//! mechanisms on Linux for tests.
//!
//! # Shutdown
//! One `CancellationToken`, cancelled by SIGINT, SIGTERM, a foreground
//! fleet's SIGHUP or the control `down` request, and by nothing else.
//! `Supervisor::run` owns the order (start-up, serve, shut down).

pub(crate) mod admin;
// The crate's interface is what the `fleet` binary, the integration tests
// and the fuzz targets use: `cli` and `run` (the binary), `logging::init`,
// `Error`, `process` (the tests' process queries), `protocol` (the status a
// test reads, the decoder a fuzz target feeds), `path` and `framing`
// (fuzzed).
// Everything else is `pub(crate)`, so the compiler reports what is unused.
mod balancer;
mod bench;
mod builtin;
pub mod cli;
mod commands;
mod config;
mod control;
mod cost;
mod discover;
mod duration;
mod error;
mod exit;
mod fd_limit;
mod guard;
mod help;
mod http1;
mod idle;
mod lifecycle;
mod listener;
mod log_writer;
pub mod logging;
mod message;
mod metrics;
mod ports;
pub mod process;
mod rotating_file;
mod state_dir;
mod supervisor;
mod watcher;
mod worker;

/// The control protocol: the status `fleet status --json` prints (which the
/// integration tests read as this type) and the decoder the fuzz target feeds.
pub use control::protocol;
pub use error::Error;
/// The HTTP/1 framing (balancer and worker), public for its fuzz target.
pub use http1::framing;
/// Request-target normalisation, public for its fuzz target.
pub use worker::path;

/// Run one command to its end: the exit code of a command that did its job
/// (0, or for the hidden `guard` the code of the command it guarded), or the
/// error that stopped it, which `main` prints and turns into its exit code.
pub fn run(command: cli::Command) -> Result<u8, Error> {
    use cli::Command;
    use commands::{
        completions, down, export, init, logs, man, reload, restart, scale, start, status, stop,
        up, upgrade, watch,
    };
    use state_dir::StateDir;
    /// A command that succeeded exits 0.
    fn done<E: Into<Error>>(r: Result<(), E>) -> Result<u8, Error> {
        r.map(|()| exit::OK).map_err(Into::into)
    }
    match command {
        Command::Up(a) => done(up::run(a)),
        Command::Status(a) if a.watch => done(watch::run(&StateDir::new(a.state.resolve()))),
        Command::Status(a) => done(status::run(a)),
        Command::Top(a) => done(watch::run(&StateDir::new(a.state.resolve()))),
        Command::Down(a) => done(down::run(a)),
        Command::Restart(a) => done(restart::run(a)),
        Command::Stop(a) => done(stop::run(a)),
        Command::Start(a) => done(start::run(a)),
        Command::Scale(a) => done(scale::run(a)),
        Command::Reload(a) => done(reload::run(a)),
        Command::Upgrade(a) => done(upgrade::run(a)),
        Command::Logs(a) => done(logs::run(a)),
        Command::Serve(a) => done(crate::worker::run(a)),
        Command::Bench(a) => done(crate::bench::run(&a)),
        Command::Guard(a) => crate::guard::run(a).map_err(Into::into),
        Command::Init(a) => done(init::run(&a)),
        Command::Completions(a) => {
            completions::run(a);
            Ok(exit::OK)
        }
        Command::Man(a) => done(man::run(a)),
        Command::Export(a) => done(export::run(a)),
    }
}

#[cfg(test)]
mod layout {
    use std::path::Path;

    /// `a::b` for `src/a/b.rs` and `src/a/b/mod.rs`; test modules (`tests`,
    /// `*_tests`) and `lib` itself
    /// are not modules a newcomer looks for.
    fn modules(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let full = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}::{name}")
            };
            if path.is_dir() {
                out.push(full.clone());
                modules(&path, &full, out);
            } else if !(matches!(name.as_str(), "mod" | "lib") || name.ends_with("tests")) {
                out.push(full);
            }
        }
    }

    /// Every `.rs` file under `dir`, with its text.
    fn sources(dir: &Path, out: &mut Vec<(std::path::PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }

    /// The three views (`# Three views of a backend`): only `control` builds
    /// the protocol's `BackendStatus`, and the data plane and the pure state
    /// machine do not depend on the control protocol at all.
    #[test]
    fn only_control_builds_backend_status() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        // Spelled in two pieces so this file does not match itself.
        let building = ["BackendStatus", " {"].concat();
        let defining = ["struct ", &building].concat();
        let protocol = ["control::", "protocol"].concat();
        let mut wrong = Vec::new();
        for (path, text) in &files {
            let rel = path.strip_prefix(&src).unwrap();
            let in_control = rel.starts_with("control");
            for line in text.lines() {
                if line.contains(&building) && !line.contains(&defining) && !in_control {
                    wrong.push(format!("{}: builds BackendStatus: {line}", rel.display()));
                }
                let below = rel.starts_with("balancer") || rel == Path::new("supervisor/state.rs");
                let imports = line.contains(&protocol)
                    || (line.contains("control::{") && line.contains("protocol"));
                if below && imports {
                    wrong.push(format!(
                        "{}: imports the control protocol: {line}",
                        rel.display()
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn the_layout_doc_names_every_module() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let doc = include_str!("lib.rs");
        let mut found = Vec::new();
        modules(&src, "", &mut found);
        let missing: Vec<_> = found
            .iter()
            .filter(|m| !doc.contains(&format!("`{m}`")))
            .collect();
        assert!(missing.is_empty(), "lib.rs # Layout lacks {missing:?}");
    }

    /// `config` sits below the command line and the worker: it takes the
    /// flags as `config::Overrides` and the worker's constants from
    /// `builtin`, so neither can change what a config means.
    #[test]
    fn config_imports_neither_cli_nor_worker() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
        let mut files = Vec::new();
        sources(&dir, &mut files);
        assert!(files.len() > 3, "found the config sources");
        let upward: Vec<String> = files
            .iter()
            .flat_map(|(path, text)| {
                ["crate::cli", "crate::worker"]
                    .into_iter()
                    .filter(|m| text.contains(m))
                    .map(move |m| format!("{} uses {m}", path.display()))
            })
            .collect();
        assert!(upward.is_empty(), "{upward:?}");
    }

    /// The layers, top to bottom: a module may import only modules listed
    /// after it (`# Layout` above says what each is for). `main` and `lib`
    /// (`run`, the crate's interface) stand above all.
    /// The layers, top to bottom, as `# Layers` in the crate doc lists them.
    fn layers() -> Vec<String> {
        let doc = include_str!("lib.rs");
        let start = doc.find("//! # Layers").expect("a # Layers section");
        let section = &doc[start..];
        let end = section.find("\n//!\n").expect("the section ends");
        section[..end]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    /// The non-test source of a file: all but its `mod tests`, with
    /// comment lines left out (a doc may name a module above).
    fn code(path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap();
        let mut in_tests = false;
        text.lines()
            .filter(|l| {
                // A top-level `mod tests {` ends at the first `}` in column 0.
                if *l == "mod tests {" {
                    in_tests = true;
                } else if in_tests && *l == "}" {
                    in_tests = false;
                    return false;
                }
                !in_tests && !l.trim_start().starts_with("//")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every `crate::a::b…` path in `code`, as its segments (`crate::{a, b}`
    /// gives `a` and `b`).
    fn crate_paths(code: &str) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let segs: Vec<String> = item
                        .trim()
                        .split("::")
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if !segs.is_empty() {
                        out.push(segs);
                    }
                }
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let segs: Vec<String> = rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if !segs.is_empty() {
                out.push(segs);
            }
        }
        out
    }

    /// `(top-level module, path below src/)` of every source file.
    fn files(dir: &Path, out: &mut Vec<(String, std::path::PathBuf)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path
                    .file_stem()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .ends_with("tests")
            {
                let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
                let rel = path.strip_prefix(&src).unwrap().to_owned();
                let first = rel
                    .components()
                    .next()
                    .unwrap()
                    .as_os_str()
                    .to_str()
                    .unwrap();
                let top = first.strip_suffix(".rs").unwrap_or(first).to_owned();
                out.push((top, path));
            }
        }
    }

    #[test]
    fn no_module_imports_a_module_above_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let layers = layers();
        assert!(layers.len() > 20, "read the layers: {layers:?}");
        let rank = |m: &str| layers.iter().position(|l| l == m);
        let mut upward = Vec::new();
        for (top, path) in &all {
            let mine = rank(top).unwrap_or_else(|| panic!("{top} is not in # Layers"));
            for segs in crate_paths(&code(path)) {
                let Some(theirs) = rank(&segs[0]) else {
                    continue;
                };
                // `crate::outln!` is the command layer's own macro.
                if theirs < mine && segs[0] != *top {
                    upward.push(format!(
                        "{} -> crate::{}",
                        path.strip_prefix(&src).unwrap().display(),
                        segs.join("::")
                    ));
                }
            }
        }
        upward.sort();
        upward.dedup();
        assert!(
            upward.is_empty(),
            "imports that point up the layers:\n{}",
            upward.join("\n")
        );
    }

    /// Within a module, submodules import each other in one direction only.
    #[test]
    fn no_two_sibling_modules_import_each_other() {
        use std::collections::BTreeSet;
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut edges = BTreeSet::new();
        for (_, path) in &all {
            let rel = path.strip_prefix(&src).unwrap();
            let parts: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_str().unwrap().to_owned())
                .collect();
            // src/a/b.rs or src/a/b/… : the module `a::b`, whose siblings are a's.
            if parts.len() < 2 || parts[1] == "mod" {
                continue;
            }
            let (parent, me) = (&parts[0], &parts[1]);
            let text = code(path);
            let siblings: BTreeSet<String> = all
                .iter()
                .filter_map(|(_, p)| {
                    let r = p.strip_prefix(&src).unwrap().with_extension("");
                    let c: Vec<_> = r
                        .components()
                        .map(|c| c.as_os_str().to_str().unwrap().to_owned())
                        .collect();
                    (c.len() >= 2 && &c[0] == parent && c[1] != "mod" && &c[1] != me)
                        .then(|| c[1].clone())
                })
                .collect();
            for sib in &siblings {
                let direct = parts.len() == 2 && text.contains(&format!("super::{sib}"));
                let full = text.contains(&format!("crate::{parent}::{sib}"));
                if direct || full {
                    edges.insert((format!("{parent}::{me}"), format!("{parent}::{sib}")));
                }
            }
        }
        let cycles: Vec<_> = edges
            .iter()
            .filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone())))
            .map(|(a, b)| format!("{a} <-> {b}"))
            .collect();
        assert!(
            cycles.is_empty(),
            "sibling modules that import each other: {cycles:?}"
        );
    }
}
