//! HTTP/1 message framing for the http balancer (RFC 9112 §6), pure: bytes
//! in, decisions and rewritten heads out. No I/O, so it is unit tested and
//! fuzzed (`fuzz/fuzz_targets/http_framing.rs`) on its own.
//!
//! Requests are framed strictly: both `Content-Length` and
//! `Transfer-Encoding`, differing or malformed `Content-Length`s, a transfer
//! coding other than a final `chunked`, obs-fold, or HTTP/1.1 without exactly
//! one `Host` make the request a [`Reject`] (answered 400 by the caller, never
//! forwarded): a proxy that frames a message differently from its backend is
//! how requests are smuggled. Chunked bodies are forwarded as they came, so
//! the [`Chunked`] decoder only finds where the body ends and checks it.

/// Headers per message as parsed (hyper's default, which the worker uses).
/// A request may have `ADDED_TO_REQUESTS` fewer and a response one fewer, so
/// that with the headers the balancer adds each still fits this limit.
pub const MAX_HEADERS: usize = 100;
/// `X-Forwarded-For`, `-Proto`, `-Host` and `Connection`.
const ADDED_TO_REQUESTS: usize = 4;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, ends with the last chunk and trailers.
    Chunked,
    /// A response that ends when the backend closes (RFC 9112 §6.3 rule 8).
    Close,
}

/// Why a request is refused (400) or a response is unusable (502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject(pub &'static str);

/// What the connection loop needs to know about a parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the head in the input, including the final CRLF CRLF.
    pub head_len: usize,
    pub body: BodyLen,
    /// RFC 9110 §9.2.2: may be sent again after a failure.
    pub idempotent: bool,
    /// A HEAD request: its response has no body whatever its headers say.
    pub head_method: bool,
    /// HTTP/1.0 (else 1.1).
    pub http10: bool,
    /// The client wants the connection kept after this exchange.
    pub keep_alive: bool,
    /// `Connection: upgrade` with an `Upgrade` header: a tunnel after a 101.
    pub upgrade: bool,
}

/// What the connection loop needs to know about a parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub head_len: usize,
    pub status: u16,
    pub body: BodyLen,
    /// The backend keeps the connection open after this response.
    pub backend_keeps: bool,
    /// The client connection stays open after this response (the head in
    /// `out` says so).
    pub keep_client: bool,
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
/// `Transfer-Encoding` is not here: chunked bodies are passed through as
/// they are, so their coding header goes with them.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "proxy-authorization",
];

/// Which backend answered, as the built-in worker names itself.
const BACKEND_HEADER: &str = "X-Fleet-Backend";

/// Headers the balancer sets itself.
const REPLACED: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// The tokens of the `Connection` headers that matter here, plus how many
/// other header names they list (those are dropped too).
#[derive(Default)]
struct ConnectionTokens<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Other names listed; a few are enough, more are ignored.
    listed: [&'a [u8]; 8],
    n_listed: usize,
}

impl<'a> ConnectionTokens<'a> {
    fn of(headers: &[httparse::Header<'a>]) -> Self {
        let mut t = ConnectionTokens::default();
        for h in headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    t.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    t.keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    t.upgrade = true;
                } else if !token.is_empty() && t.n_listed < t.listed.len() {
                    t.listed[t.n_listed] = token;
                    t.n_listed += 1;
                }
            }
        }
        t
    }

    /// A header named in `Connection` is hop-by-hop, except the framing
    /// headers and `Host`: dropping those would change where the message
    /// ends or make it invalid.
    fn lists(&self, name: &str) -> bool {
        !name.eq_ignore_ascii_case("content-length")
            && !name.eq_ignore_ascii_case("transfer-encoding")
            && !name.eq_ignore_ascii_case("host")
            && self.listed[..self.n_listed]
                .iter()
                .any(|l| l.eq_ignore_ascii_case(name.as_bytes()))
    }
}

fn is_one_of(name: &str, list: &[&str]) -> bool {
    list.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The body length from the framing headers, strictly (RFC 9112 §6.1-6.3).
/// `None` from both means no framing header at all.
fn framing(headers: &[httparse::Header<'_>]) -> Result<(Option<u64>, bool), Reject> {
    let mut length: Option<u64> = None;
    let mut codings = 0usize;
    let mut chunked_last = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value).ok_or(Reject("malformed content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Reject("differing content-length values"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in h.value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if coding.is_empty() {
                    continue;
                }
                codings += 1;
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            }
            if codings == 0 {
                return Err(Reject("empty transfer-encoding"));
            }
        }
    }
    if codings > 0 && length.is_some() {
        return Err(Reject("both content-length and transfer-encoding"));
    }
    if codings > 0 && !chunked_last {
        return Err(Reject("transfer-encoding does not end in chunked"));
    }
    Ok((length, codings > 0))
}

