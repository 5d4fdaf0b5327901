//! Request-target normalisation: the single place that decides which URL paths
//! may name a file under the www root. Pure (no I/O) so it can be unit-tested
//! case by case and fuzzed.
//!
//! The rules, in order, for each `/`-separated segment of the raw path:
//! 1. A raw backslash is rejected (some platforms and tools treat it as a
//!    separator, so it is never a harmless byte).
//! 2. The segment is percent-decoded exactly once. A malformed escape (`%zz`,
//!    `%4`, IIS-style `%u2216`) is rejected instead of being passed through.
//! 3. The decoded bytes must be valid UTF-8, which rejects overlong forms such
//!    as `%c0%ae` (an old way to smuggle `.`) and lone surrogates.
//! 4. The decoded segment must not contain `/`, `\`, NUL or any other control
//!    character: an encoded separator never becomes a separator.
//! 5. Empty segments (`//`) and `.` are dropped; `..` is rejected outright,
//!    even where it would stay inside the root, because no well-behaved client
//!    sends it (they resolve dot segments before sending).
//! 6. A segment starting with `.` is a dotfile (`.git`, `.env`, `.htpasswd`)
//!    and is reported as not found.
//!
//! Invariant of every `Ok` value: it starts with `/`, and every segment between
//! slashes is non-empty, is not `.`/`..`, does not start with `.`, and contains
//! no `/`, `\`, NUL or control character. So `root.join(&key[1..])` stays
//! lexically under `root`; symlinks are the file cache's job.

use std::borrow::Cow;

/// Why a request target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Malformed or hostile target: answer 400.
    BadRequest(&'static str),
    /// A dotfile: answer 404, exactly as for a missing file, so probing for
    /// `.git` learns nothing.
    NotFound,
}

/// Normalise the path part of an origin-form request target (no query, which
/// the HTTP parser has already split off) into the cache key / relative file
/// name. A trailing `/` is kept: it asks for the directory's `index.html`.
///
/// Returns the input unchanged (borrowed, no allocation) when it is already in
/// normal form, which is the common case.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, Reject> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Reject::BadRequest("request target must start with /"));
    };
    if rest.is_empty() || is_plain(rest) {
        return Ok(Cow::Borrowed(path));
    }
    slow_normalize(path, rest)
}

/// The common case in one pass: only unreserved ASCII (`A-Z a-z 0-9 - . _ ~`)
/// and `/`, every segment non-empty except a trailing one (the directory
/// slash), none starting with `.`. Such a path is already in normal form under
/// the full rules below (no escape to decode, nothing to drop, no `..`, no
/// dotfile), so the full rules need not run; anything else takes them.
fn is_plain(rest: &str) -> bool {
    let mut segment_start = true;
    for &b in rest.as_bytes() {
        match b {
            b'/' if segment_start => return false,
            b'/' => segment_start = true,
            b'.' if segment_start => return false,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                segment_start = false;
            }
            _ => return false,
        }
    }
    true
}

/// The full rules, for anything `is_plain` does not vouch for.
fn slow_normalize<'a>(path: &'a str, rest: &str) -> Result<Cow<'a, str>, Reject> {
    // First pass: validate everything and find out whether the raw path is
    // already normal (then it is returned as-is).
    let mut canonical = true;
    let mut segments = rest.split('/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        match check_segment(raw)? {
            Segment::Plain => {}
            Segment::Decoded => canonical = false,
            Segment::Skip => {
                // A trailing empty segment is the directory slash itself.
                if !(raw.is_empty() && last) {
                    canonical = false;
                }
            }
        }
    }
    if canonical {
        return Ok(Cow::Borrowed(path));
    }
    // Second pass: build the normal form. Validation above guarantees every
    // decode succeeds.
    let mut out = String::with_capacity(path.len());
    let mut dir = false;
    for raw in rest.split('/') {
        let decoded = if raw.contains('%') {
            let bytes = decode(raw).map_err(Reject::BadRequest)?;
            Cow::Owned(
                String::from_utf8(bytes)
                    .map_err(|_| Reject::BadRequest("percent-decoded path is not UTF-8"))?,
            )
        } else {
            Cow::Borrowed(raw)
        };
        dir = decoded.is_empty() || decoded == ".";
        if !dir {
            out.push('/');
            out.push_str(&decoded);
        }
    }
    if out.is_empty() || dir {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

enum Segment {
    /// Already in normal form.
    Plain,
    /// Contains escapes that decode to an acceptable name.
    Decoded,
    /// Empty or `.`: dropped from the normal form.
    Skip,
}

fn check_segment(raw: &str) -> Result<Segment, Reject> {
    if raw.is_empty() || raw == "." {
        return Ok(Segment::Skip);
    }
    if raw.contains('\\') {
        return Err(Reject::BadRequest("backslash in request target"));
    }
    if !raw.contains('%') {
        check_decoded(raw)?;
        return Ok(Segment::Plain);
    }
    let bytes = decode(raw).map_err(Reject::BadRequest)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Reject::BadRequest("percent-decoded path is not UTF-8"))?;
    if text == "." {
        return Ok(Segment::Skip);
    }
    check_decoded(text)?;
    Ok(Segment::Decoded)
}

