//! HTTP/1 message framing (RFC 9112) for the balancer and the worker, pure:
//! bytes in, decisions and rewritten heads out. No I/O, so it is unit tested
//! and fuzzed (`fuzz/fuzz_targets/http_framing.rs`) on its own.
//!
//! Requests are framed strictly: what RFC 9112 refuses is a [`Reject`]
//! (answered `400`, or `501` for what fleet does not implement, by the
//! caller) and never forwarded, because a proxy that frames or routes a
//! message differently from its backend is how requests are smuggled:
//! - both `Content-Length` and `Transfer-Encoding`, differing or malformed
//!   `Content-Length`s (§6.3);
//! - any `Transfer-Encoding` but exactly one `chunked`, across all its lines:
//!   a final coding other than chunked and chunked twice are `400`, another
//!   coding (`gzip, chunked`) is `501` (§6.1, §7); any in HTTP/1.0;
//! - obs-fold (§5.2), a chunk-size line outside `chunk-size [ chunk-ext ]`
//!   (§7.1.1), a trailer line that is not a field line (§7.1.2);
//! - an HTTP/1.1 request without exactly one `Host`, a `Host` that is not
//!   `uri-host [ ":" port ]` (§3.2);
//! - a request-target that is neither origin-form, absolute-form with an
//!   `http`/`https` authority, nor `*` for `OPTIONS` (§3.2); `CONNECT` (`501`:
//!   fleet is not a forward proxy).
//!
//! The forwarded head (see [`request`]) always satisfies
//! [`check_forwarded`]: origin-form, one valid `Host` (an absolute-form
//! target's authority, §3.2.2), one framing header written by fleet, no
//! hop-by-hop header, no header name with `_`, no client `Forwarded` or
//! `X-Real-IP`. Chunked bodies are forwarded as they came, so the [`Chunked`]
//! decoder only finds where the body ends and checks it; for an HTTP/1.0
//! client it also de-chunks the response ([`Body::feed_decoded`]).

use std::mem::MaybeUninit;

/// Headers per message as parsed (hyper's default; the built-in worker's
/// limit, past which it answers 431).
/// A request may have `ADDED_TO_REQUESTS` fewer and a response one fewer, so
/// that with the headers the balancer adds each still fits this limit.
pub const MAX_HEADERS: usize = 100;
/// `X-Forwarded-For`, `-Proto`, `-Host`, `Connection`, and `Host` (for an
/// absolute-form target in an HTTP/1.0 request without one).
pub const ADDED_TO_REQUESTS: usize = 5;
// `ConnectionTokens::listed` has a bit per header.
const _: () = assert!(MAX_HEADERS <= 128);

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

/// Why a request is refused (400, or 501, see [`Reject::status`]) or a
/// response is unusable (502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject(pub &'static str);

impl Reject {
    /// A transfer coding other than chunked (RFC 9112 §6.1: 501).
    pub const CODING: Reject = Reject("transfer-coding not implemented");
    /// `CONNECT`: fleet is a gateway, not a forward proxy (RFC 9110 §15.6.2).
    pub const CONNECT: Reject = Reject("connect is not implemented");
    /// More header lines than the parser's limit: the balancer and the
    /// worker both answer 431 (RFC 6585 §5), as for a head too long.
    pub const TOO_MANY_HEADERS: Reject = Reject("too many headers");

    /// The status a refused request gets.
    pub fn status(self) -> u16 {
        if self == Reject::CODING || self == Reject::CONNECT {
            501
        } else {
            400
        }
    }
}

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
    /// `Connection: upgrade` with an `Upgrade` header (HTTP/1.1 only): a
    /// tunnel after a 101.
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
    /// A chunked body for an HTTP/1.0 client: send it de-chunked
    /// ([`Body::feed_decoded`]), ended by the close (RFC 9112 §6.1).
    pub dechunk: bool,
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

