//! The file cache: maps a normal-form request path (see `path`) to what the
//! worker sends back, keeping small files in memory with
//! their `Content-Type` formatted once, so a hit costs a hash lookup and a few
//! reference-count bumps.
//!
//! # Freshness
//! An entry is trusted for `revalidate` after it was last checked; after that
//! the next request `stat`s the requested path (following symlinks) and
//! compares device, inode, length and mtime with what was loaded. Any
//! difference reloads the file from scratch, including the containment check
//! below, so an edited page, a replaced file or a retargeted symlink is seen
//! within one interval. A stat costs about a microsecond on a warm dentry
//! cache, which is a measurable share of a ~20 µs request at 50k req/s, so the
//! default interval is 1 s: an edit shows up at the latest one second later.
//! `--cache-revalidate 0` checks on every request.
//!
//! # Containment
//! `path::normalize` already guarantees the key is lexically under the root.
//! On every load the resolved file is canonicalised and must still be under
//! the canonical root with no dot-named component, so a symlink pointing out
//! of the root (or into `.git`) is answered 404. Only regular files are ever
//! opened, and with `O_NONBLOCK` so a FIFO swapped in between the check and
//! the open cannot block the worker's only thread. (Someone who can write to
//! the www directory can still race a symlink swap between canonicalise and
//! open; remote clients cannot create files, so that is out of scope.)
//!
//! # Bounds
//! Files up to `MAX_CACHED_FILE` are held in memory, up to `MAX_CACHED_TOTAL`
//! bytes in all; past the total, small files are read per request and not
//! kept. Larger files are streamed from disk. Entries for files that vanish
//! are dropped on their next revalidation; nothing else is evicted.
//!
//! Reads here are blocking `std::fs` calls made on the runtime thread: for
//! small local files they take microseconds, less than a hop to a blocking
//! thread would (nginx makes the same trade). Only streaming goes through
//! `tokio::fs`.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::path::encode_for_location;

/// Largest file kept in memory; larger ones are streamed.
pub(super) const MAX_CACHED_FILE: u64 = 1024 * 1024;
/// Memory the cache may hold in all.
pub(super) const MAX_CACHED_TOTAL: u64 = 64 * 1024 * 1024;

/// What a request path resolves to.
#[derive(Debug)]
pub(super) enum Lookup {
    /// A file held in memory (cached, or read for this request only).
    Memory(Arc<Entry>),
    /// A file too large to hold: stream `len` bytes from `file`.
    Stream {
        file: File,
        len: u64,
        content_type: Bytes,
    },
    /// A directory asked for without its trailing slash: redirect here.
    Redirect(String),
    NotFound,
    /// The file exists but the worker may not read it.
    Forbidden,
    /// Anything else the filesystem said; the caller answers 500 and logs it.
    Error(io::Error),
}

/// A file held in memory, with its `Content-Type` ready to send.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) body: Bytes,
    pub(super) content_type: Bytes,
    /// The path that was requested (before symlinks), stat'ed to revalidate so
    /// a retargeted symlink is noticed.
    stat_path: PathBuf,
    stamp: Stamp,
    /// When this entry was last known fresh, in ns since the cache's epoch.
    checked: AtomicU64,
}

/// Identity and version of a file: enough to notice an edit, a replacement
/// (new inode) or a symlink retargeted to another file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(m: &Metadata) -> Self {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

pub(super) struct FileCache {
    /// Canonical www root: every served file's canonical path starts with it.
    root: PathBuf,
    revalidate_ns: u64,
    epoch: Instant,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Box<str>, Arc<Entry>>,
    /// Sum of the cached bodies' lengths, bounded by `MAX_CACHED_TOTAL`.
    total: u64,
}

