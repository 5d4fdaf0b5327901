//! The control-protocol decoder faces whatever a local client writes to the
//! socket: it must never panic, and what it accepts must encode and decode
//! back to the same request.
#![no_main]

use fleet::protocol::{Reply, Request, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Replies are decoded by `fleet status`/`fleet down`: no panic either.
    let _ = decode::<Reply>(data);

    let Ok(request) = decode::<Request>(data) else {
        return;
    };
    let line = encode(request.clone());
    let again = decode::<Request>(line.trim_end().as_bytes())
        .unwrap_or_else(|e| panic!("{request:?} encoded as {line:?} does not decode: {e}"));
    match (&request, &again) {
        (Request::Down { timeout_s: Some(a) }, Request::Down { timeout_s: Some(b) }) => {
            // serde_json's default float parser may be one ulp off.
            let ulps = a.to_bits().abs_diff(b.to_bits());
            assert!(ulps <= 1, "{a} != {b}");
        }
        _ => assert_eq!(request, again),
    }
});