/// Request headers fleet sets itself (the `X-Forwarded-*` family; the
/// framing headers, written once from what was parsed), or drops because a
/// backend could take a client's word in them for fleet's: `Forwarded` and
/// `X-Real-IP` say who the client is, and fleet speaks `X-Forwarded-For`.
const REPLACED: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "content-length",
    "transfer-encoding",
    "forwarded",
    "x-real-ip",
];

/// The tokens of the `Connection` headers, and which headers they name.
#[derive(Debug, Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Bit `i`: `headers[i]` is named in `Connection`, so hop-by-hop. Every
    /// token counts, however many; no allocation.
    listed: u128,
}

impl ConnectionTokens {
    fn of(headers: &[httparse::Header<'_>]) -> Self {
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
                } else if !token.is_empty() {
                    for (i, named) in headers.iter().enumerate() {
                        if named.name.as_bytes().eq_ignore_ascii_case(token)
                            && !framing_or_host(named.name)
                        {
                            t.listed |= 1 << i;
                        }
                    }
                }
            }
        }
        t
    }

    /// `headers[i]` is named in `Connection`.
    fn lists(&self, i: usize) -> bool {
        self.listed >> i & 1 == 1
    }
}

/// A header named in `Connection` is hop-by-hop, except the framing headers
/// and `Host`: dropping those would change where the message ends or make
/// it invalid.
fn framing_or_host(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding")
        || name.eq_ignore_ascii_case("host")
}

fn is_one_of(name: &str, list: &[&str]) -> bool {
    list.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The framing headers as they came (RFC 9112 §6.1-6.3).
struct Framing {
    length: Option<u64>,
    /// Transfer codings listed, over every `Transfer-Encoding` line.
    codings: usize,
    /// How many of them are `chunked`.
    chunked: usize,
    /// The last one is `chunked`.
    chunked_last: bool,
}

impl Framing {
    fn of(headers: &[httparse::Header<'_>]) -> Result<Framing, Reject> {
        let mut f = Framing {
            length: None,
            codings: 0,
            chunked: 0,
            chunked_last: false,
        };
        for h in headers {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = parse_length(h.value).ok_or(Reject("malformed content-length"))?;
                if f.length.is_some_and(|l| l != n) {
                    return Err(Reject("differing content-length values"));
                }
                f.length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let before = f.codings;
                for coding in h.value.split(|&b| b == b',') {
                    let coding = coding.trim_ascii();
                    if coding.is_empty() {
                        continue;
                    }
                    f.codings += 1;
                    f.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                    f.chunked += usize::from(f.chunked_last);
                }
                if f.codings == before {
                    return Err(Reject("empty transfer-encoding"));
                }
            }
        }
        if f.codings > 0 && f.length.is_some() {
            return Err(Reject("both content-length and transfer-encoding"));
        }
        Ok(f)
    }

    /// Exactly one coding, `chunked`.
    fn only_chunked(&self) -> bool {
        self.codings == 1 && self.chunked_last
    }

    /// How a request's body is framed, or why it cannot be trusted.
    fn body(&self, http10: bool) -> Result<BodyLen, Reject> {
        if self.codings == 0 {
            return Ok(match self.length {
                Some(0) | None => BodyLen::Empty,
                Some(n) => BodyLen::Length(n),
            });
        }
        if http10 {
            // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; a proxy must not trust one.
            return Err(Reject("transfer-encoding in an HTTP/1.0 request"));
        }
        if !self.chunked_last {
            // §6.3: the body's length cannot be determined.
            return Err(Reject("transfer-encoding does not end in chunked"));
        }
        if self.chunked > 1 {
            // §6.1: chunked is applied at most once.
            return Err(Reject("chunked applied more than once"));
        }
        if !self.only_chunked() {
            // §6.1: a coding the server does not understand is 501; fleet
            // would forward a body neither it nor the backend had checked.
            return Err(Reject::CODING);
        }
        Ok(BodyLen::Chunked)
    }
}

/// `1*DIGIT`, nothing else (no sign, no spaces, no list), at most 18 digits.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A `Host` value: `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2),
/// empty allowed (§3.2: a target without an authority).
fn valid_host(v: &[u8]) -> bool {
    let port = if let Some(rest) = v.strip_prefix(b"[") {
        // IP-literal: an IPv6 address or IPvFuture, checked for its alphabet.
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        if end == 0
            || !rest[..end]
                .iter()
                .all(|&b| is_unreserved_or_sub_delim(b) || b == b':')
        {
            return false;
        }
        &rest[end + 1..]
    } else {
        // reg-name (an IPv4 address is one too).
        let end = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        let name = &v[..end];
        let mut i = 0;
        while i < name.len() {
            match name[i] {
                b'%' if name
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                {
                    i += 3
                }
                b if is_unreserved_or_sub_delim(b) => i += 1,
                _ => return false,
            }
        }
        &v[end..]
    };
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// unreserved / sub-delims (RFC 3986 §2.2, §2.3).
fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

/// The request-target, as RFC 9112 §3.2 allows it.
enum Target<'a> {
    /// origin-form (`/path?query`), or `*` for OPTIONS.
    Origin(&'a [u8]),
    /// absolute-form: the authority replaces `Host` and the rest is sent in
    /// origin-form (§3.2.2); `path` is empty for `http://host` or `http://host?q`.
    Absolute { authority: &'a [u8], path: &'a [u8] },
}

fn target<'a>(method: &str, t: &'a [u8]) -> Result<Target<'a>, Reject> {
    if t.first() == Some(&b'/') || (t == b"*" && method == "OPTIONS") {
        return Ok(Target::Origin(t));
    }
    let rest = if t.len() > 7 && t[..7].eq_ignore_ascii_case(b"http://") {
        &t[7..]
    } else if t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://") {
        &t[8..]
    } else {
        return Err(Reject("malformed request target"));
    };
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains(&b'@') {
        // RFC 9110 §4.2.4: userinfo in an http(s) URI is an error.
        return Err(Reject("userinfo in the request target"));
    }
    if authority.is_empty() || authority[0] == b':' || !valid_host(authority) {
        // RFC 9110 §4.2.1: an http URI with an empty host is invalid.
        return Err(Reject("invalid authority in the request target"));
    }
    Ok(Target::Absolute { authority, path })
}