/// `1*DIGIT`, nothing else (no sign, no spaces, no list), at most 18 digits.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Parse a request head at the start of `input` and, when it is complete,
/// write the head to send to the backend into `out`: hop-by-hop headers
/// removed, `X-Forwarded-For` appended with `client`, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` set. `client` is the client's address as text (the
/// connection formats it once, not per request). `Ok(None)`: the head is not
/// complete yet.
pub fn request(input: &[u8], client: &str, out: &mut Vec<u8>) -> Result<Option<Request>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject("too many headers")),
        Err(_) => return Err(Reject("malformed request head")),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Reject("malformed request line"));
    };
    let http10 = minor == 0;
    let headers = req.headers;
    if headers.len() > MAX_HEADERS - ADDED_TO_REQUESTS {
        // The forwarded head must fit the same limit with ours added.
        return Err(Reject("too many headers"));
    }
    let (length, chunked) = framing(headers)?;
    if chunked && http10 {
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; a proxy must not trust one.
        return Err(Reject("transfer-encoding in an HTTP/1.0 request"));
    }
    let hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 || (hosts == 0 && !http10) {
        // RFC 9112 §3.2.
        return Err(Reject("an HTTP/1.1 request needs exactly one host header"));
    }
    let conn = ConnectionTokens::of(headers);
    let upgrade = conn.upgrade
        && headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    let body = match (chunked, length) {
        (true, _) => BodyLen::Chunked,
        (false, Some(0) | None) => BodyLen::Empty,
        (false, Some(n)) => BodyLen::Length(n),
    };

    out.clear();
    out.reserve(head_len + 128);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let mut host: Option<&[u8]> = None;
    let mut forwarded_for: Option<&[u8]> = None;
    let mut more_forwarded = false;
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            host = Some(h.value);
        }
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            if forwarded_for.is_some() {
                more_forwarded = true;
            }
            forwarded_for.get_or_insert(h.value);
            continue;
        }
        let keep_upgrade = upgrade && h.name.eq_ignore_ascii_case("upgrade");
        if (is_one_of(h.name, &HOP_BY_HOP) && !keep_upgrade)
            || is_one_of(h.name, &REPLACED)
            || conn.lists(h.name)
        {
            continue;
        }
        put_header(out, h.name.as_bytes(), h.value);
    }
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if http10 {
        // Without it an HTTP/1.0 request costs a backend connection each:
        // the backend would close after answering. A backend that cannot
        // keep it alive says so, and the balancer then does not reuse it.
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if more_forwarded {
        // Several X-Forwarded-For lines form one list, in order.
        for h in headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    } else if let Some(v) = forwarded_for {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n");
    if let Some(h) = host {
        put_header(out, b"X-Forwarded-Host", h);
    }
    out.extend_from_slice(b"\r\n");

    Ok(Some(Request {
        head_len,
        body,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        head_method: method == "HEAD",
        http10,
        keep_alive: if http10 {
            conn.keep_alive && !conn.close
        } else {
            !conn.close
        },
        upgrade,
    }))
}

/// Parse a response head at the start of `input`; `Ok(None)` until complete.
/// When complete, the head for the client goes to `out` (except for an
/// interim 1xx other than 101, which is passed on as it came): an HTTP/1.1
/// status line (a 1.0 backend behind a 1.1 client would otherwise read as
/// "closes after this"), the backend's headers less the hop-by-hop ones, and
/// our own `Connection`. `can_keep`: nothing on the client connection stands
/// in the way of keeping it (its request body went through whole).
pub fn response(
    input: &[u8],
    req: &Request,
    can_keep: bool,
    out: &mut Vec<u8>,
) -> Result<Option<Response>, Reject> {
    response_from(input, req, can_keep, None, out)
}

/// [`response`], and the client's head also gets `X-Fleet-Backend: <backend>`
/// when `backend` is given and the backend sent no such header itself (the
/// built-in worker does). Only when there is room for it within
/// [`MAX_HEADERS`]: the header is for people, and never makes a response
/// that fits unreadable.
pub fn response_from(
    input: &[u8],
    req: &Request,
    can_keep: bool,
    backend: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> Result<Option<Response>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Reject("malformed response head")),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(Reject("malformed status line"));
    };
    let reason = resp.reason.unwrap_or("");
    let headers = resp.headers;
    if headers.len() >= MAX_HEADERS {
        // No room for our `Connection`: the client's parser would refuse it.
        return Err(Reject("too many headers"));
    }
    let conn = ConnectionTokens::of(headers);
    let (length, chunked) = match framing(headers) {
        Ok(f) => f,
        // A final coding other than chunked: the body runs to the close.
        Err(Reject("transfer-encoding does not end in chunked")) => (None, false),
        Err(e) => return Err(e),
    };
    let te_close = !chunked
        && length.is_none()
        && headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    // RFC 9112 §6.3, in its order.
    let body = if req.head_method || (100..200).contains(&status) || status == 204 || status == 304
    {
        BodyLen::Empty
    } else if te_close {
        BodyLen::Close
    } else if chunked {
        BodyLen::Chunked
    } else {
        match length {
            Some(0) => BodyLen::Empty,
            Some(n) => BodyLen::Length(n),
            None => BodyLen::Close,
        }
    };
    let backend_keeps =
        body != BodyLen::Close && !conn.close && (minor == 1 || conn.keep_alive) && status != 101;
    let upgrade = status == 101;
    let keep_client = can_keep
        && !upgrade
        && req.keep_alive
        && match body {
            BodyLen::Empty | BodyLen::Length(_) => true,
            // An HTTP/1.0 client cannot read chunked.
            BodyLen::Chunked => !req.http10,
            BodyLen::Close => false,
        };
    out.clear();
    if upgrade || !(100..200).contains(&status) {
        out.reserve(head_len + 32 + backend.map_or(0, |b| BACKEND_HEADER.len() + 4 + b.len()));
        out.extend_from_slice(b"HTTP/1.1 ");
        push_status(out, status);
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut add_backend = backend.filter(|_| headers.len() + 2 <= MAX_HEADERS);
        for h in headers.iter() {
            if add_backend.is_some() && h.name.eq_ignore_ascii_case(BACKEND_HEADER) {
                add_backend = None;
            }
            let keep_upgrade = upgrade && h.name.eq_ignore_ascii_case("upgrade");
            if (is_one_of(h.name, &HOP_BY_HOP) && !keep_upgrade) || conn.lists(h.name) {
                continue;
            }
            put_header(out, h.name.as_bytes(), h.value);
        }
        if let Some(b) = add_backend {
            put_header(out, BACKEND_HEADER.as_bytes(), b);
        }
        out.extend_from_slice(if upgrade {
            &b"Connection: upgrade\r\n\r\n"[..]
        } else if keep_client {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
    }
    Ok(Some(Response {
        head_len,
        status,
        body,
        backend_keeps,
        keep_client,
    }))
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A status code: httparse accepts exactly three digits.
fn push_status(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&[
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

/// How much of a body is still to come, fed the bytes as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Length(u64),
    Chunked(Chunked),
    /// Until the sender closes (responses only).
    Close,
    Done,
}

impl Body {
    pub fn new(len: BodyLen) -> Self {
        match len {
            BodyLen::Empty | BodyLen::Length(0) => Body::Done,
            BodyLen::Length(n) => Body::Length(n),
            BodyLen::Chunked => Body::Chunked(Chunked::new()),
            BodyLen::Close => Body::Close,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Body::Done
    }

    /// How many bytes at the start of `data` belong to the body; fewer than
    /// `data.len()` only once the body is complete.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, Reject> {
        match self {
            Body::Done => Ok(0),
            Body::Close => Ok(data.len()),
            Body::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= take as u64;
                if *left == 0 {
                    *self = Body::Done;
                }
                Ok(take)
            }
            Body::Chunked(c) => {
                let used = c.feed(data)?;
                if c.is_done() {
                    *self = Body::Done;
                }
                Ok(used)
            }
        }
    }

    /// The sender closed: a close-delimited body is complete, any other is cut short.
    pub fn at_eof(&mut self) -> bool {
        match self {
            Body::Close | Body::Done => {
                *self = Body::Done;
                true
            }
            Body::Length(_) | Body::Chunked(_) => false,
        }
    }
}

/// Where a chunked body ends (RFC 9112 §7.1), fed the bytes as they arrive.
/// The bytes themselves are forwarded unchanged; this only checks them and
/// says how many belong to the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Reading the hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// After the size: optional whitespace and `;` extensions up to CR.
    Ext { value: u64, len: u16 },
    /// Saw the CR ending the size line; LF next.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data { left: u64 },
    /// Chunk data done; CR next.
    DataCr,
    /// CR after the data seen; LF next.
    DataLf,
    /// At the start of a trailer line or of the final empty line; `seen`
    /// counts trailer bytes so far (bounded).
    TrailerStart { seen: u16 },
    /// Inside a trailer field line.
    Trailer { seen: u16 },
    /// CR at the end of a trailer line seen; LF next.
    TrailerLf { seen: u16 },
    /// CR of the final empty line seen; LF next.
    EndLf,
    /// The body is complete.
    Done,
}

/// Chunk sizes of up to 15 hex digits (below 2^60 bytes).
const MAX_SIZE_DIGITS: u8 = 15;
/// Longest chunk extension accepted on one size line.
const MAX_EXT: u16 = 1024;
/// Largest trailer section accepted.
const MAX_TRAILERS: u16 = 8192;

/// A byte allowed inside a field line or chunk extension: visible ASCII,
/// space, tab and obs-text; no control characters (a bare LF included).
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b >= 0x20 && b != 0x7f
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub fn new() -> Self {
        Chunked::Size {
            value: 0,
            digits: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Chunked::Done
    }

    /// Consume from `data` up to the end of the body; returns how many bytes
    /// belong to it. Fewer than `data.len()` only when the body ended.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, Reject> {
        let mut i = 0;
        while i < data.len() && !self.is_done() {
            if let Chunked::Data { left } = *self {
                // Fast path: the data in one step.
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - i);
                i += take;
                let left = left - take as u64;
                *self = if left == 0 {
                    // Data -> DataCr
                    Chunked::DataCr
                } else {
                    // Data -> Data
                    Chunked::Data { left }
                };
                continue;
            }
            *self = self.step(data[i])?;
            i += 1;
        }
        Ok(i)
    }

    /// One byte outside chunk data.
    fn step(self, b: u8) -> Result<Chunked, Reject> {
        Ok(match self {
            Chunked::Size { value, digits } => match (b as char).to_digit(16) {
                // Size -> Size
                Some(d) if digits < MAX_SIZE_DIGITS => Chunked::Size {
                    value: value << 4 | u64::from(d),
                    digits: digits + 1,
                },
                Some(_) => return Err(Reject("chunk size too large")),
                None if digits == 0 => return Err(Reject("invalid chunk size")),
                // Size -> SizeLf
                None if b == b'\r' => Chunked::SizeLf { value },
                // Size -> Ext
                None if b == b';' || b == b' ' || b == b'\t' => Chunked::Ext { value, len: 1 },
                None => return Err(Reject("invalid chunk size")),
            },
            Chunked::Ext { value, len } => match b {
                // Ext -> SizeLf
                b'\r' => Chunked::SizeLf { value },
                _ if len >= MAX_EXT => return Err(Reject("chunk extension too long")),
                // Ext -> Ext
                b if is_field_byte(b) => Chunked::Ext {
                    value,
                    len: len + 1,
                },
                _ => return Err(Reject("malformed chunk extension")),
            },
            Chunked::SizeLf { value } => match b {
                // SizeLf -> TrailerStart (the last chunk)
                b'\n' if value == 0 => Chunked::TrailerStart { seen: 0 },
                // SizeLf -> Data
                b'\n' => Chunked::Data { left: value },
                _ => return Err(Reject("chunk size line not ended by CRLF")),
            },
            // Handled in `feed`; a zero-length stay is harmless.
            Chunked::Data { .. } | Chunked::Done => self,
            Chunked::DataCr => match b {
                // DataCr -> DataLf
                b'\r' => Chunked::DataLf,
                _ => return Err(Reject("chunk data not followed by CRLF")),
            },
            Chunked::DataLf => match b {
                // DataLf -> Size
                b'\n' => Chunked::new(),
                _ => return Err(Reject("chunk data not followed by CRLF")),
            },
            Chunked::TrailerStart { seen } => match b {
                // TrailerStart -> EndLf
                b'\r' => Chunked::EndLf,
                // TrailerStart -> Trailer
                b if is_field_byte(b) && b != b' ' && b != b'\t' => {
                    Chunked::Trailer { seen: seen + 1 }
                }
                _ => return Err(Reject("malformed trailer")),
            },
            Chunked::Trailer { seen } => match b {
                _ if seen >= MAX_TRAILERS => return Err(Reject("trailers too large")),
                // Trailer -> TrailerLf
                b'\r' => Chunked::TrailerLf { seen: seen + 1 },
                // Trailer -> Trailer
                b if is_field_byte(b) => Chunked::Trailer { seen: seen + 1 },
                _ => return Err(Reject("malformed trailer")),
            },
            Chunked::TrailerLf { seen } => match b {
                // TrailerLf -> TrailerStart
                b'\n' => Chunked::TrailerStart { seen: seen + 1 },
                _ => return Err(Reject("trailer line not ended by CRLF")),
            },
            Chunked::EndLf => match b {
                // EndLf -> Done
                b'\n' => Chunked::Done,
                _ => return Err(Reject("chunked body not ended by CRLF")),
            },
        })
    }
}

#[cfg(test)]
mod tests;