impl FileCache {
    /// `root` must exist; it is canonicalised here once.
    pub(super) fn new(root: &Path, revalidate: Duration) -> io::Result<Self> {
        let root = fs::canonicalize(root)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(FileCache {
            root,
            revalidate_ns: u64::try_from(revalidate.as_nanos()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            inner: RwLock::default(),
        })
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// Resolve a normal-form path (the output of `path::normalize`).
    pub(super) fn lookup(&self, key: &str) -> Lookup {
        let now = self.now_ns();
        let cached = self
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .get(key)
            .cloned();
        if let Some(entry) = cached {
            if now.saturating_sub(entry.checked.load(Ordering::Relaxed)) < self.revalidate_ns {
                return Lookup::Memory(entry);
            }
            if let Ok(meta) = fs::metadata(&entry.stat_path)
                && Stamp::of(&meta) == entry.stamp
            {
                entry.checked.store(now, Ordering::Relaxed);
                return Lookup::Memory(entry);
            }
            self.forget(key);
        }
        self.load(key, now)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn forget(&self, key: &str) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = inner.map.remove(key) {
            inner.total -= old.body.len() as u64;
        }
    }

    fn load(&self, key: &str, now: u64) -> Lookup {
        let rel = key.trim_matches('/');
        let want_dir = key.ends_with('/');
        let mut path = self.root.join(rel);
        if want_dir {
            path.push("index.html");
        }
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => return from_io(e),
        };
        if meta.is_dir() {
            if want_dir {
                // `dir/index.html/` is itself a directory: nothing to serve.
                return Lookup::NotFound;
            }
            let mut location = encode_for_location(key);
            location.push('/');
            return Lookup::Redirect(location);
        }
        if !meta.is_file() {
            return Lookup::NotFound;
        }
        let canonical = match fs::canonicalize(&path) {
            Ok(p) => p,
            Err(e) => return from_io(e),
        };
        if !self.contains(&canonical) {
            return Lookup::NotFound;
        }
        let mut file = match File::options()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&canonical)
        {
            Ok(f) => f,
            Err(e) => return from_io(e),
        };
        // Trust what was opened, not what was stat'ed before.
        let meta = match file.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Lookup::NotFound,
            Err(e) => return from_io(e),
        };
        let content_type = content_type(&path);
        if meta.len() > MAX_CACHED_FILE {
            return Lookup::Stream {
                file,
                len: meta.len(),
                content_type,
            };
        }
        let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        // Bounded: a file growing while we read is cut at the cache limit.
        if let Err(e) = (&mut file).take(MAX_CACHED_FILE).read_to_end(&mut buf) {
            return from_io(e);
        }
        let body = Bytes::from(buf);
        let entry = Arc::new(Entry {
            body,
            content_type,
            stat_path: path,
            stamp: Stamp::of(&meta),
            checked: AtomicU64::new(now),
        });
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let size = entry.body.len() as u64;
        if inner.total + size <= MAX_CACHED_TOTAL {
            inner.total += size;
            if let Some(old) = inner.map.insert(key.into(), Arc::clone(&entry)) {
                // Two requests raced to load the same file: count it once.
                inner.total -= old.body.len() as u64;
            }
        }
        Lookup::Memory(entry)
    }

    /// The canonical path is under the root and names no dotfile on the way.
    fn contains(&self, canonical: &Path) -> bool {
        let Ok(rel) = canonical.strip_prefix(&self.root) else {
            return false;
        };
        rel.components().all(|c| match c {
            Component::Normal(name) => !name.as_encoded_bytes().starts_with(b"."),
            _ => false,
        })
    }
}

fn from_io(e: io::Error) -> Lookup {
    use io::ErrorKind::*;
    match e.kind() {
        NotFound | NotADirectory | InvalidFilename => Lookup::NotFound,
        PermissionDenied => Lookup::Forbidden,
        // Too many symlinks (ELOOP) has no stable ErrorKind yet.
        _ if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => Lookup::NotFound,
        _ => Lookup::Error(e),
    }
}