/// Room for [`MAX_HEADERS`] parsed header lines, left uninitialised.
pub fn no_headers<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [MaybeUninit::uninit(); MAX_HEADERS]
}

/// A request head as [`parse_request`] checked it, borrowed from the input:
/// what the balancer rewrites ([`request`]) and the worker answers.
#[derive(Debug)]
pub struct Head<'h, 'b> {
    /// What a connection loop needs to know (framing, keep-alive, ...).
    pub request: Request,
    pub method: &'b str,
    /// The request-target as it came (for logs).
    pub target: &'b str,
    /// The path and query the target names: all of an origin-form target
    /// (or `*`), the part after the authority of an absolute-form one
    /// (§3.2.2; empty for `http://host`).
    pub path: &'b [u8],
    /// The target was absolute-form (`http://host/path`), which a proxy
    /// takes and an origin server may refuse.
    pub absolute: bool,
    /// Every header line, in order.
    pub headers: &'h [httparse::Header<'b>],
    /// The host the request names: an absolute-form target's authority,
    /// else its `Host` header.
    host: Option<&'b [u8]>,
    conn: ConnectionTokens,
    /// `Content-Length`, when the body is framed by one.
    length: Option<u64>,
}

/// The one `Host` a request names (RFC 9112 §3.2): exactly one in
/// HTTP/1.1, at most one in HTTP/1.0, and valid.
fn one_host<'b>(
    headers: &[httparse::Header<'b>],
    http10: bool,
) -> Result<Option<&'b [u8]>, Reject> {
    let mut host: Option<&[u8]> = None;
    let mut hosts = 0;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
    {
        hosts += 1;
        host = Some(h.value);
    }
    if hosts > 1 || (hosts == 0 && !http10) {
        return Err(Reject("an HTTP/1.1 request needs exactly one host header"));
    }
    if host.is_some_and(|h| !valid_host(h)) {
        return Err(Reject("invalid host header"));
    }
    Ok(host)
}

