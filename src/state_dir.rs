//! The state dir: `fleet.pid` (locked while the supervisor runs), the control
//! socket `fleet.sock`, and `logs/`. One supervisor per state dir.
//!
//! The lock is an advisory `flock` on the pid file held by the supervisor for
//! its whole life, so it vanishes with the process however it dies: a pid file
//! that can be locked is stale by definition, whatever pid it names.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Default state dir, relative to where `fleet up` runs.
pub(crate) const DEFAULT: &str = ".fleet";
/// Unix socket paths must fit in `sun_path` (104 bytes on macOS, 108 on Linux).
const MAX_SOCKET_PATH: usize = 103;

#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    root: PathBuf,
}

/// Who holds the state dir right now.
#[derive(Debug)]
pub(crate) enum Holder {
    /// A live supervisor holds the lock.
    Running { pid: Option<u32> },
    /// Nothing holds it.
    Free,
    /// It cannot be told: the pid file or socket exists but cannot be read
    /// (another user's fleet, a file where the dir should be, ...). Never
    /// "no fleet": one may well be running.
    Unreadable { path: PathBuf, error: io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "a fleet is already running from state dir {dir} (pid {pid}); stop it with `fleet down` or use another --state-dir"
    )]
    AlreadyRunning { dir: PathBuf, pid: String },
    #[error("state dir {}", dir.display())]
    Io { dir: PathBuf, source: io::Error },
    #[error(
        "control socket path {path} is {len} bytes, longer than the {MAX_SOCKET_PATH} a Unix socket allows; use a shorter --state-dir"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
}

/// What stale state (a dead supervisor's pid file or socket) was cleaned up
/// on the way, said for the user: a note, never an error.
pub(crate) type StaleNote = String;

/// The supervisor's claim on a state dir; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct PidLock {
    file: File,
    path: PathBuf,
}

impl StateDir {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
    pub(crate) fn pid_file(&self) -> PathBuf {
        self.root.join("fleet.pid")
    }
    pub(crate) fn socket(&self) -> PathBuf {
        self.root.join("fleet.sock")
    }
    pub(crate) fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub(crate) fn backend_log(&self, port: u16) -> PathBuf {
        self.logs().join(format!("backend-{port}.log"))
    }
    pub(crate) fn supervisor_log(&self) -> PathBuf {
        self.logs().join("supervisor.log")
    }

    fn io_err(&self, source: io::Error) -> StateError {
        StateError::Io {
            dir: self.root.clone(),
            source,
        }
    }

    /// Create the dir (mode 0700) and its `logs/`, and check the socket path fits.
    pub(crate) fn create(&self) -> Result<(), StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.logs())
            .map_err(|e| self.io_err(e))?;
        // An existing dir keeps its mode under DirBuilder; tighten it.
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(|e| self.io_err(e))?;
        let sock = self.socket();
        let len = sock.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(StateError::SocketPathTooLong { path: sock, len });
        }
        Ok(())
    }

    /// Take the supervisor lock and write our pid. A stale pid file or socket
    /// left by a crashed supervisor is reported (returned) and removed.
    pub(crate) fn lock(&self) -> Result<(PidLock, Option<StaleNote>), StateError> {
        let path = self.pid_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| self.io_err(e))?;
        let mut old = String::new();
        let _ = file.read_to_string(&mut old);
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StateError::AlreadyRunning {
                    dir: self.root.clone(),
                    pid: old.trim().to_string(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(self.io_err(e)),
        }
        let stale = old.trim().to_string();
        let had_socket = self.socket().exists();
        let _ = fs::remove_file(self.socket());
        file.set_len(0).map_err(|e| self.io_err(e))?;
        file.rewind().map_err(|e| self.io_err(e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| self.io_err(e))?;
        let note = (!stale.is_empty() || had_socket).then(|| {
            format!(
                "removed stale state from a supervisor that is gone (pid {}) in {}",
                if stale.is_empty() { "unknown" } else { &stale },
                self.root.display()
            )
        });
        Ok((PidLock { file, path }, note))
    }

    /// Who holds this state dir, without taking it. If nobody does but a pid
    /// file or socket is left over, they are removed and described in the
    /// returned note.
    pub(crate) fn probe(&self) -> (Holder, Option<StaleNote>) {
        let path = self.pid_file();
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return (Holder::Unreadable { path, error: e }, None);
            }
            Err(_) => return self.probe_socket(),
        };
        let mut old = String::new();
        if let Err(e) = file.read_to_string(&mut old) {
            return (Holder::Unreadable { path, error: e }, None);
        }
        let pid = old.trim().parse().ok();
        match file.try_lock() {
            Err(fs::TryLockError::WouldBlock) => (Holder::Running { pid }, None),
            Err(fs::TryLockError::Error(e)) => (Holder::Unreadable { path, error: e }, None),
            Ok(()) => {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_file(self.socket());
                (
                    Holder::Free,
                    Some(format!(
                        "removed stale state of a supervisor that is gone (pid {}) in {}",
                        old.trim(),
                        self.root.display()
                    )),
                )
            }
        }
    }

    /// No pid file: free, unless a socket is left over (removed) or the
    /// socket's dir cannot be read.
    fn probe_socket(&self) -> (Holder, Option<StaleNote>) {
        let sock = self.socket();
        match fs::symlink_metadata(&sock) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Holder::Free, None),
            Err(e) => (
                Holder::Unreadable {
                    path: sock,
                    error: e,
                },
                None,
            ),
            Ok(_) => {
                let _ = fs::remove_file(&sock);
                (
                    Holder::Free,
                    Some(format!(
                        "removed a stale control socket in {}",
                        self.root.display()
                    )),
                )
            }
        }
    }
}

impl PidLock {
    /// Remove the pid file; the lock itself goes with the file handle.
    pub(crate) fn release(self) {
        let _ = fs::remove_file(&self.path);
        drop(self.file);
    }
}
