//! Which changed paths watch mode ignores: version-control and cache
//! directories, editor swap and temp files, fleet's own state dir and
//! access log (written on every request: watching them would roll forever),
//! and the patterns `watch.ignore` adds. Pure: no filesystem access.

use std::path::{Component, Path, PathBuf};

/// Ignored everywhere, matched against each path component below a
/// watched root: `.git`, Python's byte-code cache, vim's swap files and its
/// `4913` write test, emacs's backups (`*~`) and lock files (`.#*`), and
/// temp files.
pub(crate) const BUILTIN: &[&str] = &[
    ".git",
    "__pycache__",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    "4913",
    "*.tmp",
];

/// The rules for one watch.
#[derive(Debug, Clone)]
pub(crate) struct Ignore {
    /// The watched roots: patterns apply below them, not to their parents.
    roots: Vec<PathBuf>,
    /// `BUILTIN` then `watch.ignore`: a pattern without `/` matches any one
    /// component, one with `/` the whole path below the root.
    patterns: Vec<String>,
    /// Ignored with everything below them (absolute).
    prefixes: Vec<PathBuf>,
}

impl Ignore {
    pub(crate) fn new(roots: &[PathBuf], extra: &[String], prefixes: Vec<PathBuf>) -> Self {
        Ignore {
            roots: roots.to_vec(),
            patterns: BUILTIN
                .iter()
                .map(|p| (*p).to_owned())
                .chain(extra.iter().cloned())
                .collect(),
            prefixes,
        }
    }

    /// Whether a change to `path` (absolute, as the watcher reports it) is
    /// to be ignored.
    pub(crate) fn ignored(&self, path: &Path) -> bool {
        if self.prefixes.iter().any(|p| path.starts_with(p)) {
            return true;
        }
        let below = self
            .roots
            .iter()
            .filter_map(|r| path.strip_prefix(r).ok())
            .min_by_key(|rest| rest.components().count());
        // A watched file itself has nothing below its root: its own name counts.
        let rel = match below {
            Some(rest) if rest.as_os_str().is_empty() => path.file_name().map(Path::new),
            Some(rest) => Some(rest),
            None => Some(path),
        };
        let Some(rel) = rel else { return false };
        let whole = rel.to_string_lossy();
        self.patterns.iter().any(|p| {
            if p.contains('/') {
                glob(p.trim_start_matches('/'), &whole)
            } else {
                rel.components().any(|c| match c {
                    Component::Normal(name) => glob(p, &name.to_string_lossy()),
                    _ => false,
                })
            }
        })
    }

    /// `path` as it reads in messages: relative to its watched root.
    pub(crate) fn shown(&self, path: &Path) -> String {
        self.roots
            .iter()
            .filter_map(|r| path.strip_prefix(r).ok())
            .find(|rest| !rest.as_os_str().is_empty())
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// Shell-style match of the whole `text`: `*` any run of characters, `?` one
/// character, anything else itself.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative with one backtrack point: linear for a single `*`, and no
    // recursion for many.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(extra: &[&str]) -> Ignore {
        Ignore::new(
            &[PathBuf::from("/srv/app")],
            &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            vec![
                PathBuf::from("/srv/app/.fleet"),
                PathBuf::from("/srv/app/access.log"),
            ],
        )
    }

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob("*.swp", ".server.py.swp"));
        assert!(glob("*~", "server.py~"));
        assert!(glob(".#*", ".#server.py"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*", ""));
        assert!(glob("*a*b", "xxaxxb"));
        assert!(!glob("*.swp", "server.py"));
        assert!(!glob("a?c", "ac"));
        assert!(!glob("4913", "49130"));
        assert!(!glob("*a*b", "xxaxxbx"));
    }

    #[test]
    fn editor_and_cache_files_are_ignored() {
        let r = rules(&[]);
        for p in [
            "/srv/app/.git/index",
            "/srv/app/__pycache__/server.cpython-312.pyc",
            "/srv/app/.server.py.swp",
            "/srv/app/.server.py.swx",
            "/srv/app/server.py~",
            "/srv/app/.#server.py",
            "/srv/app/4913",
            "/srv/app/lib/build.tmp",
            "/srv/app/lib/.git",
        ] {
            assert!(r.ignored(Path::new(p)), "{p}");
        }
        for p in [
            "/srv/app/server.py",
            "/srv/app/lib/util.py",
            "/srv/app/www/index.html",
        ] {
            assert!(!r.ignored(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn the_state_dir_and_access_log_are_ignored() {
        let r = rules(&[]);
        assert!(r.ignored(Path::new("/srv/app/.fleet/logs/backend-9002.log")));
        assert!(r.ignored(Path::new("/srv/app/.fleet")));
        assert!(r.ignored(Path::new("/srv/app/access.log")));
        assert!(!r.ignored(Path::new("/srv/app/access.log.py")));
    }

    #[test]
    fn patterns_apply_below_the_root_not_to_its_parents() {
        let r = Ignore::new(&[PathBuf::from("/home/me/site.tmp/app")], &[], Vec::new());
        assert!(!r.ignored(Path::new("/home/me/site.tmp/app/server.py")));
        assert!(r.ignored(Path::new("/home/me/site.tmp/app/x.tmp")));
    }

    #[test]
    fn configured_patterns_add_to_the_builtin_ones() {
        let r = rules(&["*.log", "data/*.csv"]);
        assert!(r.ignored(Path::new("/srv/app/logs/app.log")));
        assert!(r.ignored(Path::new("/srv/app/data/x.csv")));
        assert!(!r.ignored(Path::new("/srv/app/other/x.csv")));
        assert!(r.ignored(Path::new("/srv/app/.git/HEAD")));
    }

    #[test]
    fn a_watched_file_is_judged_by_its_own_name() {
        let r = Ignore::new(&[PathBuf::from("/srv/app/server.py")], &[], Vec::new());
        assert!(!r.ignored(Path::new("/srv/app/server.py")));
        assert_eq!(
            r.shown(Path::new("/srv/app/server.py")),
            "/srv/app/server.py"
        );
        let r = rules(&[]);
        assert_eq!(r.shown(Path::new("/srv/app/lib/util.py")), "lib/util.py");
    }
}