/// Parse and check a request head at the start of `input` with the rules of
/// this module's doc, into `headers` (whose length is httparse's limit:
/// past it, [`Reject::TOO_MANY_HEADERS`]); a head with more than `max`
/// headers is refused the same way. `Ok(None)`: the head is not complete
/// yet. Nothing is written: the balancer rewrites the head ([`request`]),
/// the built-in worker answers it. `headers` may be uninitialised (see
/// [`no_headers`]): httparse writes only the lines it finds, so a request
/// does not pay for zeroing a hundred of them.
pub fn parse_request<'h, 'b>(
    input: &'b [u8],
    headers: &'h mut [MaybeUninit<httparse::Header<'b>>],
    max: usize,
) -> Result<Option<Head<'h, 'b>>, Reject> {
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(input, headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TOO_MANY_HEADERS),
        Err(_) => return Err(Reject("malformed request head")),
    };
    let (Some(method), Some(raw_target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Reject("malformed request line"));
    };
    let http10 = minor == 0;
    let headers = req.headers;
    if headers.len() > max {
        return Err(Reject::TOO_MANY_HEADERS);
    }
    if method == "CONNECT" {
        return Err(Reject::CONNECT);
    }
    let target = target(method, raw_target.as_bytes())?;
    let framing = Framing::of(headers)?;
    let body = framing.body(http10)?;
    let host = one_host(headers, http10)?;
    let conn = ConnectionTokens::of(headers);
    // RFC 9110 §7.8: an Upgrade in an HTTP/1.0 request is ignored.
    let upgrade = !http10
        && conn.upgrade
        && headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    let (path, authority) = match target {
        Target::Origin(t) => (t, None),
        Target::Absolute { authority, path } => (path, Some(authority)),
    };
    Ok(Some(Head {
        request: Request {
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
        },
        method,
        target: raw_target,
        path,
        absolute: authority.is_some(),
        headers,
        // §3.2.2: the target's authority, not the Host header, names the host.
        host: authority.or(host),
        conn,
        length: framing.length,
    }))
}

/// Parse a request head at the start of `input` ([`parse_request`]) and,
/// when it is complete and acceptable, write the head to send to the
/// backend into `out`: origin-form, `Host` from an absolute-form target,
/// hop-by-hop headers, header names with `_`, `Forwarded` and `X-Real-IP`
/// removed, the framing header written once, `X-Forwarded-For` appended
/// with `client`, `X-Forwarded-Proto` and `X-Forwarded-Host` set. `client`
/// is the client's address as text (the connection formats it once, not per
/// request). `Ok(None)`: the head is not complete yet.
pub fn request(input: &[u8], client: &str, out: &mut Vec<u8>) -> Result<Option<Request>, Reject> {
    let mut headers = no_headers();
    // The forwarded head must fit the same limit with ours added.
    let Some(head) = parse_request(input, &mut headers, MAX_HEADERS - ADDED_TO_REQUESTS)? else {
        return Ok(None);
    };
    forward(&head, client, out);
    Ok(Some(head.request))
}

/// Write the head [`request`] forwards for `head`.
fn forward(head: &Head<'_, '_>, client: &str, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(head.request.head_len + 128);
    request_line(head, out);
    let kept = copy_headers(head, out);
    if let (Some(h), false) = (head.host, kept.host_written) {
        put_header(out, b"Host", h);
    }
    let req = head.request;
    if req.body == BodyLen::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else if let Some(n) = head.length {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, n);
        out.extend_from_slice(b"\r\n");
    }
    if req.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if req.http10 {
        // Without it an HTTP/1.0 request costs a backend connection each:
        // the backend would close after answering. A backend that cannot
        // keep it alive says so, and the balancer then does not reuse it.
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    forwarded_for(head, &kept, client, out);
    out.extend_from_slice(b"X-Forwarded-Proto: http\r\n");
    if let Some(h) = head.host {
        put_header(out, b"X-Forwarded-Host", h);
    }
    out.extend_from_slice(b"\r\n");
}

