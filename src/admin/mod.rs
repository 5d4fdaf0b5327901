//! The admin address: off unless `admin:` or `--admin` sets it.
//!
//! - `GET /metrics`: Prometheus text format (`metrics::encode`);
//! - `GET /status.json`: the object `fleet status --json` prints;
//! - `GET /`: the dashboard, one self-contained page (`dashboard`).
//!
//! Read-only: nothing here changes the fleet, so the only risk of exposing
//! it is what it tells; a non-loopback address is warned about at start.
//! It answers only to its own names (`host`): a page elsewhere that points
//! its own name at this machine (DNS rebinding) gets 421, not the status.
//! Each connection is a small hyper HTTP/1 server on the fleet's tracker,
//! cut when the fleet stops (an admin scrape never delays a shutdown).

mod dashboard;
pub(crate) mod host;
mod metrics;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::balancer::pool::Roster;
use crate::control::server::StatusView;

/// What the admin pages read: the status the control socket serves, and
/// the counters behind `/metrics`.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) status: StatusView,
    pub(crate) backends: Arc<Roster>,
    pub(crate) started: tokio::time::Instant,
    /// The `Host` names served (`host`).
    pub(crate) names: host::Names,
}

/// A slow or stalled admin client gets this long to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve the admin address until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Context,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    while let Some((stream, _)) = crate::listener::accept(&listener, &stop).await {
        let ctx = ctx.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(route(&req, &ctx)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                biased;
                _ = stop.cancelled() => {}
                r = conn => if let Err(e) = r { debug!(target: "supervisor", error = %e, "admin connection ended") },
            }
        });
    }
}

fn route<B>(req: &Request<B>, ctx: &Context) -> Response<Full<Bytes>> {
    if let Err(refused) = ctx.names.check(req) {
        let mut r = reply(refused.status, "text/plain", refused.body);
        // Nothing more will be answered on a connection to the wrong name.
        r.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or HEAD only\n",
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            metrics::encode(&ctx.backends, ctx.started),
        ),
        "/status.json" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&(ctx.status)()).expect("status serializes"),
        ),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            dashboard::render(&(ctx.status)()),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /metrics or /status.json\n",
        ),
    }
}

fn reply(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    // Live figures: never serve a cached copy.
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}
