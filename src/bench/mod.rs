//! `fleet bench`: the lab's ApacheBench table, built in.
//!
//! The lab measured its servers with `ab -n 1000 -c C` at eight levels and
//! copied the numbers into a table by hand. This command runs the same
//! experiment with one tool and prints that table, so the server alone and
//! the servers behind the balancer are measured by the same generator on the
//! same machine, with latency percentiles ab's summary lacks.
//!
//! - `target`: the URL, or the running fleet's balancer via the control socket.
//! - `load`: the generator (threads, runtimes, exactly `n` requests per level).
//! - `report`: the row arithmetic and the table/markdown/csv/json writers.
//! - `plot`: the SVG chart, one line per run (`--compare` adds saved runs).
//!
//! Everything runs on threads and runtimes created here and torn down before
//! returning: the command owns the process (it installs the only SIGINT
//! handler), so Ctrl-C just cancels the current level and the rows measured
//! so far are printed.

pub(crate) mod args;
pub(crate) mod load;
pub(crate) mod plot;
pub(crate) mod report;
pub(crate) mod target;

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::exit;
use crate::state_dir::StateDir;
pub use args::{BenchArgs, BenchFormat};
use load::Options;
use report::Row;

/// Why `fleet bench` failed, or measured less than it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("-n must be at least 1 request")]
    NoRequests,
    #[error("-c takes concurrency levels of at least 1, comma-separated, like -c 1,10,100")]
    BadConcurrency,
    #[error(
        "--timeout must be longer than 0 and at most {} (got {})",
        crate::duration::format(MAX_TIMEOUT),
        crate::duration::format(*.0)
    )]
    BadTimeout(Duration),
    #[error("--threads must be at least 1")]
    NoThreads,
    #[error(
        "every concurrency level in -c is above -n {0} (a level cannot have more concurrent requests than requests); raise -n or lower -c"
    )]
    LevelsAboveN(u64),
    #[error("--compare {}", path.display())]
    ReadCompare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--compare {}", path.display())]
    ParseCompare {
        path: PathBuf,
        #[source]
        source: report::NotARun,
    },
    #[error(transparent)]
    Url(#[from] target::UrlError),
    #[error(transparent)]
    Target(#[from] target::TargetError),
    #[error("cannot start load-generator threads")]
    Threads(#[source] std::io::Error),
    #[error("cannot write the table to stdout")]
    Stdout(#[source] std::io::Error),
    #[error("cannot write the plot to {}", path.display())]
    Plot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Ctrl-C: the rows measured so far were printed.
    #[error(
        "interrupted at concurrency {concurrency} after {finished} of {requests} requests; the last row covers only those"
    )]
    Interrupted {
        concurrency: u32,
        finished: u64,
        requests: u64,
    },
    /// A level completed nothing; the levels after it were skipped.
    #[error("no request to {url} completed at concurrency {concurrency}; is the server up?{}",
        if *skipped > 0 { format!(" skipped the remaining {skipped} level(s)") } else { String::new() })]
    NothingCompleted {
        url: String,
        concurrency: u32,
        skipped: usize,
    },
}

impl BenchError {
    /// 2 for what the user typed wrong, 1 for what went wrong measuring.
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::NoRequests
            | BenchError::BadConcurrency
            | BenchError::BadTimeout(_)
            | BenchError::NoThreads
            | BenchError::LevelsAboveN(_)
            | BenchError::ReadCompare { .. }
            | BenchError::ParseCompare { .. }
            | BenchError::Url(_) => exit::USAGE,
            BenchError::Target(_)
            | BenchError::Threads(_)
            | BenchError::Stdout(_)
            | BenchError::Plot { .. }
            | BenchError::Interrupted { .. }
            | BenchError::NothingCompleted { .. } => exit::FAILURE,
        }
    }
}

/// The longest `--timeout`: a request slower than an hour is surely a typo.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Flags checked before anything runs: the levels to measure, in order.
fn validate(args: &BenchArgs) -> Result<Vec<u32>, BenchError> {
    if args.requests == 0 {
        return Err(BenchError::NoRequests);
    }
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        return Err(BenchError::BadConcurrency);
    }
    if args.timeout.is_zero() || args.timeout > MAX_TIMEOUT {
        return Err(BenchError::BadTimeout(args.timeout));
    }
    if args.threads == Some(0) {
        return Err(BenchError::NoThreads);
    }
    let (levels, skipped): (Vec<u32>, Vec<u32>) = args
        .concurrency
        .iter()
        .partition(|&&c| u64::from(c) <= args.requests);
    if levels.is_empty() {
        return Err(BenchError::LevelsAboveN(args.requests));
    }
    if !skipped.is_empty() {
        let list: Vec<String> = skipped.iter().map(u32::to_string).collect();
        eprintln!(
            "fleet: skipping concurrency {} (above -n {}), like ab",
            list.join(","),
            args.requests
        );
    }
    Ok(levels)
}