/// The origin-form request line (§3.2.1), whatever form the target came in.
fn request_line(head: &Head<'_, '_>, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    match head.path.first() {
        Some(b'/' | b'*') => {}
        // §3.2.4: `OPTIONS http://h` is `OPTIONS *` once at the server.
        None if head.method == "OPTIONS" => out.push(b'*'),
        _ => out.push(b'/'),
    }
    out.extend_from_slice(head.path);
    out.extend_from_slice(if head.request.http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
}

/// What [`copy_headers`] saw of the headers it handles itself.
struct Copied<'b> {
    /// The first `X-Forwarded-For` value.
    forwarded_for: Option<&'b [u8]>,
    /// More than one `X-Forwarded-For` line came.
    more_forwarded: bool,
    host_written: bool,
}

/// Copy the client's headers that go on: `Host` (the target's authority
/// if it named one), everything but hop-by-hop headers, the ones fleet
/// writes itself, the ones `Connection` lists and names with `_`.
fn copy_headers<'b>(head: &Head<'_, 'b>, out: &mut Vec<u8>) -> Copied<'b> {
    let mut seen = Copied {
        forwarded_for: None,
        more_forwarded: false,
        host_written: false,
    };
    for (i, h) in head.headers.iter().enumerate() {
        if h.name.eq_ignore_ascii_case("host") {
            put_header(out, h.name.as_bytes(), head.host.unwrap_or(h.value));
            seen.host_written = true;
            continue;
        }
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            seen.more_forwarded |= seen.forwarded_for.is_some();
            seen.forwarded_for.get_or_insert(h.value);
            continue;
        }
        let keep_upgrade = head.request.upgrade && h.name.eq_ignore_ascii_case("upgrade");
        if (is_one_of(h.name, &HOP_BY_HOP) && !keep_upgrade)
            || is_one_of(h.name, &REPLACED)
            || head.conn.lists(i)
            // nginx's default (`underscores_in_headers off`): CGI and WSGI
            // map `X_Forwarded_For` and `X-Forwarded-For` to one variable.
            || h.name.contains('_')
        {
            continue;
        }
        put_header(out, h.name.as_bytes(), h.value);
    }
    seen
}

/// `X-Forwarded-For`: the list the client sent, then `client`.
fn forwarded_for(head: &Head<'_, '_>, seen: &Copied<'_>, client: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"X-Forwarded-For: ");
    if seen.more_forwarded {
        // Several X-Forwarded-For lines form one list, in order.
        for h in head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    } else if let Some(v) = seen.forwarded_for {
        out.extend_from_slice(v);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// What every head [`request`] forwards holds, whatever the client sent: the
/// fuzz target and the unit tests check each accepted request against it.
/// `Err` names the first broken rule.
pub fn check_forwarded(head: &[u8]) -> Result<(), &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return Err("not one whole head within the header limit"),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err("no request line");
    };
    if !(target.starts_with('/') || (target == "*" && method == "OPTIONS")) {
        return Err("not origin-form");
    }
    if method == "CONNECT" {
        return Err("connect");
    }
    let count = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    let hosts = count("host");
    if hosts > 1 || (hosts == 0 && minor == 1) {
        return Err("not exactly one host");
    }
    let mut connection: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.contains('_') {
            return Err("a header name with an underscore");
        }
        if is_one_of(
            name,
            &[
                "keep-alive",
                "proxy-connection",
                "te",
                "proxy-authorization",
                "forwarded",
                "x-real-ip",
            ],
        ) {
            return Err("a hop-by-hop or client-identity header");
        }
        if name.eq_ignore_ascii_case("host") && !valid_host(h.value) {
            return Err("an invalid host");
        }
        if name.eq_ignore_ascii_case("transfer-encoding") && h.value != b"chunked" {
            return Err("a transfer-encoding other than chunked");
        }
        if name.eq_ignore_ascii_case("connection") {
            if connection.is_some() {
                return Err("more than one connection header");
            }
            connection = Some(h.value);
        }
    }
    match connection {
        None | Some(b"keep-alive") if count("upgrade") == 0 => {}
        Some(b"upgrade") if minor == 1 && count("upgrade") > 0 => {}
        _ => return Err("a connection or upgrade header fleet did not write"),
    }
    if count("transfer-encoding") + count("content-length") > 1 {
        return Err("more than one framing header");
    }
    if count("x-forwarded-for") != 1
        || count("x-forwarded-proto") != 1
        || count("x-forwarded-host") != hosts
    {
        return Err("x-forwarded-* not set once each");
    }
    Ok(())
}

