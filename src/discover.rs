//! Finding the fleet a command means when it is not told: the nearest
//! `.fleet` in this directory or a parent, as git finds `.git`, so `fleet
//! status` works from anywhere inside the project that ran `fleet up`.
//!
//! # Rules
//! 1. `--state-dir` or `FLEET_STATE_DIR` wins; nothing is searched.
//! 2. Walking up from the current directory, the first `.fleet` holding a
//!    pid file (a fleet that runs, or ran and left its state) is taken.
//! 3. Otherwise the first `.fleet` at all (its `logs/` outlive the fleet).
//! 4. Otherwise `./.fleet`, and the command says that no fleet runs there.
//!
//! A `.fleet` (or its pid file) that cannot be examined stops the walk there:
//! it is taken, so the command reports why it cannot read it rather than
//! quietly using a fleet further up ("cannot read" is never "not there").
//!
//! `fleet up` does not search for a `.fleet`: it finds its fleet.yaml (in
//! this directory or the nearest parent that has one, `config::find_file`)
//! and puts the new fleet's `.fleet` beside it, so the others find it from
//! anywhere below.

use std::io;
use std::path::{Path, PathBuf};

use crate::state_dir::DEFAULT;
use clap::Args;

/// What the walk found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// `./.fleet` (found there, or nothing found anywhere).
    Here,
    /// A parent's `.fleet`: `up` levels above the current directory.
    Parent { up: usize, dir: PathBuf },
}

/// Where the fleet keeps its pid file, control socket and logs.
#[derive(Debug, Clone, Args)]
pub struct StateDirArg {
    /// State directory [default: the nearest .fleet in this or a parent directory]
    #[arg(long, env = "FLEET_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateDirArg {
    /// The state dir a command that talks to a running fleet should use;
    /// says on stderr which one when it is a parent directory's.
    pub fn resolve(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        let Ok(cwd) = std::env::current_dir() else {
            return PathBuf::from(DEFAULT);
        };
        match nearest(&cwd) {
            Found::Here => PathBuf::from(DEFAULT),
            Found::Parent { up, dir } => {
                eprintln!("fleet: using the fleet in {}", dir.display());
                // A relative path keeps the control socket's path short
                // (sun_path) however deep the project lives.
                let mut rel: PathBuf = std::iter::repeat_n("..", up).collect();
                rel.push(DEFAULT);
                rel
            }
        }
    }

    /// The state dir `fleet up` creates: the one given, or `.fleet` beside
    /// the fleet.yaml it uses, `file_up` directories above this one (0:
    /// here, also when there is no file).
    pub fn for_up(&self, file_up: usize) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            // Relative, like `resolve`'s, to keep the socket path short.
            let mut rel: PathBuf = std::iter::repeat_n("..", file_up).collect();
            rel.push(DEFAULT);
            rel
        })
    }
}

/// The `.fleet` a command run in `cwd` (absolute) means; see the module rules.
pub(crate) fn nearest(cwd: &Path) -> Found {
    let mut first_dir = None;
    for (up, dir) in cwd.ancestors().enumerate() {
        let state = dir.join(DEFAULT);
        match probe(&state) {
            Probe::Absent => {}
            Probe::Fleet | Probe::Unreadable => return found(up, state),
            Probe::Empty => {
                first_dir.get_or_insert((up, state));
            }
        }
    }
    first_dir.map_or(Found::Here, |(up, state)| found(up, state))
}

fn found(up: usize, dir: PathBuf) -> Found {
    if up == 0 {
        Found::Here
    } else {
        Found::Parent { up, dir }
    }
}

enum Probe {
    /// No `.fleet` here.
    Absent,
    /// A `.fleet` without a pid file.
    Empty,
    /// A `.fleet` with a pid file.
    Fleet,
    /// Something that could not be examined.
    Unreadable,
}

fn probe(state: &Path) -> Probe {
    match std::fs::metadata(state) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Probe::Absent,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Probe::Absent,
        Err(_) => return Probe::Unreadable,
    }
    match std::fs::symlink_metadata(state.join("fleet.pid")) {
        Ok(_) => Probe::Fleet,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Probe::Empty,
        Err(_) => Probe::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b/c")).unwrap();
        d
    }

    #[test]
    fn nothing_anywhere_means_here() {
        let d = tree();
        // The temp dir's own parents might hold a .fleet; start below a
        // .fleet-free root by checking only what this tree decides.
        let got = nearest(&d.path().join("a/b/c"));
        if let Found::Parent { dir, .. } = &got {
            assert!(!dir.starts_with(d.path()), "found {dir:?} inside the tree");
        }
    }

    #[test]
    fn a_parent_fleet_with_a_pid_file_is_found() {
        let d = tree();
        fs::create_dir(d.path().join("a/.fleet")).unwrap();
        fs::write(d.path().join("a/.fleet/fleet.pid"), "1\n").unwrap();
        assert_eq!(
            nearest(&d.path().join("a/b/c")),
            Found::Parent {
                up: 2,
                dir: d.path().join("a/.fleet")
            }
        );
    }

    #[test]
    fn the_current_dirs_fleet_is_here() {
        let d = tree();
        fs::create_dir(d.path().join("a/b/c/.fleet")).unwrap();
        fs::write(d.path().join("a/b/c/.fleet/fleet.pid"), "1\n").unwrap();
        assert_eq!(nearest(&d.path().join("a/b/c")), Found::Here);
    }

    #[test]
    fn a_running_fleet_above_wins_over_an_empty_state_dir_below() {
        let d = tree();
        fs::create_dir_all(d.path().join("a/b/.fleet/logs")).unwrap();
        fs::create_dir(d.path().join("a/.fleet")).unwrap();
        fs::write(d.path().join("a/.fleet/fleet.pid"), "1\n").unwrap();
        assert_eq!(
            nearest(&d.path().join("a/b")),
            Found::Parent {
                up: 1,
                dir: d.path().join("a/.fleet")
            }
        );
    }

    #[test]
    fn an_empty_state_dir_is_taken_when_no_fleet_is_found() {
        let d = tree();
        fs::create_dir_all(d.path().join("a/.fleet/logs")).unwrap();
        let got = nearest(&d.path().join("a/b/c"));
        // A parent of the temp dir could hold a real fleet; only assert
        // when it does not.
        if !d
            .path()
            .ancestors()
            .any(|p| p.join(".fleet/fleet.pid").exists())
        {
            assert_eq!(
                got,
                Found::Parent {
                    up: 2,
                    dir: d.path().join("a/.fleet")
                }
            );
        }
    }

    #[test]
    fn a_file_named_dot_fleet_is_not_a_state_dir() {
        let d = tree();
        fs::write(d.path().join("a/.fleet"), "").unwrap();
        fs::create_dir(d.path().join(".fleet")).unwrap();
        fs::write(d.path().join(".fleet/fleet.pid"), "1\n").unwrap();
        assert_eq!(
            nearest(&d.path().join("a/b")),
            Found::Parent {
                up: 2,
                dir: d.path().join(".fleet")
            }
        );
    }
}