/// One `--compare` file: its name (to tell runs apart) and its rows.
struct Saved {
    stem: String,
    rows: Vec<Row>,
}

/// Rows of earlier runs for `--compare`, read before the run so a bad file
/// costs nothing.
fn load_compare(files: &[impl AsRef<Path>]) -> Result<Vec<Saved>, BenchError> {
    let mut saved = Vec::new();
    for f in files {
        let f = f.as_ref();
        let text = std::fs::read_to_string(f).map_err(|source| BenchError::ReadCompare {
            path: f.to_path_buf(),
            source,
        })?;
        let stem = f
            .file_stem()
            .map_or_else(|| f.display().to_string(), |s| s.to_string_lossy().into());
        let rows = report::read_json(&text, &stem).map_err(|source| BenchError::ParseCompare {
            path: f.to_path_buf(),
            source,
        })?;
        saved.push(Saved { stem, rows });
    }
    Ok(saved)
}

/// All rows of the chart: the saved runs, then this one. A saved run whose
/// label is already taken (two runs of the same URL without `--label`) is
/// renamed "LABEL (FILE)", so every run keeps its own line.
fn plot_rows(saved: Vec<Saved>, current: &[Row]) -> Vec<Row> {
    let mut taken: HashSet<String> = current.iter().map(|r| r.label.clone()).collect();
    let mut out = Vec::new();
    for s in saved {
        let mut rename: HashMap<String, String> = HashMap::new();
        for r in &s.rows {
            if rename.contains_key(&r.label) {
                continue;
            }
            let mut new = r.label.clone();
            let mut k = 1;
            while taken.contains(&new) {
                new = if k == 1 {
                    format!("{} ({})", r.label, s.stem)
                } else {
                    format!("{} ({} {k})", r.label, s.stem)
                };
                k += 1;
            }
            taken.insert(new.clone());
            rename.insert(r.label.clone(), new);
        }
        for mut r in s.rows {
            if let Some(l) = rename.get(&r.label) {
                r.label.clone_from(l);
            }
            out.push(r);
        }
    }
    out.extend(current.iter().cloned());
    out
}

