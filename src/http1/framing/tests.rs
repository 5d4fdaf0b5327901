use super::*;

const CLIENT: &str = "10.0.0.7";

fn req(raw: &str) -> Result<(Request, String), Reject> {
    let mut out = Vec::new();
    let r = request(raw.as_bytes(), CLIENT, &mut out)?.expect("a complete head");
    Ok((r, String::from_utf8(out).expect("utf-8 head")))
}

fn rejected(raw: &str) -> &'static str {
    match req(raw) {
        Err(Reject(why)) => why,
        Ok((r, _)) => panic!("accepted {raw:?}: {r:?}"),
    }
}

#[test]
fn a_partial_head_asks_for_more() {
    let mut out = Vec::new();
    assert_eq!(
        request(b"GET / HTTP/1.1\r\nHost: a\r\n", CLIENT, &mut out),
        Ok(None)
    );
}

#[test]
fn a_simple_get_is_forwarded_with_forwarding_headers() {
    let (r, head) = req("GET /p?q=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n").unwrap();
    assert_eq!(r.body, BodyLen::Empty);
    assert!(r.idempotent && r.keep_alive && !r.http10 && !r.upgrade);
    assert_eq!(
        head,
        "GET /p?q=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.7\r\n\
         X-Forwarded-Proto: http\r\nX-Forwarded-Host: example\r\n\r\n"
    );
}

#[test]
fn hop_by_hop_headers_and_those_connection_names_are_removed() {
    let (r, head) = req(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
         Proxy-Connection: x\r\nX-Secret: 1\r\nUpgrade: h2c\r\nX-Other: 2\r\n\r\n",
    )
    .unwrap();
    assert!(!r.keep_alive, "Connection: close");
    assert!(!r.upgrade, "Upgrade without Connection: upgrade");
    for gone in [
        "Connection",
        "Keep-Alive",
        "TE:",
        "Proxy-Connection",
        "X-Secret",
        "Upgrade",
    ] {
        assert!(!head.contains(gone), "{gone} forwarded: {head}");
    }
    assert!(head.contains("X-Other: 2\r\n"));
}

#[test]
fn framing_headers_survive_being_named_in_connection() {
    let (_, head) = req(
        "POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nab",
    )
    .unwrap();
    assert!(head.contains("Content-Length: 2\r\n"));
}

#[test]
fn x_forwarded_for_is_appended_and_proto_host_replaced() {
    let (_, head) = req(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n",
    )
    .unwrap();
    assert!(
        head.contains("X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.7\r\n"),
        "{head}"
    );
    assert!(head.contains("X-Forwarded-Proto: http\r\n"));
    assert!(head.contains("X-Forwarded-Host: h\r\n"));
    assert!(!head.contains("https") && !head.contains("evil"));
}