/// Parse a response head at the start of `input`; `Ok(None)` until complete.
/// When complete, the head for the client goes to `out` (except for an
/// interim 1xx other than 101, which is passed on as it came to an HTTP/1.1
/// client and dropped for an HTTP/1.0 one, RFC 9110 §15.2): an HTTP/1.1
/// status line (a 1.0 backend behind a 1.1 client would otherwise read as
/// "closes after this"), the backend's headers less the hop-by-hop ones (and
/// less `Transfer-Encoding` for an HTTP/1.0 client), and our own
/// `Connection`. `can_keep`: nothing on the client connection stands in the
/// way of keeping it (its request body went through whole).
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
    let headers = resp.headers;
    if headers.len() >= MAX_HEADERS {
        // No room for our `Connection`: the client's parser would refuse it.
        return Err(Reject::TOO_MANY_HEADERS);
    }
    let conn = ConnectionTokens::of(headers);
    let framing = Framing::of(headers)?;
    let body = response_body(req, status, &framing);
    let dechunk = req.http10 && body == BodyLen::Chunked;
    if req.http10 && framing.codings > 0 && body != BodyLen::Empty && !framing.only_chunked() {
        // §6.1: an HTTP/1.0 client is sent no transfer coding, and one
        // other than chunked cannot be taken off here.
        return Err(Reject("a transfer coding an HTTP/1.0 client cannot read"));
    }
    let backend_keeps =
        body != BodyLen::Close && !conn.close && (minor == 1 || conn.keep_alive) && status != 101;
    let upgrade = status == 101;
    let keep_client = can_keep
        && !upgrade
        && req.keep_alive
        && match body {
            BodyLen::Empty | BodyLen::Length(_) => true,
            // De-chunked for an HTTP/1.0 client: ends with the close.
            BodyLen::Chunked => !req.http10,
            BodyLen::Close => false,
        };
    out.clear();
    if upgrade || !(100..200).contains(&status) {
        let head = ClientHead {
            status,
            reason: resp.reason.unwrap_or(""),
            headers,
            conn: &conn,
            dechunk,
            keep_client,
        };
        head.write(req, backend, head_len, out);
    }
    Ok(Some(Response {
        head_len,
        status,
        body,
        backend_keeps,
        keep_client,
        dechunk,
    }))
}

/// How a response's body is framed: RFC 9112 §6.3, in its order.
fn response_body(req: &Request, status: u16, framing: &Framing) -> BodyLen {
    if req.head_method || (100..200).contains(&status) || status == 204 || status == 304 {
        BodyLen::Empty
    } else if framing.codings > 0 && !framing.chunked_last {
        // A final coding other than chunked: the body runs to the close.
        BodyLen::Close
    } else if framing.codings > 0 {
        BodyLen::Chunked
    } else {
        match framing.length {
            Some(0) => BodyLen::Empty,
            Some(n) => BodyLen::Length(n),
            None => BodyLen::Close,
        }
    }
}

/// A final (or 101) response head as the client gets it.
struct ClientHead<'r, 'h, 'b> {
    status: u16,
    reason: &'b str,
    headers: &'h [httparse::Header<'b>],
    conn: &'r ConnectionTokens,
    dechunk: bool,
    keep_client: bool,
}