/// `Content-Type` from the requested name's extension; text types say UTF-8.
fn content_type(path: &Path) -> Bytes {
    let mime = mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let texty = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript" | "application/json" | "application/xml" | "image/svg+xml"
        );
    if texty {
        Bytes::from(format!("{mime}; charset=utf-8"))
    } else {
        Bytes::from_static(mime.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Site {
        dir: tempfile::TempDir,
    }

    impl Site {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("www")).unwrap();
            fs::write(dir.path().join("www/page.html"), "<p>page</p>").unwrap();
            fs::write(dir.path().join("secret.txt"), "TOP SECRET").unwrap();
            Site { dir }
        }
        fn www(&self) -> PathBuf {
            self.dir.path().join("www")
        }
        fn cache(&self, revalidate: Duration) -> FileCache {
            FileCache::new(&self.www(), revalidate).unwrap()
        }
    }

    fn body(l: Lookup) -> Bytes {
        match l {
            Lookup::Memory(e) => e.body.clone(),
            other => panic!("expected a file in memory, got {other:?}"),
        }
    }

    #[test]
    fn html_file_is_served_with_utf8_content_type() {
        let site = Site::new();
        let Lookup::Memory(e) = site.cache(Duration::ZERO).lookup("/page.html") else {
            panic!("page.html not found");
        };
        assert_eq!(&e.body[..], b"<p>page</p>");
        assert_eq!(e.content_type, "text/html; charset=utf-8");
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type(Path::new("a.css")), "text/css; charset=utf-8");
        assert_eq!(content_type(Path::new("a.png")), "image/png");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }

    #[test]
    fn missing_file_is_not_found() {
        let site = Site::new();
        assert!(matches!(
            site.cache(Duration::ZERO).lookup("/nope.html"),
            Lookup::NotFound
        ));
        // A file used as a directory.
        assert!(matches!(
            site.cache(Duration::ZERO).lookup("/page.html/x"),
            Lookup::NotFound
        ));
    }

    #[test]
    fn directory_serves_its_index() {
        let site = Site::new();
        fs::create_dir(site.www().join("sub")).unwrap();
        fs::write(site.www().join("sub/index.html"), "sub index").unwrap();
        let cache = site.cache(Duration::ZERO);
        assert_eq!(&body(cache.lookup("/sub/"))[..], b"sub index");
        assert!(matches!(cache.lookup("/"), Lookup::NotFound));
    }

    #[test]
    fn directory_without_slash_redirects() {
        let site = Site::new();
        fs::create_dir(site.www().join("a b")).unwrap();
        match site.cache(Duration::ZERO).lookup("/a b") {
            Lookup::Redirect(loc) => assert_eq!(loc, "/a%20b/"),
            other => panic!("expected a redirect, got {other:?}"),
        }
    }

    #[test]
    fn edited_file_is_reloaded_after_revalidation() {
        let site = Site::new();
        let cache = site.cache(Duration::ZERO);
        assert_eq!(&body(cache.lookup("/page.html"))[..], b"<p>page</p>");
        fs::write(site.www().join("page.html"), "<p>edited, longer</p>").unwrap();
        assert_eq!(
            &body(cache.lookup("/page.html"))[..],
            b"<p>edited, longer</p>"
        );
    }

    #[test]
    fn fresh_entry_is_served_without_checking_the_disk() {
        let site = Site::new();
        let cache = site.cache(Duration::from_secs(3600));
        assert_eq!(&body(cache.lookup("/page.html"))[..], b"<p>page</p>");
        fs::remove_file(site.www().join("page.html")).unwrap();
        assert_eq!(&body(cache.lookup("/page.html"))[..], b"<p>page</p>");
    }

    #[test]
    fn deleted_file_is_forgotten() {
        let site = Site::new();
        let cache = site.cache(Duration::ZERO);
        body(cache.lookup("/page.html"));
        fs::remove_file(site.www().join("page.html")).unwrap();
        assert!(matches!(cache.lookup("/page.html"), Lookup::NotFound));
        assert_eq!(cache.inner.read().unwrap().total, 0);
    }

    #[test]
    fn symlink_out_of_root_is_not_found() {
        let site = Site::new();
        symlink(site.dir.path().join("secret.txt"), site.www().join("leak")).unwrap();
        symlink(site.dir.path(), site.www().join("up")).unwrap();
        let cache = site.cache(Duration::ZERO);
        assert!(matches!(cache.lookup("/leak"), Lookup::NotFound));
        assert!(matches!(cache.lookup("/up/secret.txt"), Lookup::NotFound));
    }

    #[test]
    fn symlink_inside_root_is_served() {
        let site = Site::new();
        symlink("page.html", site.www().join("alias.html")).unwrap();
        assert_eq!(
            &body(site.cache(Duration::ZERO).lookup("/alias.html"))[..],
            b"<p>page</p>"
        );
    }

    #[test]
    fn symlink_into_a_dot_directory_is_not_found() {
        let site = Site::new();
        fs::create_dir(site.www().join(".git")).unwrap();
        fs::write(site.www().join(".git/config"), "secret").unwrap();
        symlink(".git/config", site.www().join("config")).unwrap();
        assert!(matches!(
            site.cache(Duration::ZERO).lookup("/config"),
            Lookup::NotFound
        ));
    }

    #[test]
    fn retargeted_symlink_is_noticed() {
        let site = Site::new();
        fs::write(site.www().join("other.html"), "<p>other</p>").unwrap();
        symlink("page.html", site.www().join("link.html")).unwrap();
        let cache = site.cache(Duration::ZERO);
        assert_eq!(&body(cache.lookup("/link.html"))[..], b"<p>page</p>");
        fs::remove_file(site.www().join("link.html")).unwrap();
        symlink(
            site.dir.path().join("secret.txt"),
            site.www().join("link.html"),
        )
        .unwrap();
        assert!(matches!(cache.lookup("/link.html"), Lookup::NotFound));
    }

    #[test]
    fn fifo_is_never_opened() {
        let site = Site::new();
        nix::unistd::mkfifo(
            &site.www().join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(matches!(
            site.cache(Duration::ZERO).lookup("/pipe"),
            Lookup::NotFound
        ));
    }

    #[test]
    fn large_file_is_streamed() {
        let site = Site::new();
        let big = vec![b'x'; usize::try_from(MAX_CACHED_FILE).unwrap() + 1];
        fs::write(site.www().join("big.bin"), &big).unwrap();
        match site.cache(Duration::ZERO).lookup("/big.bin") {
            Lookup::Stream { len, .. } => assert_eq!(len, MAX_CACHED_FILE + 1),
            other => panic!("expected a stream, got {other:?}"),
        }
    }
}
