//! One request in, one response out: method check, target normalisation, file
//! lookup. Synchronous on purpose (the file cache answers from memory or with
//! a short blocking read), so hyper gets a ready future and no per-request
//! async state machine. Every response, errors included, carries
//! `X-Fleet-Backend`.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tracing::{error, info};

use super::body::{Body, FileBody};
use super::embedded;
use super::files::{FileCache, Lookup};
use super::path::{self, Reject};
use crate::builtin::HEALTH_PATH;

/// Shows which worker answered; the balancer test and the pages read it.
pub(crate) static X_FLEET_BACKEND: HeaderName = HeaderName::from_static("x-fleet-backend");

/// Where responses come from.
pub(super) enum Content {
    /// A www directory, through its cache.
    Files(FileCache),
    /// The pages compiled into the binary.
    Embedded,
}

/// What every connection of one worker shares.
pub(super) struct Shared {
    pub(super) content: Content,
    /// `X-Fleet-Backend` value: this worker's port, formatted once.
    pub(super) backend: HeaderValue,
    pub(super) access_log: bool,
}

pub(super) fn respond(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let resp = route(shared, req);
    if shared.access_log {
        let len = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        info!(
            target: "fleet::access",
            "{} {} {} {}",
            req.method(),
            req.uri(),
            resp.status().as_u16(),
            len
        );
    }
    resp
}

fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut resp = text(
                shared,
                StatusCode::METHOD_NOT_ALLOWED,
                false,
                Bytes::from_static(b"405 Method Not Allowed\n"),
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
    };
    // RFC 9112 §3.2: an HTTP/1.1 request without a Host header, or with
    // more than one, gets 400.
    if req.version() == Version::HTTP_11 && req.headers().get_all(header::HOST).iter().count() != 1
    {
        return bad_request(
            shared,
            head,
            "an HTTP/1.1 request needs exactly one Host header",
        );
    }
    let uri = req.uri();
    if uri.path() == HEALTH_PATH {
        return text(shared, StatusCode::OK, head, Bytes::from_static(b"ok\n"));
    }
    if uri.scheme().is_some() || uri.authority().is_some() {
        return bad_request(
            shared,
            head,
            "absolute-form request targets are for proxies",
        );
    }
    let key = match path::normalize(uri.path()) {
        Ok(key) => key,
        Err(Reject::BadRequest(why)) => return bad_request(shared, head, why),
        Err(Reject::NotFound) => return not_found(shared, head),
    };
    let cache = match &shared.content {
        Content::Files(cache) => cache,
        Content::Embedded => {
            return match embedded::lookup(&key) {
                Some(page) => file(
                    shared,
                    if head {
                        Body::empty()
                    } else {
                        Body::full(Bytes::from_static(page))
                    },
                    HeaderValue::from_static("text/html; charset=utf-8"),
                    HeaderValue::from(page.len()),
                ),
                None => not_found(shared, head),
            };
        }
    };
    match cache.lookup(&key) {
        Lookup::Memory(entry) => file(
            shared,
            if head {
                Body::empty()
            } else {
                Body::full(entry.body.clone())
            },
            entry.content_type.clone(),
            entry.content_length.clone(),
        ),
        Lookup::Stream {
            file: f,
            len,
            content_type,
        } => file(
            shared,
            if head {
                Body::empty()
            } else {
                Body::File(FileBody::new(tokio::fs::File::from_std(f), len))
            },
            content_type,
            HeaderValue::from(len),
        ),
        Lookup::Redirect(location) => {
            let mut resp = text(
                shared,
                StatusCode::MOVED_PERMANENTLY,
                head,
                Bytes::from_static(b"301 Moved Permanently\n"),
            );
            if let Ok(v) = HeaderValue::try_from(location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Lookup::NotFound => not_found(shared, head),
        Lookup::Forbidden => text(
            shared,
            StatusCode::FORBIDDEN,
            head,
            Bytes::from_static(b"403 Forbidden\n"),
        ),
        Lookup::Error(e) => {
            error!("cannot read {} under {}: {e}", key, cache.root().display());
            text(
                shared,
                StatusCode::INTERNAL_SERVER_ERROR,
                head,
                Bytes::from_static(b"500 Internal Server Error\n"),
            )
        }
    }
}

fn file(
    shared: &Shared,
    body: Body,
    content_type: HeaderValue,
    content_length: HeaderValue,
) -> Response<Body> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.reserve(3);
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, content_length);
    h.insert(X_FLEET_BACKEND.clone(), shared.backend.clone());
    resp
}

fn not_found(shared: &Shared, head: bool) -> Response<Body> {
    text(
        shared,
        StatusCode::NOT_FOUND,
        head,
        Bytes::from_static(b"404 Not Found\n"),
    )
}

fn bad_request(shared: &Shared, head: bool, why: &str) -> Response<Body> {
    text(
        shared,
        StatusCode::BAD_REQUEST,
        head,
        Bytes::from(format!("400 Bad Request: {why}\n")),
    )
}

/// A short plain-text response; HEAD gets the headers (with the length the
/// body would have) and no body.
fn text(shared: &Shared, status: StatusCode, head: bool, body: Bytes) -> Response<Body> {
    let len = HeaderValue::from(body.len());
    let mut resp = file(
        shared,
        if head {
            Body::empty()
        } else {
            Body::full(body)
        },
        HeaderValue::from_static("text/plain; charset=utf-8"),
        len,
    );
    *resp.status_mut() = status;
    resp
}