/// Enough file descriptors for `max_conns` sockets at once (ab users do
/// `ulimit -n` by hand).
fn raise_fd_limit(max_conns: u32) {
    let want = u64::from(max_conns) + 64;
    match crate::fd_limit::raise(want) {
        Ok(have) if have < want => eprintln!(
            "fleet: warning: the open-file limit ({have}) is below concurrency {max_conns}; expect failed connects (raise it with `ulimit -n`)"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("fleet: warning: cannot read the open-file limit: {e}"),
    }
}

/// Ctrl-C cancels the run; a second Ctrl-C exits at once.
fn install_ctrlc(cancel: &CancellationToken) {
    let cancel = cancel.clone();
    let pressed = AtomicBool::new(false);
    let r = ctrlc::set_handler(move || {
        if pressed.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        cancel.cancel();
    });
    if let Err(e) = r {
        // Benchmarks still run; only Ctrl-C loses its partial results.
        eprintln!(
            "fleet: warning: cannot handle Ctrl-C ({e}); it will end the run without a table"
        );
    }
}

/// Half the cores, at least one: the generator shares the machine with the
/// server it measures (the lab runs both on one laptop). Measured on 2 cores
/// against a one-worker nginx: one thread used 1.81 s of CPU for 20,000
/// requests at -c 100, two threads 2.13 s and fewer requests per second,
/// because the second thread's CPU is taken from the server.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Run `fleet bench` to completion. The rows measured are printed (and
/// plotted) even when a level fails or Ctrl-C stops the run, which the
/// error then reports.
pub(crate) fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let levels = validate(args)?;
    let previous = load_compare(&args.compare)?;

    let url = match &args.url {
        Some(u) => u.clone(),
        None => target::fleet_url(&StateDir::new(args.state.resolve()))?,
    };
    let parsed = target::parse_url(&url)?;
    let target = Arc::new(target::resolve(&url, &parsed)?);
    let label = args.label.clone().unwrap_or_else(|| {
        let mut l = parsed.authority.clone();
        if args.keepalive {
            l.push_str(" keep-alive");
        }
        l
    });
    let opts = Options {
        keepalive: args.keepalive,
        timeout: args.timeout,
        threads: args.threads.unwrap_or_else(default_threads),
    };

    raise_fd_limit(levels.iter().copied().max().unwrap_or(1));
    let cancel = CancellationToken::new();
    install_ctrlc(&cancel);

    let total = args.requests * levels.len() as u64;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} requests, concurrency {msg} ({elapsed})",
            )
            .expect("the template is valid"),
        );
        b
    } else {
        ProgressBar::hidden()
    };

    let progress = Arc::new(AtomicU64::new(0));
    let mut rows = Vec::with_capacity(levels.len());
    let mut stopped: Option<BenchError> = None;
    for (i, &c) in levels.iter().enumerate() {
        bar.set_message(c.to_string());
        let before = i as u64 * args.requests;
        let m = load::run_level(&target, args.requests, c, opts, &cancel, &progress, || {
            bar.set_position(before + progress.load(Ordering::Relaxed));
        })
        .map_err(BenchError::Threads)?;
        progress.store(0, Ordering::Relaxed);
        if m.finished > 0 || !m.interrupted {
            rows.push(Row::from_measured(&m, &label, &url, args.keepalive));
        }
        if !m.errors.is_empty() {
            let list: Vec<String> = m.errors.iter().map(|(k, v)| format!("{v} {k}")).collect();
            bar.suspend(|| {
                eprintln!("fleet: concurrency {c}: {}", list.join("; "));
            });
        }
        if m.interrupted {
            stopped = Some(BenchError::Interrupted {
                concurrency: c,
                finished: m.finished,
                requests: args.requests,
            });
            break;
        }
        if m.complete == 0 {
            stopped = Some(BenchError::NothingCompleted {
                url: url.clone(),
                concurrency: c,
                skipped: levels.len() - i - 1,
            });
            break;
        }
    }
    bar.finish_and_clear();

    let non_2xx: u64 = rows.iter().map(|r| r.non_2xx).sum();
    if non_2xx > 0 {
        eprintln!(
            "fleet: warning: {non_2xx} responses were not 2xx; they count as complete (like ab), see the Non-2xx column"
        );
    }

    let out = match args.format {
        BenchFormat::Table => report::table(&rows),
        BenchFormat::Markdown => report::markdown(&rows),
        BenchFormat::Csv => report::csv(&rows),
        BenchFormat::Json => report::json(&rows),
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(BenchError::Stdout(e));
    }

    if let Some(path) = &args.plot {
        let all = plot_rows(previous, &rows);
        let title = format!(
            "fleet bench: requests per second and p99 latency ({} requests per level)",
            args.requests
        );
        let svg = plot::svg(&plot::series_from_rows(&all), &title);
        std::fs::write(path, svg).map_err(|source| BenchError::Plot {
            path: path.clone(),
            source,
        })?;
    }
    stopped.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn bench_args(argv: &[&str]) -> BenchArgs {
        let mut full = vec!["fleet", "bench"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Bench(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_labs_levels_and_n() {
        let a = bench_args(&[]);
        assert_eq!(a.concurrency, [1, 25, 50, 100, 200, 300, 500, 1000]);
        assert_eq!(a.requests, 1000);
        assert!(!a.keepalive);
        assert_eq!(validate(&a).ok(), Some(a.concurrency.clone()));
    }

    #[test]
    fn levels_above_n_are_skipped_in_order() {
        let a = bench_args(&["-n", "100", "-c", "100,5,1000,1"]);
        assert_eq!(validate(&a).ok(), Some(vec![100, 5, 1]));
    }

    #[test]
    fn rejected_flags_are_usage_errors() {
        for argv in [
            &["-n", "0"][..],
            &["-c", "0"],
            &["-c", "1,0"],
            &["-n", "5", "-c", "10"],
            &["--timeout", "0s"],
            &["--timeout", "2h"],
            &["--threads", "0"],
        ] {
            let e = validate(&bench_args(argv)).err();
            assert_eq!(e.map(|e| e.exit_code()), Some(exit::USAGE), "{argv:?}");
        }
    }

    fn row(label: &str, c: u32) -> Row {
        let mut r = report::read_json(
            r#"[{"requests":1,"concurrency":1,"time_taken_s":1.0,"complete":1,"failed":0,
                "total_transferred_bytes":1,"requests_per_second":1.0,"time_per_request_ms":1.0,
                "transfer_rate_kb_s":0.0,"non_2xx":0,"p50_ms":1.0,"p99_ms":1.0}]"#,
            label,
        )
        .unwrap()
        .remove(0);
        r.concurrency = c;
        r
    }

    #[test]
    fn compared_runs_with_a_taken_label_get_their_file_name() {
        let saved = vec![
            Saved {
                stem: "a".into(),
                rows: vec![row("127.0.0.1:80", 1), row("127.0.0.1:80", 10)],
            },
            Saved {
                stem: "b".into(),
                rows: vec![row("127.0.0.1:80", 1), row("other", 1)],
            },
        ];
        let all = plot_rows(saved, &[row("127.0.0.1:80", 1)]);
        let labels: Vec<&str> = all.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "127.0.0.1:80 (a)",
                "127.0.0.1:80 (a)",
                "127.0.0.1:80 (b)",
                "other",
                "127.0.0.1:80"
            ]
        );
    }

    #[test]
    fn compare_requires_plot() {
        let mut full = vec!["fleet", "bench", "--compare", "a.json"];
        assert!(Cli::try_parse_from(full.clone()).is_err());
        full.extend(["--plot", "x.svg"]);
        assert!(Cli::try_parse_from(full).is_ok());
    }
}