fn check_decoded(seg: &str) -> Result<(), Reject> {
    if seg == ".." {
        return Err(Reject::BadRequest("'..' in request target"));
    }
    if seg.contains(['/', '\\']) {
        return Err(Reject::BadRequest("encoded separator in request target"));
    }
    if seg.chars().any(char::is_control) {
        return Err(Reject::BadRequest("control character in request target"));
    }
    if seg.starts_with('.') {
        return Err(Reject::NotFound);
    }
    Ok(())
}

/// Strict percent-decoding: every `%` must be followed by two hex digits.
fn decode(raw: &str) -> Result<Vec<u8>, &'static str> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err("malformed percent-escape in request target"),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Re-encode a normal-form path for a `Location` header: each segment is
/// percent-encoded again, so the header is plain ASCII and a segment can never
/// turn into `//host` (an open redirect).
pub fn encode_for_location(key: &str) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    /// Everything but unreserved characters and a few harmless sub-delims.
    const SEGMENT: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'/')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'\\')
        .add(b'^')
        .add(b'`')
        .add(b'{')
        .add(b'|')
        .add(b'}');
    let mut out = String::with_capacity(key.len() + 1);
    for seg in key.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.extend(utf8_percent_encode(seg, SEGMENT));
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Checks the invariant documented at the top of this module; used by the
/// tests and the fuzz target so both state the same property.
pub fn is_safe_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').all(|seg| {
        !seg.is_empty()
            && !seg.starts_with('.')
            && !seg.contains('\\')
            && !seg.chars().any(char::is_control)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        match normalize(input) {
            Ok(key) => {
                assert!(is_safe_key(&key), "{input:?} -> unsafe key {key:?}");
                key.into_owned()
            }
            Err(e) => panic!("{input:?} rejected: {e:?}"),
        }
    }

    fn bad(input: &str) {
        assert!(
            matches!(normalize(input), Err(Reject::BadRequest(_))),
            "{input:?} should be a bad request, got {:?}",
            normalize(input)
        );
    }

    fn hidden(input: &str) {
        assert_eq!(normalize(input), Err(Reject::NotFound), "{input:?}");
    }

    #[test]
    fn root_is_borrowed_as_is() {
        assert!(matches!(normalize("/"), Ok(Cow::Borrowed("/"))));
    }

    #[test]
    fn plain_file_is_borrowed_as_is() {
        assert!(matches!(
            normalize("/page.html"),
            Ok(Cow::Borrowed("/page.html"))
        ));
        assert!(matches!(
            normalize("/a/b/c.css"),
            Ok(Cow::Borrowed("/a/b/c.css"))
        ));
    }

    #[test]
    fn fast_path_takes_only_normal_forms() {
        for plain in ["a", "a/", "a/b.html", "x-y_z~1/index.html", "a.b/c"] {
            assert!(is_plain(plain), "{plain:?}");
            let path = format!("/{plain}");
            assert_eq!(slow_normalize(&path, plain).as_deref(), Ok(&*path));
        }
        for other in [
            "/", "a//b", ".git", "a/.env", "a/./b", "a/..", "%61", "a\\b", "a b", "é",
        ] {
            assert!(!is_plain(other), "{other:?}");
        }
    }

    #[test]
    fn directory_slash_is_kept() {
        assert!(matches!(normalize("/sub/"), Ok(Cow::Borrowed("/sub/"))));
    }

    #[test]
    fn missing_leading_slash_is_rejected() {
        bad("page.html");
        bad("*");
        bad("");
    }

    #[test]
    fn repeated_slashes_collapse() {
        assert_eq!(ok("//page.html"), "/page.html");
        assert_eq!(ok("/a//b"), "/a/b");
        assert_eq!(ok("/a//"), "/a/");
        assert_eq!(ok("//"), "/");
    }

    #[test]
    fn single_dot_segments_are_dropped() {
        assert_eq!(ok("/./page.html"), "/page.html");
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/%2e/page.html"), "/page.html");
        assert_eq!(ok("/."), "/");
    }

    #[test]
    fn dot_dot_is_rejected_even_inside_root() {
        bad("/..");
        bad("/../secret");
        bad("/a/../page.html");
        bad("/a/..");
    }

    #[test]
    fn encoded_dot_dot_is_rejected() {
        bad("/%2e%2e/secret");
        bad("/%2E%2E/secret");
        bad("/.%2e/secret");
        bad("/%2e./secret");
    }

    #[test]
    fn encoded_slash_is_rejected() {
        bad("/..%2fsecret");
        bad("/a%2Fb");
        bad("/%2f");
    }

    #[test]
    fn backslash_raw_or_encoded_is_rejected() {
        bad("/..\\secret");
        bad("/a\\b");
        bad("/..%5csecret");
        bad("/%5C");
    }

    #[test]
    fn nul_and_controls_are_rejected() {
        bad("/page.html%00");
        bad("/%00../secret");
        bad("/a%0d%0aX-Injected:%201");
        bad("/a%7f");
    }

    #[test]
    fn overlong_utf8_is_rejected() {
        bad("/%c0%ae%c0%ae/secret");
        bad("/%c0%af");
        bad("/%e0%80%ae");
        bad("/..%c0%afsecret");
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        bad("/%ff");
        bad("/%80abc");
        bad("/%ed%a0%80"); // a UTF-16 surrogate
    }

    #[test]
    fn malformed_escapes_are_rejected() {
        bad("/%");
        bad("/%2");
        bad("/%zz");
        bad("/..%u2216secret");
    }

    #[test]
    fn double_encoding_is_decoded_once() {
        // `%252e` is a literal `%2e` file name, not a dot.
        assert_eq!(ok("/%252e%252e/x"), "/%2e%2e/x");
    }

    #[test]
    fn dotfiles_are_hidden() {
        hidden("/.env");
        hidden("/.git/config");
        hidden("/sub/.hidden");
        hidden("/%2ehidden");
        hidden("/...");
        hidden("/.well-known/x");
    }

    #[test]
    fn valid_escapes_are_decoded() {
        assert_eq!(ok("/hello%20world.html"), "/hello world.html");
        assert_eq!(ok("/caf%C3%A9"), "/café");
        assert_eq!(ok("/a%3Bb"), "/a;b");
    }

    #[test]
    fn raw_utf8_passes_through() {
        assert!(matches!(normalize("/café"), Ok(Cow::Borrowed("/café"))));
    }

    #[test]
    fn location_reencodes_segments() {
        assert_eq!(encode_for_location("/hello world"), "/hello%20world");
        assert_eq!(encode_for_location("/a?b#c"), "/a%3Fb%23c");
        assert_eq!(encode_for_location("/%2e"), "/%252e");
        assert_eq!(encode_for_location("/"), "/");
    }

    #[test]
    fn safe_key_check_rejects_escapes() {
        assert!(is_safe_key("/"));
        assert!(is_safe_key("/a/b/"));
        assert!(!is_safe_key("/../x"));
        assert!(!is_safe_key("//x"));
        assert!(!is_safe_key("//"));
        assert!(!is_safe_key("/a\\b"));
        assert!(!is_safe_key("x"));
    }
    /// The fuzz target's properties (fuzz/fuzz_targets/path.rs) over random
    /// concatenations of troublesome tokens, so CI checks them on stable.
    #[test]
    fn random_hostile_targets_keep_the_invariants() {
        const TOKENS: &[&str] = &[
            "/",
            "/",
            "/",
            ".",
            "..",
            "%2e",
            "%2E",
            "%2f",
            "%5c",
            "\\",
            "%00",
            "%c0%ae",
            "%e0%80%ae",
            "a",
            "b.html",
            "%25",
            "%",
            "%2",
            "%zz",
            ".git",
            "%20",
            "é",
            "%C3%A9",
            ";",
            "%3f",
            "%0a",
            "~",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for _ in 0..20_000 {
            let mut target = String::from("/");
            for _ in 0..rng.usize(0..8) {
                target.push_str(TOKENS[rng.usize(0..TOKENS.len())]);
            }
            let rest = &target[1..];
            if !rest.is_empty() && is_plain(rest) {
                assert_eq!(
                    slow_normalize(&target, rest).as_deref(),
                    Ok(&*target),
                    "fast path disagrees on {target:?}"
                );
            }
            let Ok(key) = normalize(&target) else {
                continue;
            };
            assert!(is_safe_key(&key), "{target:?} -> {key:?}");
            if !target.contains('%') {
                assert_eq!(normalize(&key).as_deref(), Ok(&*key), "{target:?}");
            }
            let trimmed = match key.trim_end_matches('/') {
                "" => "/",
                k => k,
            };
            let location = encode_for_location(&key);
            assert_eq!(normalize(&location).as_deref(), Ok(trimmed), "{target:?}");
        }
    }
}
