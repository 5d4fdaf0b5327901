//! `fleet bench`'s flags, owned here as the worker owns `fleet serve`'s.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::discover::StateDirArg;

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
#[command(after_help = format!("{BENCH_AFTER_HELP}\n\n{}", crate::help::BENCH))]
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
