//! One request in, one reply out: method check, target normalisation, file
//! lookup. Synchronous on purpose (the file cache answers from memory or
//! with a short blocking read), so the connection loop (`conn`) answers a
//! request without an await between parsing it and writing the reply. Every
//! reply, errors included, carries `X-Fleet-Backend` (the loop writes it).

use std::time::Duration;

use bytes::Bytes;
use tracing::{error, info};

use super::embedded;
use super::files::{FileCache, Lookup};
use super::path::{self, Reject};
use crate::builtin::HEALTH_PATH;
use crate::http1::framing::Head;

/// Where responses come from.
pub(super) enum Content {
    /// A www directory, through its cache.
    Files(FileCache),
    /// The pages compiled into the binary.
    Embedded,
}

/// The `fleet serve` limits a connection applies.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_head: usize,
    pub(super) header_timeout: Duration,
    pub(super) idle: Duration,
}

/// What every connection of one worker shares.
pub(super) struct Shared {
    pub(super) content: Content,
    /// `X-Fleet-Backend: <port>` and its CRLF, formatted once: shows which
    /// worker answered (the balancer test and the pages read it).
    pub(super) backend_line: Box<[u8]>,
    pub(super) access_log: bool,
    pub(super) limits: Limits,
}

impl Shared {
    pub(super) fn backend_line(port: u16) -> Box<[u8]> {
        format!("X-Fleet-Backend: {port}\r\n").into_bytes().into()
    }
}

/// A reply, before the connection loop writes it.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) content_type: Bytes,
    /// `Content-Length`, also for HEAD (the length GET would send).
    pub(super) len: u64,
    pub(super) body: Body,
    /// A header of this status: `Location` of a 301, `Allow` of a 405.
    pub(super) extra: Option<(&'static [u8], Bytes)>,
}

/// A reply's content. HEAD gets none of it, whatever it is.
#[derive(Debug)]
pub(super) enum Body {
    /// Held in memory: sent with the head in one write.
    Memory(Bytes),
    /// A file too large to hold, read from disk as it is sent.
    File(std::fs::File),
}

const TEXT: Bytes = Bytes::from_static(b"text/plain; charset=utf-8");
const HTML: Bytes = Bytes::from_static(b"text/html; charset=utf-8");

/// The reply to `req`, logged when the access log is on.
pub(super) fn respond(shared: &Shared, req: &Head<'_, '_>) -> Reply {
    let reply = route(shared, req);
    if shared.access_log {
        info!(
            target: "fleet::access",
            "{} {} {} {}",
            req.method,
            req.target,
            reply.status,
            reply.len
        );
    }
    reply
}

fn route(shared: &Shared, req: &Head<'_, '_>) -> Reply {
    if !matches!(req.method, "GET" | "HEAD") {
        let mut reply = text(405, Bytes::from_static(b"405 Method Not Allowed\n"));
        reply.extra = Some((b"Allow", Bytes::from_static(b"GET, HEAD")));
        return reply;
    }
    // RFC 9112 §3.2 (exactly one Host in HTTP/1.1) is the codec's: such a
    // request never gets here. Query and fragment name no file.
    let end = req
        .path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(req.path.len());
    // httparse hands over a target only when it is UTF-8; cut at ASCII.
    let Ok(target_path) = std::str::from_utf8(&req.path[..end]) else {
        return bad_request("request target is not UTF-8");
    };
    if target_path == HEALTH_PATH {
        return text(200, Bytes::from_static(b"ok\n"));
    }
    if req.absolute {
        return bad_request("absolute-form request targets are for proxies");
    }
    let key = match path::normalize(target_path) {
        Ok(key) => key,
        Err(Reject::BadRequest(why)) => return bad_request(why),
        Err(Reject::NotFound) => return not_found(),
    };
    let cache = match &shared.content {
        Content::Files(cache) => cache,
        Content::Embedded => {
            return match embedded::lookup(&key) {
                Some(page) => file(HTML, Body::Memory(Bytes::from_static(page))),
                None => not_found(),
            };
        }
    };
    match cache.lookup(&key) {
        Lookup::Memory(entry) => file(entry.content_type.clone(), Body::Memory(entry.body.clone())),
        Lookup::Stream {
            file: f,
            len,
            content_type,
        } => Reply {
            status: 200,
            content_type,
            len,
            body: Body::File(f),
            extra: None,
        },
        Lookup::Redirect(location) => {
            let mut reply = text(301, Bytes::from_static(b"301 Moved Permanently\n"));
            reply.extra = Some((b"Location", Bytes::from(location)));
            reply
        }
        Lookup::NotFound => not_found(),
        Lookup::Forbidden => text(403, Bytes::from_static(b"403 Forbidden\n")),
        Lookup::Error(e) => {
            error!("cannot read {} under {}: {e}", key, cache.root().display());
            text(500, Bytes::from_static(b"500 Internal Server Error\n"))
        }
    }
}

/// A 200 with a body held in memory.
fn file(content_type: Bytes, body: Body) -> Reply {
    let len = match &body {
        Body::Memory(b) => b.len() as u64,
        Body::File(_) => 0,
    };
    Reply {
        status: 200,
        content_type,
        len,
        body,
        extra: None,
    }
}

fn not_found() -> Reply {
    text(404, Bytes::from_static(b"404 Not Found\n"))
}

/// 400 with its reason on one line.
pub(super) fn bad_request(why: &str) -> Reply {
    text(400, Bytes::from(format!("400 Bad Request: {why}\n")))
}

/// A short plain-text reply.
pub(super) fn text(status: u16, body: Bytes) -> Reply {
    Reply {
        status,
        content_type: TEXT,
        len: body.len() as u64,
        body: Body::Memory(body),
        extra: None,
    }
}