#[test]
fn upgrade_keeps_its_headers() {
    let (r, head) =
        req("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap();
    assert!(r.upgrade);
    assert!(head.contains("Upgrade: websocket\r\n") && head.contains("Connection: upgrade\r\n"));
}

#[test]
fn http10_is_kept_alive_only_when_asked() {
    let (r, head) = req("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(r.http10 && !r.keep_alive);
    assert!(head.starts_with("GET / HTTP/1.0\r\n"));
    // The backend connection is asked to stay open whatever the client wants.
    assert!(head.contains("Connection: keep-alive\r\n"), "{head}");
    let (r, _) = req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
    assert!(r.keep_alive);
}

#[test]
fn bodies_are_framed_by_length_or_chunked() {
    assert_eq!(
        req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .0
            .body,
        BodyLen::Length(5)
    );
    assert_eq!(
        req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .0
            .body,
        BodyLen::Empty
    );
    assert_eq!(
        req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n")
            .unwrap()
            .0
            .body,
        BodyLen::Length(5),
        "identical duplicates are one length"
    );
    assert_eq!(
        req("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .0
            .body,
        BodyLen::Chunked
    );
    assert!(
        !req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .0
            .idempotent
    );
}

#[test]
fn both_content_length_and_transfer_encoding_is_refused() {
    assert_eq!(
        rejected(
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        "both content-length and transfer-encoding"
    );
}

#[test]
fn differing_content_lengths_are_refused() {
    assert_eq!(
        rejected("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        "differing content-length values"
    );
}

#[test]
fn malformed_content_lengths_are_refused() {
    for v in [
        "-1",
        "+5",
        "5 5",
        "5,5",
        "0x10",
        "",
        "99999999999999999999",
        "1e3",
    ] {
        assert_eq!(
            rejected(&format!(
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {v}\r\n\r\n"
            )),
            "malformed content-length",
            "{v:?}"
        );
    }
}

#[test]
fn a_final_coding_other_than_chunked_is_refused() {
    assert_eq!(
        rejected("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        "transfer-encoding does not end in chunked"
    );
    assert_eq!(
        rejected("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "transfer-encoding in an HTTP/1.0 request"
    );
}

#[test]
fn obs_fold_is_refused() {
    assert_eq!(
        rejected("GET / HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n b\r\n\r\n"),
        "malformed request head"
    );
}

#[test]
fn http11_needs_exactly_one_host() {
    assert_eq!(
        rejected("GET / HTTP/1.1\r\n\r\n"),
        "an HTTP/1.1 request needs exactly one host header"
    );
    assert_eq!(
        rejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        "an HTTP/1.1 request needs exactly one host header"
    );
}

#[test]
fn garbage_is_refused() {
    assert_eq!(
        rejected("\x16\x03\x01\x02\x00\r\n\r\n"),
        "malformed request head"
    );
    assert_eq!(
        rejected("GET / HTTP/2.0\r\nHost: h\r\n\r\n"),
        "malformed request head"
    );
}

#[test]
fn transfer_encoding_other_than_exactly_one_chunked_is_refused() {
    let te = |lines: &str| rejected(&format!("POST / HTTP/1.1\r\nHost: h\r\n{lines}\r\n"));
    // However many lines carry it, one coding, once: RFC 9112 §6.1.
    for lines in [
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ] {
        assert_eq!(te(lines), "chunked applied more than once", "{lines:?}");
    }
    // A coding fleet does not implement: 501.
    for lines in [
        "Transfer-Encoding: identity, chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    ] {
        assert_eq!(te(lines), Reject::CODING.0, "{lines:?}");
        assert_eq!(Reject::CODING.status(), 501);
    }
    for lines in [
        "Transfer-Encoding: chunked;q=1\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
    ] {
        assert_eq!(te(lines), "transfer-encoding does not end in chunked");
    }
    assert_eq!(
        te("Transfer-Encoding: chunked\r\nTransfer-Encoding: ,\r\n"),
        "empty transfer-encoding"
    );
    assert_eq!(Reject("malformed request head").status(), 400);
}

#[test]
fn fleet_writes_the_framing_header_once_whatever_the_client_sent() {
    let (r, head) =
        req("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: , Chunked ,\r\n\r\n").unwrap();
    assert_eq!(r.body, BodyLen::Chunked);
    assert!(
        head.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{head}"
    );
    assert!(!head.contains("Chunked"), "{head}");
    let (_, head) =
        req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n")
            .unwrap();
    assert_eq!(head.matches("ontent-").count(), 1, "{head}");
    assert!(head.contains("\r\nContent-Length: 5\r\n"), "{head}");
    let (_, head) = req("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert!(head.contains("\r\nContent-Length: 0\r\n"), "{head}");
    let mut out = Vec::new();
    push_u64(&mut out, u64::MAX);
    assert_eq!(out, u64::MAX.to_string().as_bytes());
}

fn chunked_err(data: &[u8]) -> Option<Reject> {
    Chunked::new().feed(data).err()
}

#[test]
fn chunk_size_lines_outside_the_grammar_are_refused() {
    // RFC 9112 §7.1.1: only BWS, then `;` extensions, may follow the size.
    for bad in [
        &b"5 junk\r\n"[..],
        b"5junk\r\n",
        b"5;\r\n",
        b"5; \r\n",
        b"5;=v\r\n",
        b"5;a=\r\n",
        b"5;a b\r\n",
        b"5;a=b c\r\n",
        b"5;a=\"b\r\n",
        b"5;a=\"b\"c\r\n",
        b"5;a=b=c\r\n",
        b"5;a@b\r\n",
        b"5 ;;a\r\n",
    ] {
        assert!(
            chunked_err(bad).is_some(),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
    for good in [
        &b"5\r\nhello\r\n0\r\n\r\n"[..],
        b"5 \t\r\nhello\r\n0\r\n\r\n",
        b"5 ;a\r\nhello\r\n0\r\n\r\n",
        b"5; a = b ;c\r\nhello\r\n0;x=y\r\n\r\n",
        b"5;a=\"q \\\" ;s\"\r\nhello\r\n0\r\n\r\n",
        b"5;a=b \r\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(
            chunked_all(good),
            Ok(good.len()),
            "{:?}",
            String::from_utf8_lossy(good)
        );
    }
}

#[test]
fn trailer_lines_must_be_field_lines() {
    for bad in [
        &b"0\r\nnocolon\r\n\r\n"[..],
        b"0\r\nT : x\r\n\r\n",
        b"0\r\n:x\r\n\r\n",
        b"0\r\nT(x): 1\r\n\r\n",
    ] {
        assert!(
            chunked_err(bad).is_some(),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        chunked_err(b"0\r\nnocolon\r\n\r\n"),
        Some(Reject("a trailer line that is not a field line"))
    );
    for good in [&b"0\r\nT:x\r\n\r\n"[..], b"0\r\nX-T: a b\r\nY:\r\n\r\n"] {
        assert_eq!(chunked_all(good), Ok(good.len()));
    }
}

#[test]
fn invalid_host_values_are_refused() {
    for bad in [
        "a b c", "a/b", "user@h", "[::1", "[]", "[::1]x", "h:x", "h:80:90", "a%zz", "\"h\"", "h\\",
    ] {
        assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        assert_eq!(
            rejected(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")),
            "invalid host header",
            "{bad:?}"
        );
    }
    assert_eq!(
        rejected("GET / HTTP/1.0\r\nHost: a b c\r\n\r\n"),
        "invalid host header"
    );
    for good in [
        "example.com",
        "example.com:8080",
        "127.0.0.1:1",
        "[::1]:80",
        "[v1.x]",
        "",
        "h:",
        "a_b.example",
        "a%41b",
    ] {
        assert!(valid_host(good.as_bytes()), "{good:?}");
        assert!(req(&format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n")).is_ok());
    }
}

#[test]
fn an_absolute_form_target_is_sent_in_origin_form_with_its_authority_as_host() {
    // RFC 9112 §3.2.2: the target's authority replaces Host.
    let (_, head) =
        req("GET http://other:81/x?y=1 HTTP/1.1\r\nHost: good\r\nA: b\r\n\r\n").unwrap();
    assert_eq!(
        head,
        "GET /x?y=1 HTTP/1.1\r\nHost: other:81\r\nA: b\r\nX-Forwarded-For: 10.0.0.7\r\n\
         X-Forwarded-Proto: http\r\nX-Forwarded-Host: other:81\r\n\r\n"
    );
    let first_line = |raw: &str| {
        let (_, head) = req(raw).unwrap();
        head.lines().next().unwrap_or_default().to_owned()
    };
    assert_eq!(
        first_line("GET HTTPS://o HTTP/1.1\r\nHost: g\r\n\r\n"),
        "GET / HTTP/1.1"
    );
    assert_eq!(
        first_line("GET http://o?q HTTP/1.1\r\nHost: g\r\n\r\n"),
        "GET /?q HTTP/1.1"
    );
    assert_eq!(
        first_line("OPTIONS http://o HTTP/1.1\r\nHost: g\r\n\r\n"),
        "OPTIONS * HTTP/1.1"
    );
    // HTTP/1.0 without Host: the authority becomes one.
    let (_, head) = req("GET http://o/p HTTP/1.0\r\n\r\n").unwrap();
    assert!(
        head.starts_with("GET /p HTTP/1.0\r\nHost: o\r\n")
            && head.contains("X-Forwarded-Host: o\r\n"),
        "{head}"
    );
    for (bad, why) in [
        ("GET http://u@h/ HTTP/1.1", "userinfo in the request target"),
        (
            "GET http:///x HTTP/1.1",
            "invalid authority in the request target",
        ),
        (
            "GET http://:80/x HTTP/1.1",
            "invalid authority in the request target",
        ),
        (
            "GET http://h:x/ HTTP/1.1",
            "invalid authority in the request target",
        ),
        ("GET ftp://h/ HTTP/1.1", "malformed request target"),
        ("GET h/x HTTP/1.1", "malformed request target"),
        ("GET * HTTP/1.1", "malformed request target"),
    ] {
        assert_eq!(rejected(&format!("{bad}\r\nHost: h\r\n\r\n")), why, "{bad}");
    }
    let (_, head) = req("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert!(head.starts_with("OPTIONS * HTTP/1.1\r\n"));
}

#[test]
fn connect_is_not_implemented() {
    assert_eq!(
        rejected("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"),
        Reject::CONNECT.0
    );
    assert_eq!(Reject::CONNECT.status(), 501);
}

#[test]
fn every_connection_token_is_honoured() {
    let names: Vec<String> = (1..=12).map(|i| format!("X-{i}")).collect();
    let mut raw = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: {}, close\r\n",
        names.join(", ")
    );
    for n in &names {
        raw.push_str(&format!("{n}: v\r\nx-keep-{n}: v\r\n"));
    }
    raw.push_str("\r\n");
    let (r, head) = req(&raw).unwrap();
    assert!(!r.keep_alive, "close, the 13th token");
    for n in &names {
        assert!(!head.contains(&format!("\n{n}:")), "{n} forwarded: {head}");
        assert!(head.contains(&format!("x-keep-{n}: v\r\n")));
    }
    // In a response too.
    let mut raw = format!("HTTP/1.1 200 OK\r\nConnection: {}\r\n", names.join(","));
    for n in &names {
        raw.push_str(&format!("{n}: v\r\n"));
    }
    raw.push_str("Content-Length: 0\r\n\r\n");
    let (get, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut out = Vec::new();
    response(raw.as_bytes(), &get, true, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
    );
}

#[test]
fn forwarded_x_real_ip_and_underscore_names_from_the_client_are_dropped() {
    let (_, head) = req(
        "GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
         X_Forwarded_Proto: https\r\nMy_Header: 1\r\nMy-Header: 2\r\n\r\n",
    )
    .unwrap();
    assert!(!head.contains("6.6.6.6") && !head.contains('_'), "{head}");
    assert!(head.contains("My-Header: 2\r\n") && head.contains("X-Forwarded-Proto: http\r\n"));
    assert_eq!(check_forwarded(head.as_bytes()), Ok(()));
}

#[test]
fn an_upgrade_in_an_http10_request_is_ignored() {
    // RFC 9110 §7.8.
    let (r, head) =
        req("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert!(!r.upgrade);
    assert!(!head.contains("pgrade"), "{head}");
}

#[test]
fn an_http10_client_is_sent_no_transfer_coding() {
    let (ten, _) = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let r = response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nX-A: 1\r\n\r\n",
        &ten,
        true,
        &mut out,
    )
    .unwrap()
    .unwrap();
    assert!(r.dechunk && !r.keep_client && r.backend_keeps);
    assert_eq!(r.body, BodyLen::Chunked);
    assert_eq!(
        String::from_utf8(out.clone()).unwrap(),
        "HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: close\r\n\r\n"
    );
    // A HEAD: nothing to de-chunk, the header still goes.
    let (head10, _) = req("HEAD / HTTP/1.0\r\n\r\n").unwrap();
    let r = response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &head10,
        true,
        &mut out,
    )
    .unwrap()
    .unwrap();
    assert!(!r.dechunk && !String::from_utf8_lossy(&out).contains("Transfer-Encoding"));
    // A coding that cannot be taken off: 502.
    for raw in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    ] {
        assert_eq!(
            response(raw.as_bytes(), &ten, true, &mut out),
            Err(Reject("a transfer coding an HTTP/1.0 client cannot read")),
            "{raw:?}"
        );
    }
    // An HTTP/1.1 client gets the chunked body as it came.
    let (get, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let r = response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &get,
        true,
        &mut out,
    )
    .unwrap()
    .unwrap();
    assert!(!r.dechunk && String::from_utf8_lossy(&out).contains("Transfer-Encoding: chunked"));
}

#[test]
fn a_chunked_body_is_decoded_however_it_is_split() {
    let body = b"5;a=b\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nT: 1\r\n\r\nNEXT";
    for at in 0..body.len() {
        let mut b = Body::new(BodyLen::Chunked);
        let mut out = Vec::new();
        let first = b.feed_decoded(&body[..at], &mut out).unwrap();
        let second = if b.is_done() {
            0
        } else {
            b.feed_decoded(&body[at..], &mut out).unwrap()
        };
        assert!(b.is_done());
        assert_eq!(first + second, body.len() - 4, "split at {at}");
        assert_eq!(out, b"hello world", "split at {at}");
    }
    let mut b = Body::new(BodyLen::Length(3));
    let mut out = Vec::new();
    assert_eq!(b.feed_decoded(b"abcd", &mut out), Ok(3));
    assert_eq!(out, b"abc");
}

fn resp(raw: &str, head_method: bool) -> Response {
    let (r, _) = req(if head_method {
        "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"
    } else {
        "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    })
    .unwrap();
    response(raw.as_bytes(), &r, true, &mut Vec::new())
        .unwrap()
        .expect("complete")
}

#[test]
fn response_framing_follows_rfc_9112_section_6_3() {
    assert_eq!(
        resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false).body,
        BodyLen::Length(3)
    );
    assert_eq!(
        resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true).body,
        BodyLen::Empty
    );
    assert_eq!(
        resp("HTTP/1.1 204 No Content\r\n\r\n", false).body,
        BodyLen::Empty
    );
    assert_eq!(
        resp(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false
        )
        .body,
        BodyLen::Empty
    );
    assert_eq!(
        resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        )
        .body,
        BodyLen::Chunked
    );
    assert_eq!(
        resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).body,
        BodyLen::Close
    );
    let close = resp("HTTP/1.0 200 OK\r\n\r\n", false);
    assert_eq!(close.body, BodyLen::Close);
    assert!(!close.backend_keeps);
}

#[test]
fn backend_keep_alive_follows_version_and_connection() {
    assert!(resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false).backend_keeps);
    assert!(
        !resp(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false
        )
        .backend_keeps
    );
    assert!(!resp("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).backend_keeps);
    assert!(
        resp(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            false
        )
        .backend_keeps
    );
}

#[test]
fn a_bad_response_framing_is_refused() {
    let (r, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    for raw in [
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "NOT HTTP\r\n\r\n",
    ] {
        assert!(
            response(raw.as_bytes(), &r, true, &mut Vec::new()).is_err(),
            "{raw:?}"
        );
    }
}

#[test]
fn the_client_gets_an_http11_head_without_hop_by_hop_headers() {
    let (r, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let raw = b"HTTP/1.0 200 OK\r\nConnection: close\r\nKeep-Alive: x\r\nX-Fleet-Backend: 9002\r\nContent-Length: 2\r\n\r\nhi";
    let mut out = Vec::new();
    let resp = response(raw, &r, true, &mut out).unwrap().unwrap();
    assert!(resp.keep_client && !resp.backend_keeps);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nX-Fleet-Backend: 9002\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
    );
}

#[test]
fn the_backend_is_named_unless_it_names_itself_or_there_is_no_room() {
    let (r, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let head = |raw: &str| {
        let mut out = Vec::new();
        response_from(raw.as_bytes(), &r, true, Some(b"9003"), &mut out)
            .unwrap()
            .unwrap();
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Fleet-Backend: 9003\r\nConnection: keep-alive\r\n\r\n"
    );
    // The backend's own value wins, whatever its case.
    assert_eq!(
        head("HTTP/1.1 404 Not Found\r\nx-fleet-backend: lab-1\r\nContent-Length: 0\r\n\r\n"),
        "HTTP/1.1 404 Not Found\r\nx-fleet-backend: lab-1\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
    );
    // An interim response passes as it came.
    let mut out = Vec::new();
    response_from(
        b"HTTP/1.1 100 Continue\r\n\r\n",
        &r,
        true,
        Some(b"9003"),
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty());
    // One header short of the limit: our `Connection` fits, the name does not.
    let many = (0..MAX_HEADERS - 1)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect::<String>();
    let full = head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"));
    assert!(!full.contains("X-Fleet-Backend"), "{full}");
    let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert!(
        httparse::Response::new(&mut h)
            .parse(full.as_bytes())
            .is_ok_and(|s| s.is_complete())
    );
    let fits = (0..MAX_HEADERS - 2)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect::<String>();
    assert!(head(&format!("HTTP/1.1 200 OK\r\n{fits}\r\n")).contains("X-Fleet-Backend: 9003\r\n"));
}

#[test]
fn the_client_is_closed_when_it_must_be() {
    let mut out = Vec::new();
    let (get, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let close = |raw: &str, r: &Request, can_keep: bool, out: &mut Vec<u8>| {
        !response(raw.as_bytes(), r, can_keep, out)
            .unwrap()
            .unwrap()
            .keep_client
    };
    assert!(close(
        "HTTP/1.1 200 OK\r\n\r\nbody to the close",
        &get,
        true,
        &mut out
    ));
    assert!(String::from_utf8_lossy(&out).ends_with("Connection: close\r\n\r\n"));
    assert!(close(
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &get,
        false,
        &mut out
    ));
    let (ten, _) = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert!(close(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &ten,
        true,
        &mut out
    ));
    assert!(!close(
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &ten,
        true,
        &mut out
    ));
}

#[test]
fn an_interim_response_is_passed_on_as_it_came_and_101_keeps_its_upgrade() {
    let (get, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut out = b"stale".to_vec();
    let r = response(b"HTTP/1.1 100 Continue\r\n\r\n", &get, true, &mut out)
        .unwrap()
        .unwrap();
    assert_eq!((r.status, r.body), (100, BodyLen::Empty));
    assert!(out.is_empty(), "the caller forwards a 1xx raw");
    let (ws, _) =
        req("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap();
    let r = response(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        &ws,
        true,
        &mut out,
    )
    .unwrap()
    .unwrap();
    assert!(!r.keep_client && !r.backend_keeps);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    );
}

fn chunked_all(data: &[u8]) -> Result<usize, Reject> {
    let mut c = Chunked::new();
    let n = c.feed(data)?;
    assert!(c.is_done(), "not done after {n} of {data:?}");
    Ok(n)
}

#[test]
fn a_chunked_body_ends_after_its_last_chunk_and_trailers() {
    let body = b"5\r\nhello\r\n1;ext=v\r\n!\r\n0\r\nX-T: 1\r\n\r\nGET /next";
    assert_eq!(chunked_all(body), Ok(body.len() - b"GET /next".len()));
    assert_eq!(chunked_all(b"0\r\n\r\n"), Ok(5));
    assert_eq!(
        chunked_all(b"A \r\n0123456789\r\n0\r\n\r\n"),
        Ok(21),
        "BWS before CRLF"
    );
}

#[test]
fn chunked_fed_byte_by_byte_ends_at_the_same_place() {
    let body = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: x\r\n\r\nrest";
    let mut c = Chunked::new();
    let mut used = 0;
    for b in body.iter() {
        used += c.feed(std::slice::from_ref(b)).unwrap();
    }
    assert!(c.is_done());
    assert_eq!(used, body.len() - 4);
}

#[test]
fn invalid_chunk_sizes_are_refused() {
    for bad in [
        &b"\r\n"[..],
        b"g\r\n",
        b"-1\r\n",
        b"0x5\r\n",
        b"1234567890abcdef0\r\n",
        b"5\n",
    ] {
        let mut c = Chunked::new();
        assert!(c.feed(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn chunk_data_must_end_in_crlf() {
    let mut c = Chunked::new();
    assert_eq!(
        c.feed(b"2\r\nabX"),
        Err(Reject("chunk data not followed by CRLF"))
    );
    let mut c = Chunked::new();
    assert_eq!(
        c.feed(b"2\r\nab\rX"),
        Err(Reject("chunk data not followed by CRLF"))
    );
}

#[test]
fn bad_trailers_and_endings_are_refused() {
    for bad in [
        &b"0\r\n\r\r"[..],
        b"0\r\n x\r\n\r\n",
        b"0\r\nT: \x01\r\n\r\n",
        b"0\r\nT: 1\r\r",
        b"0\r\n\n",
    ] {
        let mut c = Chunked::new();
        assert!(c.feed(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    let mut c = Chunked::new();
    assert_eq!(c.feed(b"1;\x00"), Err(Reject("malformed chunk extension")));
    let mut c = Chunked::new();
    let long = [b"1;".as_slice(), &[b'a'; 2000]].concat();
    assert_eq!(c.feed(&long), Err(Reject("chunk extension too long")));
}

#[test]
fn body_counts_lengths_and_close_delimited() {
    let mut b = Body::new(BodyLen::Length(5));
    assert_eq!(b.feed(b"abc"), Ok(3));
    assert_eq!(b.feed(b"defg"), Ok(2));
    assert!(b.is_done());
    let mut b = Body::new(BodyLen::Close);
    assert_eq!(b.feed(b"anything"), Ok(8));
    assert!(b.at_eof() && b.is_done());
    let mut b = Body::new(BodyLen::Length(5));
    assert!(!b.at_eof(), "a length body cut short is not complete");
    assert!(Body::new(BodyLen::Empty).is_done());
}

/// The fuzz target's properties on stable, over heads built from hostile
/// fragments (the same idea as `worker::path`'s random targets test).
#[test]
fn random_hostile_heads_keep_the_framing_invariants() {
    const LINES: &[&str] = &[
        "Host: h\r\n",
        "Host: a\r\nHost: b\r\n",
        "Content-Length: 5\r\n",
        "Content-Length: 0\r\n",
        "Content-Length: 05\r\n",
        "Content-Length: 5, 5\r\n",
        "content-length: 6\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding:\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
        "Host: a b c\r\n",
        "Host: [::1]:80\r\n",
        "X_Forwarded_For: 6.6.6.6\r\n",
        "Forwarded: for=6.6.6.6\r\n",
        "X-Real-IP: 6.6.6.6\r\n",
        "Connection: a, b, c, d, e, f, g, h, i, x-a\r\n",
        "Keep-Alive: 5\r\n",
        "TE: trailers\r\n",
        "Connection: close, content-length, host, x-a\r\n",
        "Connection: upgrade\r\n",
        "Connection: keep-alive\r\n",
        "Upgrade: websocket\r\n",
        "X-A: 1\r\n",
        " folded\r\n",
        "X-Forwarded-For: 1.2.3.4\r\n",
        "Bad Name: x\r\n",
        "X-Nul: \0\r\n",
        "\n",
    ];
    const BODIES: &[&str] = &[
        "",
        "hello",
        "5\r\nhello\r\n0\r\n\r\n",
        "zz\r\n",
        "0\r\nT: 1\r\n\r\nGET /",
        "3\r\nab",
        "5 junk\r\nhello\r\n0\r\n\r\n",
        "0\r\nnocolon\r\n\r\n",
        "1;a=\"b\"\r\nx\r\n0\r\n\r\n",
    ];
    let mut rng = fastrand::Rng::with_seed(9112);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut raw = String::new();
        raw.push_str(["GET", "POST", "HEAD", "PUT", "G T", "OPTIONS", "CONNECT"][rng.usize(..7)]);
        raw.push_str(
            [
                " / HTTP/1.1\r\n",
                " /x HTTP/1.0\r\n",
                " / HTTP/1.2\r\n",
                " http://other/x HTTP/1.1\r\n",
                " http://other HTTP/1.0\r\n",
                " http://u@other/ HTTP/1.1\r\n",
                " * HTTP/1.1\r\n",
            ][rng.usize(..7)],
        );
        for _ in 0..rng.usize(..6) {
            raw.push_str(LINES[rng.usize(..LINES.len())]);
        }
        raw.push_str("\r\n");
        raw.push_str(BODIES[rng.usize(..BODIES.len())]);
        let data = raw.as_bytes();
        let mut out = Vec::new();
        let forwarded = request(data, CLIENT, &mut out);
        // The built-in worker's entry point refuses and accepts alike
        // (these heads stay far below either header cap).
        let mut slots = no_headers();
        let parsed = parse_request(data, &mut slots, MAX_HEADERS).map(|h| h.map(|h| h.request));
        assert_eq!(parsed, forwarded, "{raw:?}");
        let Ok(Some(r)) = forwarded else {
            continue;
        };
        accepted += 1;
        // What is forwarded, not only what is parsed.
        if let Err(why) = check_forwarded(&out) {
            panic!(
                "{raw:?} forwarded as {:?}: {why}",
                String::from_utf8_lossy(&out)
            );
        }
        let mut twice = Vec::new();
        let again = request(&out, CLIENT, &mut twice)
            .unwrap_or_else(|e| panic!("{raw:?} rewritten to an invalid head: {e:?}"))
            .expect("complete");
        assert_eq!(again.body, r.body, "{raw:?}");
        assert_eq!(
            (again.http10, again.upgrade, again.idempotent),
            (r.http10, r.upgrade, r.idempotent),
            "{raw:?}"
        );
        assert_eq!(check_forwarded(&twice), Ok(()), "{raw:?}");
        let rest = &data[r.head_len..];
        let at = rng.usize(..=rest.len());
        let mut whole = Body::new(r.body);
        let mut parts = Body::new(r.body);
        let one = whole.feed(rest);
        let two = parts.feed(&rest[..at]).and_then(|a| {
            if a < at {
                Ok(a)
            } else {
                parts.feed(&rest[at..]).map(|b| a + b)
            }
        });
        match (one, two) {
            (Ok(a), Ok(b)) => assert_eq!((a, whole), (b, parts), "{raw:?} split at {at}"),
            (Err(_), Err(_)) => {}
            (one, two) => panic!("{raw:?}: whole {one:?}, split at {at} {two:?}"),
        }
    }
    assert!(
        accepted > 1000,
        "only {accepted} heads were accepted: the test says little"
    );
}

/// The fuzz target's response properties on stable: the head a client is
/// sent frames the body as fleet sends it, and an HTTP/1.0 client is never
/// sent a transfer coding.
#[test]
fn random_hostile_responses_keep_the_client_framing_invariants() {
    const LINES: &[&str] = &[
        "Content-Length: 5\r\n",
        "Content-Length: 0\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Trailer: X-T\r\n",
        "Connection: close, x-a\r\n",
        "Connection: keep-alive\r\n",
        "Keep-Alive: 5\r\n",
        "X-A: 1\r\n",
    ];
    let (get, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let (ten, _) = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let (head, _) = req("HEAD / HTTP/1.0\r\n\r\n").unwrap();
    let mut rng = fastrand::Rng::with_seed(9110);
    let mut accepted = 0;
    for _ in 0..5_000 {
        let mut raw = String::new();
        raw.push_str(
            [
                "HTTP/1.1 200 OK\r\n",
                "HTTP/1.0 200 OK\r\n",
                "HTTP/1.1 204 No\r\n",
                "HTTP/1.1 103 Early\r\n",
            ][rng.usize(..4)],
        );
        for _ in 0..rng.usize(..4) {
            raw.push_str(LINES[rng.usize(..LINES.len())]);
        }
        raw.push_str("\r\n");
        let r = [&get, &ten, &head][rng.usize(..3)];
        let mut out = Vec::new();
        let Ok(Some(resp)) = response(raw.as_bytes(), r, true, &mut out) else {
            continue;
        };
        accepted += 1;
        if out.is_empty() {
            assert!((100..200).contains(&resp.status), "{raw:?}");
            continue;
        }
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        if r.http10 {
            assert!(!text.contains("transfer-encoding"), "{raw:?} -> {text:?}");
            assert_eq!(resp.dechunk, resp.body == BodyLen::Chunked, "{raw:?}");
        }
        let again = response(&out, r, true, &mut Vec::new()).unwrap().unwrap();
        let sent = if resp.dechunk {
            BodyLen::Close
        } else {
            resp.body
        };
        assert_eq!(
            again.body, sent,
            "{raw:?}: the client frames it differently"
        );
        assert_eq!(again.keep_client, resp.keep_client, "{raw:?}");
    }
    assert!(accepted > 1000, "only {accepted} responses were accepted");
}

#[test]
fn a_head_at_the_header_limit_leaves_room_for_the_headers_fleet_adds() {
    // Found by the fuzzer: a response with MAX_HEADERS headers plus our
    // `Connection` was a head no parser with the same limit would take.
    let many = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    let (get, _) = req("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let raw = format!("HTTP/1.1 200 OK\r\n{}\r\n", many(MAX_HEADERS));
    assert_eq!(
        response(raw.as_bytes(), &get, true, &mut Vec::new()),
        Err(Reject("too many headers"))
    );
    let raw = format!("HTTP/1.1 200 OK\r\n{}\r\n", many(MAX_HEADERS - 1));
    let mut out = Vec::new();
    assert!(response(raw.as_bytes(), &get, true, &mut out).is_ok());
    let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert!(
        httparse::Response::new(&mut h)
            .parse(&out)
            .is_ok_and(|s| s.is_complete())
    );
    // A request: room for X-Forwarded-For/-Proto/-Host, Connection and Host.
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
        many(MAX_HEADERS - ADDED_TO_REQUESTS)
    );
    assert_eq!(rejected(&raw), "too many headers");
    let raw = format!(
        "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
        many(MAX_HEADERS - ADDED_TO_REQUESTS - 1)
    );
    let (_, head) = req(&raw).unwrap();
    let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert!(
        httparse::Request::new(&mut h)
            .parse(head.as_bytes())
            .is_ok_and(|s| s.is_complete())
    );
}
