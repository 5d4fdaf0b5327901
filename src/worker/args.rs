//! `fleet serve`'s flags. The worker owns them (the CLI only embeds this
//! struct as its `serve` subcommand), so the worker never reaches into `cli`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::duration;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Port to listen on
    #[arg(long)]
    pub port: u16,
    /// Directory to serve [default: ./www if it exists, else the built-in page]
    #[arg(long, value_name = "DIR")]
    pub www: Option<PathBuf>,
    /// Serve the page built into fleet (index.html, page.html) instead of a directory
    #[arg(long, conflicts_with = "www")]
    pub embedded: bool,
    /// Address to bind
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: std::net::IpAddr,
    /// Exit when standard input reaches end-of-file (the supervisor's lifeline).
    #[arg(long, hide = true)]
    pub lifeline: bool,
    /// Largest request head (request line and headers) accepted; a larger one
    /// gets 431 and the connection is closed [at least 8192]
    #[arg(long, default_value_t = 16 * 1024, value_name = "BYTES")]
    pub max_head_bytes: usize,
    /// Time a client gets to send a whole request head (also caps how long a
    /// kept-alive connection may wait for its next request)
    #[arg(long, default_value = "10s", value_parser = duration::parse, value_name = "DURATION")]
    pub header_timeout: Duration,
    /// Close a connection once no byte has moved either way for this long
    #[arg(long, default_value = "5s", value_parser = duration::parse, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue
    /// until one closes
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_connections: u32,
    /// On SIGTERM or SIGINT, how long open requests get to finish before the
    /// worker exits anyway
    #[arg(long, default_value = "5s", value_parser = duration::parse, value_name = "DURATION")]
    pub drain_timeout: Duration,
    /// How long a file held in memory is trusted before the disk is checked
    /// for a change (0: check on every request)
    #[arg(long, default_value = "1s", value_parser = duration::parse, value_name = "DURATION")]
    pub cache_revalidate: Duration,
    /// Print one line per request to stderr (method, target, status, length)
    #[arg(long)]
    pub access_log: bool,
    /// Threads serving requests; 1 runs everything on one thread, the best
    /// fit when several workers share a few cores
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub threads: u16,
}
