//! Request-target normalisation: whatever bytes arrive, an accepted key stays
//! under the www root, names no dotfile, and survives the redirect round trip.
#![no_main]

use std::path::{Component, Path};

use fleet::path::{Reject, encode_for_location, is_safe_key, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // hyper hands the worker a `&str` path, so only UTF-8 input is reachable.
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let key = match normalize(target) {
        Ok(key) => key,
        Err(Reject::BadRequest(_) | Reject::NotFound) => return,
    };
    assert!(is_safe_key(&key), "{target:?} -> unsafe key {key:?}");

    // Joined under a root, the key never climbs out or restarts at `/`.
    let joined = Path::new("/srv/www").join(&key[1..]);
    assert!(joined.starts_with("/srv/www"), "{target:?} -> {joined:?}");
    assert!(
        joined
            .components()
            .skip(3)
            .all(|c| matches!(c, Component::Normal(_))),
        "{target:?} -> {joined:?}"
    );

    // Normal form is a fixed point when nothing was percent-decoded.
    if !target.contains('%') {
        assert_eq!(normalize(&key).as_deref(), Ok(&*key), "{target:?}");
    }

    // The `Location` of a directory redirect decodes back to the same key.
    let location = encode_for_location(&key);
    let trimmed = match key.trim_end_matches('/') {
        "" => "/",
        k => k,
    };
    assert_eq!(
        normalize(&location).as_deref(),
        Ok(trimmed),
        "{target:?} -> {key:?} -> {location:?}"
    );
});
