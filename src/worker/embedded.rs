//! The site compiled into the binary: what the built-in worker serves when
//! it is given no www directory and there is no `./www`, so a fleet started
//! in an empty directory answers `/` and the lab's `/page.html` (which
//! `fleet bench` asks for) instead of failing to start. The pages are the
//! shipped `www/` files, included at build time, so the two cannot drift.

/// `index.html`, served for `/` too.
const INDEX: &[u8] = include_bytes!("../../www/index.html");
/// The lab's page.
const PAGE: &[u8] = include_bytes!("../../www/page.html");

/// Every embedded path, as `path::normalize` spells it, and its body. All
/// are HTML; anything else is 404, as it would be for a directory without it.
const PAGES: &[(&str, &[u8])] = &[("/", INDEX), ("/index.html", INDEX), ("/page.html", PAGE)];

/// The HTML served under `key` (a normalised request path), if any.
pub(super) fn lookup(key: &str) -> Option<&'static [u8]> {
    PAGES.iter().find(|(k, _)| *k == key).map(|(_, body)| *body)
}

/// The file names `fleet init` writes into a starter `www/`: the same pages.
pub(crate) const STARTER_FILES: &[(&str, &[u8])] = &[("index.html", INDEX), ("page.html", PAGE)];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_index_are_the_same_page() {
        assert_eq!(lookup("/"), lookup("/index.html"));
        assert!(lookup("/").is_some());
    }

    #[test]
    fn page_html_is_the_shipped_page() {
        assert_eq!(lookup("/page.html"), Some(PAGE));
    }

    #[test]
    fn anything_else_is_not_found() {
        assert_eq!(lookup("/missing.html"), None);
        assert_eq!(lookup("/page.html/"), None);
    }
}
