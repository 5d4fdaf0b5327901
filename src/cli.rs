//! Command-line interface: clap derive types only. Parsing happens here; what the
//! flags *mean* (merging with fleet.yaml, validation) lives in `config`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

// Flags owned by the module that reads them (as the worker owns
// `fleet serve`'s), so no module below the command line imports it.
pub use crate::bench::{BenchArgs, BenchFormat};
pub use crate::discover::StateDirArg;
pub use crate::guard::GuardArgs;

const AFTER_HELP: &str = "\
Exit codes: 0 ok; 1 runtime failure; 2 usage or configuration error; 3 no fleet is running (status, restart, stop, start, scale, reload); 4 the state dir cannot be read (permission denied, not a directory) or, for up, is not fleet's own (a link, another user's, writable by others).
Environment: FLEET_STATE_DIR sets --state-dir for every subcommand; RUST_LOG filters log lines (default info).";

/// Supervise a fleet of HTTP servers behind a built-in round-robin load balancer.
#[derive(Debug, Parser)]
#[command(name = "fleet", version, about, after_help = format!("{}\n\n{AFTER_HELP}", crate::help::FLEET))]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the workers and the load balancer (foreground unless -d).
    // `up` does not search for a state dir: it makes one beside its fleet.yaml.
    #[command(
        after_help = crate::help::UP,
        mut_arg("state_dir", |a| a.help(
            "State directory [default: .fleet beside the fleet.yaml found in this or a parent \
             directory; ./.fleet with -f or without one]"
        ))
    )]
    Up(UpArgs),
    /// Show the running fleet.
    #[command(visible_alias = "ps")]
    #[command(after_help = crate::help::STATUS)]
    Status(StatusArgs),
    /// Live view of the running fleet (same as `fleet status --watch`).
    #[command(after_help = crate::help::TOP)]
    Top(TopArgs),
    /// Stop the fleet: drain, SIGTERM, SIGKILL past the timeout, remove the state files.
    #[command(after_help = crate::help::DOWN)]
    Down(DownArgs),
    /// Restart backends (all by default), one at a time, each drained first.
    #[command(after_help = crate::help::RESTART)]
    Restart(RestartArgs),
    /// Drain and stop backends; they stay stopped until `fleet start`.
    #[command(after_help = crate::help::STOP)]
    Stop(StopArgs),
    /// Start stopped or failed backends (all of them when no port is named).
    #[command(after_help = crate::help::START)]
    Start(StartArgs),
    /// Grow or shrink the fleet to N backends (new ones on the next ports).
    #[command(after_help = crate::help::SCALE)]
    Scale(ScaleArgs),
    /// Re-read fleet.yaml (with the flags given to `up`) and apply the changes.
    #[command(after_help = crate::help::RELOAD)]
    Reload(ReloadArgs),
    /// Hand the running fleet to a new supervisor (a new fleet binary) without a stop.
    #[command(after_help = crate::help::UPGRADE)]
    Upgrade(UpgradeArgs),
    /// Run the built-in worker: a static-file HTTP/1.1 server (also usable alone).
    #[command(after_help = crate::help::SERVE)]
    Serve(crate::worker::ServeArgs),
    /// Show the supervisor's events and the backends' output, merged by time.
    #[command(after_help = crate::help::LOGS)]
    Logs(LogsArgs),
    /// Measure a URL the way the lab's ApacheBench table does.
    Bench(BenchArgs),
    /// Write a commented fleet.yaml and a starter www/ into the current directory.
    #[command(after_help = crate::help::INIT)]
    Init(InitArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = crate::help::COMPLETIONS)]
    Completions(CompletionsArgs),
    /// Turn this fleet into systemd units or Kubernetes manifests.
    // `up`'s flags describe the fleet; -d and --state-dir mean nothing here.
    #[command(
        after_help = crate::help::EXPORT,
        mut_arg("detach", |a| a.hide(true)),
        mut_arg("state_dir", |a| a.hide(true))
    )]
    Export(ExportArgs),
    /// Write the man page (to stdout, or one page per subcommand into -o DIR).
    #[command(after_help = crate::help::MAN)]
    Man(ManArgs),
    /// Internal: run a custom backend command tied to the supervisor's lifeline.
    #[command(hide = true)]
    Guard(GuardArgs),
}

// `resolve` (the nearest `.fleet`, for commands that talk to a fleet) and
// `for_up` (where `fleet up` creates one) live in `crate::discover`.

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Configuration file [default: fleet.yaml here or in the nearest parent
    /// directory that has one]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Number of backends [default: 4]
    #[arg(long, value_name = "N")]
    pub backends: Option<u32>,
    /// First backend port; backends use PORT..PORT+N-1 [default: 9002]
    #[arg(long, value_name = "PORT")]
    pub base_port: Option<u32>,
    /// Balancer address; a bare PORT means 127.0.0.1:PORT, port 0 lets the OS choose [default: 127.0.0.1:44444]
    #[arg(long, value_name = "ADDR:PORT|PORT")]
    pub listen: Option<String>,
    /// Directory the built-in worker serves [default: ./www; the built-in page if there is none]
    #[arg(long, value_name = "DIR")]
    pub www: Option<PathBuf>,
    /// Balancer mode: http (every request balanced) or tcp (bytes spliced per
    /// connection) [default: http]
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Serve /metrics, /status.json and a dashboard on this address; a bare
    /// PORT means 127.0.0.1:PORT [default: off]
    #[arg(long, value_name = "ADDR:PORT|PORT")]
    pub admin: Option<String>,
    /// A remote backend to balance beside the local ones (repeatable; replaces
    /// fleet.yaml's upstreams). With upstreams, --backends 0 runs none locally
    #[arg(long = "upstream", value_name = "HOST:PORT")]
    pub upstreams: Vec<String>,
    /// Watch these files or directories (default: fleet.yaml's watch.paths,
    /// else the backend's cwd, or www for the built-in worker) and roll the
    /// fleet when one changes
    #[arg(long, value_name = "PATH", num_args = 0..)]
    pub watch: Option<Vec<PathBuf>>,
    /// Return once the fleet is ready and keep it running in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[command(flatten)]
    pub state: StateDirArg,
    /// Internal: set on the re-executed supervisor of `up -d`, which reports
    /// readiness on stdout and then detaches from it.
    #[arg(long, hide = true)]
    pub detached_child: bool,
    /// Internal: set by `fleet upgrade` on the new supervisor, which takes
    /// the running fleet over from the old one through this socket.
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub take_over: Option<PathBuf>,
}

