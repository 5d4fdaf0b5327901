//! Command-line interface: clap derive types only. Parsing happens here; what the
//! flags *mean* (merging with fleet.yaml, validation) lives in `config`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes: 0 ok; 1 runtime failure; 2 usage or configuration error; 3 `fleet status` found no running fleet; 4 the state dir cannot be read (permission denied, not a directory).
Environment: FLEET_STATE_DIR sets --state-dir for every subcommand; RUST_LOG filters log lines (default info).";

/// Supervise a fleet of HTTP servers behind a built-in round-robin load balancer.
#[derive(Debug, Parser)]
#[command(name = "fleet", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the workers and the load balancer (foreground unless -d).
    Up(UpArgs),
    /// Show the running fleet.
    Status(StatusArgs),
    /// Stop the fleet: drain, SIGTERM, SIGKILL past the timeout, remove the state files.
    Down(DownArgs),
    /// Run the built-in worker: a static-file HTTP/1.1 server (also usable alone).
    Serve(crate::worker::ServeArgs),
    /// Show backend output captured by the supervisor.
    Logs(LogsArgs),
    /// Measure a URL the way the lab's ApacheBench table does.
    Bench(BenchArgs),
    /// Internal: run a custom backend command tied to the supervisor's lifeline.
    #[command(hide = true)]
    Guard(GuardArgs),
}

/// Where the fleet keeps its pid file, control socket and logs.
#[derive(Debug, Clone, Args)]
pub struct StateDirArg {
    /// State directory [default: ./.fleet]
    #[arg(long, env = "FLEET_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateDirArg {
    pub fn resolve(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::state_dir::DEFAULT))
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Configuration file [default: ./fleet.yaml when present]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Number of backends [default: 4]
    #[arg(long, value_name = "N")]
    pub backends: Option<u32>,
    /// First backend port; backends use PORT..PORT+N-1 [default: 9002]
    #[arg(long, value_name = "PORT")]
    pub base_port: Option<u32>,
    /// Balancer address; port 0 lets the OS choose [default: 127.0.0.1:44444]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Directory the built-in worker serves [default: ./www]
    #[arg(long, value_name = "DIR")]
    pub www: Option<PathBuf>,
    /// Return once the fleet is ready and keep it running in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[command(flatten)]
    pub state: StateDirArg,
    /// Internal: set on the re-executed supervisor of `up -d`, which reports
    /// readiness on stdout and then detaches from it.
    #[arg(long, hide = true)]
    pub detached_child: bool,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print the status object as JSON
    #[arg(long)]
    pub json: bool,
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
pub struct GuardArgs {
    /// The program and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Keep printing new lines until Ctrl-C
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Lines to show from the end of each log
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub tail: usize,
    /// Only this backend's log
    #[arg(value_name = "PORT")]
    pub port: Option<u16>,
    #[command(flatten)]
    pub state: StateDirArg,
}

const BENCH_AFTER_HELP: &str = "\
Columns follow ApacheBench: a request is complete when a whole response arrived (any status; \
non-2xx ones are also counted in Non-2xx) and failed when the connection could not be made, broke \
or timed out. Requests per second = complete / time taken; time per request = time taken / complete \
(ab's \"across all concurrent requests\"). Levels above -n are skipped, like ab.

One line per run in --plot: save a run with `--format json --label NAME > a.json`, then add it to \
a later run's chart with `--compare a.json` (repeatable).

Exit codes: 0 every level measured (failed requests are in the table); 1 a level completed no \
request (the rest are skipped), the target could not be resolved, or Ctrl-C stopped the run \
(the rows measured so far are still printed); 2 usage error (bad URL, bad flag, unreadable --compare).";

#[derive(Debug, Clone, Args)]
#[command(after_help = BENCH_AFTER_HELP)]
pub struct BenchArgs {
    /// Target URL [default: the running fleet's balancer, /page.html]
    pub url: Option<String>,
    /// Requests per concurrency level
    #[arg(short = 'n', long = "requests", default_value_t = 1000)]
    pub requests: u64,
    /// Comma-separated concurrency levels
    #[arg(
        short = 'c',
        long = "concurrency",
        value_delimiter = ',',
        default_value = "1,25,50,100,200,300,500,1000",
        value_name = "LIST"
    )]
    pub concurrency: Vec<u32>,
    /// Reuse connections (HTTP keep-alive) instead of one connection per request
    #[arg(short = 'k', long)]
    pub keepalive: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = BenchFormat::Table)]
    pub format: BenchFormat,
    /// Write an SVG chart of requests/s and p99 latency against concurrency
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Name of this run in JSON/CSV rows and in the plot's legend [default: the URL's host:port]
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// Add the runs saved in FILE (from `--format json`) to the --plot chart, one line per label
    #[arg(long, value_name = "FILE.json", requires = "plot")]
    pub compare: Vec<PathBuf>,
    /// Per-request timeout (a request past it counts as failed)
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse, value_name = "DURATION")]
    pub timeout: Duration,
    /// Load-generator threads, each with its own runtime [default: half the cores, at least 1]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub state: StateDirArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchFormat {
    Table,
    Markdown,
    Csv,
    Json,
}
