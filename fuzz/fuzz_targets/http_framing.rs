//! The balancer's HTTP/1 framing: whatever bytes arrive, parsing never
//! panics, a request it accepts is rewritten into a head that frames the same
//! way when parsed again (a proxy and its backend must agree on where a
//! message ends) and that holds every rule of `framing::check_forwarded`
//! (origin-form, one valid Host, framing written once with no coding but
//! chunked, no hop-by-hop header, no underscore name, no client Forwarded or
//! X-Real-IP), an HTTP/1.0 client is never sent a transfer coding, and a
//! body's end does not depend on how the bytes were split across reads.
//! `parse_request`, the built-in worker's entry point, decides as `request`
//! does under the same header cap.
#![no_main]

use fleet::framing::{self, Body, BodyLen};
use libfuzzer_sys::fuzz_target;

const CLIENT: &str = "192.0.2.1";

/// A whole head within `MAX_HEADERS`, as the peer's parser will see it.
fn fits<const REQUEST: bool>(head: &[u8]) -> bool {
    let mut h = [httparse::EMPTY_HEADER; framing::MAX_HEADERS];
    let parsed = if REQUEST {
        httparse::Request::new(&mut h).parse(head)
    } else {
        httparse::Response::new(&mut h).parse(head)
    };
    matches!(parsed, Ok(httparse::Status::Complete(n)) if n == head.len())
}

/// Header lines in a head we wrote (CRLF-terminated, one per line).
fn headers_in(head: &[u8]) -> usize {
    head.windows(2).filter(|w| w == b"\r\n").count().saturating_sub(2)
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a split point for the body check.
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let mut out = Vec::new();
    let forwarded = framing::request(data, CLIENT, &mut out);
    // The built-in worker parses with `parse_request` and the full header
    // cap: it never panics, and under the balancer's cap it decides alike.
    let mut slots = framing::no_headers();
    let worker = framing::parse_request(data, &mut slots, framing::MAX_HEADERS);
    if let Ok(Some(head)) = &worker {
        assert!(head.request.head_len <= data.len());
    }
    let mut slots = framing::no_headers();
    let capped = framing::MAX_HEADERS - framing::ADDED_TO_REQUESTS;
    let parsed = framing::parse_request(data, &mut slots, capped).map(|h| h.map(|h| h.request));
    assert_eq!(parsed, forwarded, "parse_request and request disagree");
    let Ok(Some(req)) = forwarded else {
        // Also a response head, with a plain GET as its request (HTTP/1.1
        // or 1.0, by the split byte).
        let mut get = Vec::new();
        let request_line: &[u8] = if split & 1 == 0 {
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
        } else {
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        };
        let plain = framing::request(request_line, CLIENT, &mut get)
            .expect("a valid request")
            .expect("complete");
        let mut head = Vec::new();
        // Named as the balancer names a backend that does not name itself.
        let named = Some(&b"9002"[..]);
        if let Ok(Some(resp)) = framing::response_from(data, &plain, true, named, &mut head) {
            assert!(resp.head_len <= data.len());
            if (100..200).contains(&resp.status) && resp.status != 101 {
                assert!(head.is_empty(), "a 1xx is passed on raw (to HTTP/1.1 only)");
                return;
            }
            if plain.http10 {
                // RFC 9112 §6.1: no transfer coding for an HTTP/1.0 client;
                // a chunked body goes de-chunked.
                let mut h = [httparse::EMPTY_HEADER; framing::MAX_HEADERS];
                let mut parsed = httparse::Response::new(&mut h);
                if parsed.parse(&head).is_ok() {
                    assert!(
                        !parsed
                            .headers
                            .iter()
                            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")),
                        "a transfer coding sent to an HTTP/1.0 client"
                    );
                }
                assert_eq!(resp.dechunk, resp.body == BodyLen::Chunked);
            }
            // Complete within the header limit, added headers included ...
            assert!(fits::<false>(&head), "our head exceeds the limit");
            // ... and, when the limit for backends leaves room, framed alike.
            if headers_in(&head) >= framing::MAX_HEADERS {
                return;
            }
            let again = framing::response(&head, &plain, true, &mut Vec::new())
                .expect("our own head parses")
                .expect("and is complete");
            assert_eq!(again.head_len, head.len());
            assert_eq!(again.status, resp.status);
            // De-chunked, the body runs to the close.
            let sent = if resp.dechunk { BodyLen::Close } else { resp.body };
            assert_eq!(again.body, sent, "the client would frame it differently");
            assert_eq!(again.keep_client, resp.keep_client);
        }
        return;
    };
    assert!(req.head_len <= data.len());
    assert!(fits::<true>(&out), "the forwarded head exceeds the limit");
    // What reaches the backend, not only what was parsed.
    if let Err(why) = framing::check_forwarded(&out) {
        panic!("forwarded {:?}: {why}", String::from_utf8_lossy(&out));
    }
    // The rewritten head frames the body exactly as the original did.
    if headers_in(&out) > framing::MAX_HEADERS - framing::ADDED_TO_REQUESTS {
        return;
    }
    let mut twice = Vec::new();
    let again = framing::request(&out, CLIENT, &mut twice)
        .expect("our own head parses")
        .expect("and is complete");
    assert_eq!(framing::check_forwarded(&twice), Ok(()));
    assert_eq!(again.head_len, out.len());
    assert_eq!(again.body, req.body, "the backend would frame it differently");
    assert_eq!(again.http10, req.http10);
    assert_eq!(again.upgrade, req.upgrade);
    assert_eq!(again.idempotent, req.idempotent);

    // The body's end, fed whole and fed in two reads.
    let rest = &data[req.head_len..];
    let mut whole = Body::new(req.body);
    let one = whole.feed(rest);
    let at = usize::from(split) % (rest.len() + 1);
    let mut parts = Body::new(req.body);
    let two = parts.feed(&rest[..at]).and_then(|a| {
        if a < at {
            // Ended inside the first part: the second is not body.
            Ok(a)
        } else {
            parts.feed(&rest[at..]).map(|b| a + b)
        }
    });
    match (one, two) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "split at {at} moved the body's end");
            assert_eq!(whole, parts);
            assert!(a <= rest.len());
            if let BodyLen::Length(n) = req.body {
                assert_eq!(a as u64, n.min(rest.len() as u64));
            }
        }
        (Err(_), Err(_)) => {}
        (one, two) => panic!("whole {one:?} vs split at {at} {two:?}"),
    }
});
