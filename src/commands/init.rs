//! `fleet init`: a commented fleet.yaml and a starter `www/` in the current
//! directory, so a new user has a fleet to start and files to edit. It never
//! overwrites: if either already exists it names what it found and changes
//! nothing. The files are the shipped `fleet.yaml` (the lab's setup, every
//! key at its default with a comment) and the embedded pages, compiled in;
//! with `--full`, the reference `examples/fleet.yaml` instead (every key
//! explained at length), which the short one points to: the source tree
//! that holds `examples/` is rarely where a fleet is set up.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::cli::InitArgs;
use crate::config::DEFAULT_FILE;
use crate::exit;
use crate::worker::{DEFAULT_WWW, STARTER_FILES};

/// The commented fleet.yaml `init` writes: the one at the repository root.
const STARTER_CONFIG: &str = include_str!("../../fleet.yaml");
/// `fleet init --full`: the reference, every key explained.
const FULL_CONFIG: &str = include_str!("../../examples/fleet.yaml");

pub(crate) fn run(args: &InitArgs) -> Result<(), InitError> {
    let cwd = std::env::current_dir().map_err(InitError::CurrentDir)?;
    let config = if args.full {
        FULL_CONFIG
    } else {
        STARTER_CONFIG
    };
    init_in(&cwd, config)?;
    crate::outln!(
        "fleet: wrote {DEFAULT_FILE} and {DEFAULT_WWW}/ ({}) in {}; start the fleet with `fleet up`",
        STARTER_FILES
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", "),
        cwd.display()
    );
    Ok(())
}

/// Why `fleet init` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot determine the current directory")]
    CurrentDir(#[source] io::Error),
    /// These already exist (as written in messages: `fleet.yaml`, `www/`).
    #[error(
        "{} already exist{} in {}; fleet init never overwrites (nothing was changed)",
        names.join(" and "),
        if names.len() == 1 { "s" } else { "" },
        dir.display()
    )]
    Exists { names: Vec<String>, dir: PathBuf },
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl InitError {
    pub fn exit_code(&self) -> u8 {
        exit::FAILURE
    }
}

/// Write the starter files into `dir`, which must hold neither of them.
fn init_in(dir: &Path, config_text: &str) -> Result<(), InitError> {
    let config = dir.join(DEFAULT_FILE);
    let www = dir.join(DEFAULT_WWW);
    // `symlink_metadata`: a dangling symlink named www is still in the way,
    // and an unreadable entry is reported, not taken for absent.
    let mut present = Vec::new();
    for (path, shown) in [
        (&config, DEFAULT_FILE.to_string()),
        (&www, format!("{DEFAULT_WWW}/")),
    ] {
        match fs::symlink_metadata(path) {
            Ok(_) => present.push(shown),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(InitError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    if !present.is_empty() {
        return Err(InitError::Exists {
            names: present,
            dir: dir.to_path_buf(),
        });
    }
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Io { path, source }
    };
    // create_dir and create_new fail rather than overwrite, should something
    // appear between the check and the write.
    fs::create_dir(&www).map_err(io_err(&www))?;
    for (name, body) in STARTER_FILES {
        write_new(&www.join(name), body).map_err(io_err(&www.join(name)))?;
    }
    write_new(&config, config_text.as_bytes()).map_err(io_err(&config))?;
    Ok(())
}

fn write_new(path: &Path, body: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_config_and_www_into_an_empty_dir() {
        let d = tempfile::tempdir().unwrap();
        init_in(d.path(), STARTER_CONFIG).unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join("fleet.yaml")).unwrap(),
            STARTER_CONFIG
        );
        assert!(d.path().join("www/page.html").is_file());
        assert!(d.path().join("www/index.html").is_file());
    }

    /// The short file points to the long one by a command that works
    /// wherever the short one was written.
    #[test]
    fn the_starter_points_to_init_full_which_writes_the_reference() {
        assert!(
            STARTER_CONFIG.contains("`fleet init --full`"),
            "{STARTER_CONFIG}"
        );
        assert!(!STARTER_CONFIG.contains("examples/"), "{STARTER_CONFIG}");
        assert!(FULL_CONFIG.starts_with("# fleet.yaml reference"));
    }

    #[test]
    fn refuses_and_names_everything_that_exists() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("fleet.yaml"), "mine").unwrap();
        fs::create_dir(d.path().join("www")).unwrap();
        match init_in(d.path(), STARTER_CONFIG) {
            Err(InitError::Exists { names, .. }) => assert_eq!(names, ["fleet.yaml", "www/"]),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert_eq!(
            fs::read_to_string(d.path().join("fleet.yaml")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn a_dangling_www_symlink_counts_as_existing() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("nowhere", d.path().join("www")).unwrap();
        assert!(
            matches!(init_in(d.path(), STARTER_CONFIG), Err(InitError::Exists { names, .. }) if names == ["www/"])
        );
        assert!(!d.path().join("fleet.yaml").exists());
    }
}