impl UpArgs {
    /// The flags that override fleet.yaml, for `config` (which knows
    /// nothing of clap).
    pub(crate) fn overrides(&self) -> crate::config::Overrides {
        crate::config::Overrides {
            file: self.file.clone(),
            backends: self.backends,
            base_port: self.base_port,
            listen: self.listen.clone(),
            www: self.www.clone(),
            mode: self.mode.clone(),
            admin: self.admin.clone(),
            upstreams: self.upstreams.clone(),
            watch: self.watch.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print the status object as JSON
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Redraw the status every second until q or Ctrl-C (on a terminal;
    /// otherwise print a snapshot every second)
    #[arg(short = 'w', long)]
    pub watch: bool,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct DownArgs {
    /// How long to drain connections and wait after SIGTERM before SIGKILL,
    /// like 10s or 500ms [default: shutdown.timeout from the fleet's config]
    #[arg(long, value_parser = crate::duration::parse, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// Backends to restart, by port [default: all]
    #[arg(value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Restart them all together instead of one at a time
    #[arg(long)]
    pub all_at_once: bool,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Backends to stop, by port
    #[arg(value_name = "PORT", required = true)]
    pub ports: Vec<u16>,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Backends to start, by port [default: every stopped or failed one]
    #[arg(value_name = "PORT")]
    pub ports: Vec<u16>,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// The number of backends to run
    #[arg(value_name = "N")]
    pub backends: u16,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    /// The fleet executable to run the new supervisor [default: the path the
    /// running supervisor was started from, as it is on disk now]
    #[arg(long, value_name = "PATH")]
    pub exe: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Keep printing new lines until Ctrl-C
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Lines to show from the end of each log
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub tail: usize,
    /// Only lines from the last DURATION (e.g. 30s, 5m, 1h)
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub since: Option<std::time::Duration>,
    /// Print lines without their `[port]` / `[supervisor]` tag
    #[arg(long)]
    pub no_prefix: bool,
    /// Only this backend's log
    #[arg(value_name = "PORT")]
    pub port: Option<u16>,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Write the full reference instead: every key explained at length
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// What to export for
    #[arg(value_enum)]
    pub target: ExportTarget,
    /// Write the files into DIR instead of printing them
    #[arg(short = 'o', long = "out-dir", value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// systemd: the fleet executable the units run (absolute) [default: this one]
    #[arg(long, value_name = "PATH")]
    pub exe: Option<PathBuf>,
    /// kubernetes: the container image; it must have `fleet` on its PATH (or
    /// the backend.command's program)
    #[arg(long, value_name = "IMAGE", default_value = "fleet:latest")]
    pub image: String,
    /// The fleet to export: the same file and flags as `fleet up`
    #[command(flatten)]
    pub fleet: UpArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportTarget {
    /// fleet-backend@.service (one backend per port), fleet.service (the whole
    /// fleet), fleet-balancer.service (the balancer in front of the backend units)
    Systemd,
    /// A Deployment (one pod per backend), a Service, and the www content
    Kubernetes,
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Write fleet.1 and one page per subcommand (fleet-up.1, ...) into DIR
    /// instead of printing fleet.1
    #[arg(short = 'o', long = "out-dir", value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_up_flag_that_overrides_the_file_reaches_the_overrides() {
        let argv = [
            "fleet",
            "up",
            "-f",
            "conf/fleet.yaml",
            "--backends",
            "3",
            "--base-port",
            "7000",
            "--listen",
            "8080",
            "--www",
            "site",
            "--mode",
            "tcp",
            "--admin",
            "9100",
            "--upstream",
            "a:1",
            "--upstream",
            "b:2",
            "--watch",
            "app.py",
            "lib",
            "-d",
        ];
        let Command::Up(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not `up`");
        };
        assert_eq!(
            args.overrides(),
            crate::config::Overrides {
                file: Some("conf/fleet.yaml".into()),
                backends: Some(3),
                base_port: Some(7000),
                listen: Some("8080".into()),
                www: Some("site".into()),
                mode: Some("tcp".into()),
                admin: Some("9100".into()),
                upstreams: vec!["a:1".into(), "b:2".into()],
                watch: Some(vec!["app.py".into(), "lib".into()]),
            }
        );
    }

    #[test]
    fn every_subcommand_has_examples() {
        use clap::CommandFactory;
        let cli = Cli::command();
        for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Examples:"),
                "`fleet {}` has no examples in --help",
                sub.get_name()
            );
        }
    }
}