impl ClientHead<'_, '_, '_> {
    /// Write it: an HTTP/1.1 status line, the backend's headers less the
    /// hop-by-hop ones, `X-Fleet-Backend` if there is room and the backend
    /// named none, and our own `Connection`.
    fn write(&self, req: &Request, backend: Option<&[u8]>, head_len: usize, out: &mut Vec<u8>) {
        let upgrade = self.status == 101;
        out.reserve(head_len + 32 + backend.map_or(0, |b| BACKEND_HEADER.len() + 4 + b.len()));
        out.extend_from_slice(b"HTTP/1.1 ");
        push_status(out, self.status);
        out.push(b' ');
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut add_backend = backend.filter(|_| self.headers.len() + 2 <= MAX_HEADERS);
        for (i, h) in self.headers.iter().enumerate() {
            if add_backend.is_some() && h.name.eq_ignore_ascii_case(BACKEND_HEADER) {
                add_backend = None;
            }
            let keep_upgrade = upgrade && h.name.eq_ignore_ascii_case("upgrade");
            if (is_one_of(h.name, &HOP_BY_HOP) && !keep_upgrade)
                || self.conn.lists(i)
                || (req.http10 && h.name.eq_ignore_ascii_case("transfer-encoding"))
                // The trailers it announces go with the chunked coding.
                || (self.dechunk && h.name.eq_ignore_ascii_case("trailer"))
            {
                continue;
            }
            put_header(out, h.name.as_bytes(), h.value);
        }
        if let Some(b) = add_backend {
            put_header(out, BACKEND_HEADER.as_bytes(), b);
        }
        out.extend_from_slice(if upgrade {
            &b"Connection: upgrade\r\n\r\n"[..]
        } else if self.keep_client {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
    }
}

pub(super) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A status code: httparse accepts exactly three digits.
pub(super) fn push_status(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&[
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

/// A number in decimal, without allocating.
pub(super) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
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
        self.feed_with(data, |_| {})
    }

    /// As [`Body::feed`], and appends the body's content to `out`: a
    /// chunked body without its chunked coding (sizes, extensions,
    /// trailers), for a client that cannot read it (HTTP/1.0).
    pub fn feed_decoded(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<usize, Reject> {
        match self {
            Body::Chunked(_) => self.feed_with(data, |d| out.extend_from_slice(d)),
            _ => {
                let used = self.feed(data)?;
                out.extend_from_slice(&data[..used]);
                Ok(used)
            }
        }
    }

    fn feed_with(&mut self, data: &[u8], on_data: impl FnMut(&[u8])) -> Result<usize, Reject> {
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
                let used = c.feed_with(data, on_data)?;
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
/// The bytes themselves are forwarded unchanged (or de-chunked, see
/// [`Chunked::feed_with`]); this checks them against the grammar and says
/// how many belong to the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Reading the hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// After the size: BWS and `;` extensions up to CR; `len` bytes so far.
    Ext { value: u64, len: u16, at: ExtAt },
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
    /// Inside a trailer's field name, up to its colon.
    TrailerName { seen: u16 },
    /// Inside a trailer's field value.
    Trailer { seen: u16 },
    /// CR at the end of a trailer line seen; LF next.
    TrailerLf { seen: u16 },
    /// CR of the final empty line seen; LF next.
    EndLf,
    /// The body is complete.
    Done,
}

/// Where in the chunk extensions of a size line (RFC 9112 §7.1.1):
/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, and
/// BWS before the CR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtAt {
    /// BWS after the size or after an extension: `;` or CR next.
    Between,
    /// After `;`: BWS, then a name.
    BeforeName,
    /// In a name (a token).
    Name,
    /// BWS after a name: `=`, `;` or CR next.
    AfterName,
    /// After `=`: BWS, then a token or a quoted string.
    BeforeValue,
    /// In a token value.
    Value,
    /// In a quoted-string value.
    Quoted,
    /// After a backslash in a quoted string.
    Escaped,
}

/// Chunk sizes of up to 15 hex digits (below 2^60 bytes).
const MAX_SIZE_DIGITS: u8 = 15;
/// Longest chunk extension accepted on one size line.
const MAX_EXT: u16 = 1024;
/// Largest trailer section accepted.
const MAX_TRAILERS: u16 = 8192;

/// A byte allowed inside a field value: visible ASCII, space, tab and
/// obs-text; no control characters (a bare LF included).
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
        self.feed_with(data, |_| {})
    }

    /// As [`Chunked::feed`], handing each run of chunk data to `on_data`
    /// (the body without its coding).
    pub fn feed_with(
        &mut self,
        data: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<usize, Reject> {
        let mut i = 0;
        while i < data.len() && !self.is_done() {
            if let Chunked::Data { left } = *self {
                // Fast path: the data in one step.
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - i);
                on_data(&data[i..i + take]);
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

    /// One byte of a chunk-size line's hex digits.
    fn size(value: u64, digits: u8, b: u8) -> Result<Chunked, Reject> {
        Ok(match (b as char).to_digit(16) {
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
            None if b == b' ' || b == b'\t' => Chunked::Ext {
                value,
                len: 1,
                at: ExtAt::Between,
            },
            // Size -> Ext
            None if b == b';' => Chunked::Ext {
                value,
                len: 1,
                at: ExtAt::BeforeName,
            },
            None => return Err(Reject("invalid chunk size")),
        })
    }

    /// One byte of a chunk extension (`;name=value`, quoted or not).
    fn ext(value: u64, len: u16, at: ExtAt, b: u8) -> Result<Chunked, Reject> {
        use ExtAt::*;
        let at = match (at, b) {
            // Ext -> SizeLf
            (Between | Name | AfterName | Value, b'\r') => {
                return Ok(Chunked::SizeLf { value });
            }
            _ if len >= MAX_EXT => return Err(Reject("chunk extension too long")),
            // Ext -> Ext, for the rest.
            (Between | Name | AfterName | Value, b';') => BeforeName,
            (Between | BeforeName | AfterName | BeforeValue, b' ' | b'\t') => at,
            (Name, b' ' | b'\t') => AfterName,
            (Value, b' ' | b'\t') => Between,
            (BeforeName | Name, b) if is_tchar(b) => Name,
            (Name | AfterName, b'=') => BeforeValue,
            (BeforeValue | Value, b) if is_tchar(b) => Value,
            (BeforeValue, b'"') => Quoted,
            (Quoted, b'"') => Between,
            (Quoted, b'\\') => Escaped,
            // qdtext, and quoted-pair's second byte.
            (Quoted | Escaped, b) if is_field_byte(b) => Quoted,
            _ => return Err(Reject("malformed chunk extension")),
        };
        Ok(Chunked::Ext {
            value,
            len: len + 1,
            at,
        })
    }

    /// One byte of the trailer section (after the last chunk).
    fn trailer(self, b: u8) -> Result<Chunked, Reject> {
        Ok(match self {
            Chunked::TrailerStart { seen } => match b {
                // TrailerStart -> EndLf
                b'\r' => Chunked::EndLf,
                // TrailerStart -> TrailerName
                b if is_tchar(b) => Chunked::TrailerName { seen: seen + 1 },
                _ => return Err(Reject("malformed trailer")),
            },
            Chunked::TrailerName { seen } => match b {
                _ if seen >= MAX_TRAILERS => return Err(Reject("trailers too large")),
                // TrailerName -> TrailerName
                b if is_tchar(b) => Chunked::TrailerName { seen: seen + 1 },
                // TrailerName -> Trailer
                b':' => Chunked::Trailer { seen: seen + 1 },
                // RFC 9112 §7.1.2: trailers are field lines, `name ":" value`.
                _ => return Err(Reject("a trailer line that is not a field line")),
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
            // `step` sends only the trailer states here.
            other => other,
        })
    }

    /// One byte outside chunk data.
    fn step(self, b: u8) -> Result<Chunked, Reject> {
        Ok(match self {
            Chunked::Size { value, digits } => Self::size(value, digits, b)?,
            Chunked::Ext { value, len, at } => Self::ext(value, len, at, b)?,
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
            Chunked::TrailerStart { .. }
            | Chunked::TrailerName { .. }
            | Chunked::Trailer { .. }
            | Chunked::TrailerLf { .. } => self.trailer(b)?,
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
