//! The state dir: `fleet.pid` (locked while the supervisor runs), the control
//! socket `fleet.sock`, and `logs/`. One supervisor per state dir.
//!
//! The lock is an advisory `flock` on the pid file held by the supervisor for
//! its whole life, so it vanishes with the process however it dies: a pid file
//! that can be locked is stale by definition, whatever pid it names.
//!
//! # The state dir is fleet's own
//! A supervisor (often root) writes there, so nothing planted in it may
//! redirect a write. `fleet up` ([`StateDir::create`]) refuses, exit 4, a
//! state dir or `logs/` that
//! 1. is a symbolic link, or not a directory;
//! 2. belongs to another user than the one running fleet;
//! 3. is writable by group or others (what was planted while it was cannot
//!    be known, so it is refused, not fixed);
//! 4. holds a symbolic link as `fleet.pid` or in `logs/`, or a `fleet.sock`
//!    that is not a socket (only a stale *socket* is ever removed).
//!
//! A state dir or `logs/` that is merely readable by others (0755, from an
//! older fleet or a `mkdir`) is tightened to 0700 (fixed, not refused: no
//! one else could have written in it). New directories are made 0700.
//! Every file fleet opens in it is opened with `O_NOFOLLOW`
//! ([`NO_FOLLOW`]), so a link planted after the checks fails the open
//! rather than being followed. The other verbs (`status`, `down`, ...)
//! only read the dir and talk to its socket; they too open the pid file
//! with `O_NOFOLLOW` and remove a leftover `fleet.sock` only if it is a
//! socket.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;

/// `custom_flags` for every file fleet opens in its state dir: never
/// through a symbolic link (the open fails with `ELOOP` instead). The same
/// flag on Linux and macOS.
pub(crate) const NO_FOLLOW: i32 = OFlag::O_NOFOLLOW.bits();

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
    /// The state dir is not fleet's own (see the module doc); `problem`
    /// says what is wrong and what to do.
    #[error("refusing state dir {}: {problem}", dir.display())]
    NotOwn { dir: PathBuf, problem: String },
}

impl StateError {
    /// A state dir refused as not fleet's own is exit 4, like one that
    /// cannot be read; everything else is a failure to start.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            StateError::NotOwn { .. } => crate::exit::UNREADABLE,
            _ => crate::exit::FAILURE,
        }
    }
}

/// What [`StateDir::create`] made: the topmost directory that did not exist
/// before, so that a failed `fleet up` can remove it and leave nothing behind.
#[derive(Debug, Default)]
#[must_use = "a failed start-up must undo what it created"]
pub(crate) struct Created(Option<PathBuf>);

impl Created {
    /// After a failed start-up: remove what was created, so a failed `up`
    /// leaves no state dir behind; unless a backend ran and left its log
    /// in `logs` (the evidence of why it failed, for `fleet logs`). The
    /// directory was made by this run and is 0700, so all in it is this run's.
    pub(crate) fn undo(self, logs: &Path) {
        let Some(dir) = self.0 else { return };
        let backend_ran = fs::read_dir(logs).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("backend-"))
        });
        if !backend_ran {
            // remove_dir_all removes a symbolic link itself, never its target.
            let _ = fs::remove_dir_all(dir);
        }
    }
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
    /// Where a new supervisor calls in to take the fleet over (`fleet
    /// upgrade`); there only while an upgrade runs.
    pub(crate) fn handover_socket(&self) -> PathBuf {
        self.root.join("handover.sock")
    }
    pub(crate) fn supervisor_log(&self) -> PathBuf {
        self.logs().join("supervisor.log")
    }

    fn io_err(&self, source: io::Error) -> StateError {
        StateError::Io {
            dir: self.shown(),
            source,
        }
    }

    /// The state dir as an absolute path, for messages ("no fleet is running
    /// in /abs/.fleet"): `root` may be relative (`../../.fleet`, kept short
    /// for the socket's `sun_path`). `..` is resolved by name, which is
    /// right for the paths `discover` builds from the current directory.
    pub(crate) fn shown(&self) -> PathBuf {
        let abs = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        let mut out = PathBuf::new();
        for c in abs.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    out.pop();
                }
                c => out.push(c),
            }
        }
        out
    }

    fn not_own(&self, problem: String) -> StateError {
        StateError::NotOwn {
            dir: self.shown(),
            problem,
        }
    }

    /// Make the state dir ready for a supervisor: create it and its `logs/`
    /// (mode 0700), or check an existing one by the rules of the module doc,
    /// and check the socket path fits. Returns what it created.
    pub(crate) fn create(&self) -> Result<Created, StateError> {
        let created = match fs::symlink_metadata(&self.root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let top = self
                    .root
                    .ancestors()
                    .take_while(|a| !a.as_os_str().is_empty() && fs::symlink_metadata(a).is_err())
                    .last()
                    .map(Path::to_path_buf);
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.root)
                    .map_err(|e| self.io_err(e))?;
                Created(top)
            }
            Err(e) => return Err(self.io_err(e)),
            Ok(_) => Created(None),
        };
        let checked = self.check_own().and_then(|()| {
            let sock = self.socket();
            let len = sock.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(StateError::SocketPathTooLong { path: sock, len });
            }
            Ok(())
        });
        match checked {
            Ok(()) => Ok(created),
            Err(e) => {
                created.undo(&self.logs());
                Err(e)
            }
        }
    }

    /// The rules of the module doc, for a state dir that exists: its own
    /// directory and `logs/` (created here when missing), then what is in them.
    fn check_own(&self) -> Result<(), StateError> {
        self.check_dir(&self.root, "it")?;
        match fs::symlink_metadata(self.logs()) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .mode(0o700)
                .create(self.logs())
                .map_err(|e| self.io_err(e))?,
            Err(e) => return Err(self.io_err(e)),
            Ok(_) => {}
        }
        self.check_dir(&self.logs(), "its logs/")?;
        match fs::symlink_metadata(self.pid_file()) {
            Ok(m) if !m.file_type().is_file() => {
                return Err(self.not_own(format!(
                    "its fleet.pid is {}, not a file; remove it",
                    kind(&m)
                )));
            }
            _ => {}
        }
        match fs::symlink_metadata(self.socket()) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(self.not_own(format!(
                    "its fleet.sock is {}, not a socket, and fleet removes only a stale socket there; move it away",
                    kind(&m)
                )));
            }
            _ => {}
        }
        let entries = fs::read_dir(self.logs()).map_err(|e| self.io_err(e))?;
        for entry in entries {
            let entry = entry.map_err(|e| self.io_err(e))?;
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                return Err(self.not_own(format!(
                    "logs/{} is a symbolic link, and fleet writes no log through a link; remove it",
                    entry.file_name().to_string_lossy()
                )));
            }
        }
        Ok(())
    }

    fn owned_by(&self, name: &str, uid: u32, me: u32) -> StateError {
        self.not_own(format!(
            "{name} belongs to uid {uid}, not to uid {me} that runs fleet; \
             run fleet as its owner, or pass another --state-dir"
        ))
    }

    /// `dir` is a real directory of ours that no one else may write;
    /// readable by others, it is tightened to 0700. `name` says which.
    fn check_dir(&self, dir: &Path, name: &str) -> Result<(), StateError> {
        let lmeta = fs::symlink_metadata(dir).map_err(|e| self.io_err(e))?;
        if lmeta.file_type().is_symlink() {
            let target = fs::read_link(dir)
                .map(|t| format!(" (to {})", t.display()))
                .unwrap_or_default();
            return Err(self.not_own(format!(
                "{name} is a symbolic link{target}, and fleet keeps its state only in a directory of its own; \
                 remove the link or pass another --state-dir"
            )));
        }
        if !lmeta.is_dir() {
            return Err(self.not_own(format!(
                "{name} is {}, not a directory; remove it or pass another --state-dir",
                kind(&lmeta)
            )));
        }
        // The owner first, from lstat: another user's
        // 0700 dir cannot even be opened, and that is what to say about it.
        let me = nix::unistd::geteuid().as_raw();
        if lmeta.uid() != me {
            return Err(self.owned_by(name, lmeta.uid(), me));
        }
        // Then checked and fixed through one descriptor, so what is checked
        // is what is changed.
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(NO_FOLLOW | OFlag::O_DIRECTORY.bits())
            .open(dir)
            .map_err(|e| self.io_err(e))?;
        let meta = handle.metadata().map_err(|e| self.io_err(e))?;
        if meta.uid() != me {
            return Err(self.owned_by(name, meta.uid(), me));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(self.not_own(format!(
                "{name} is writable by group or others (mode {mode:04o}); \
                 remove it (or check nothing was planted in it and `chmod 700` it)"
            )));
        }
        if mode & 0o077 != 0 {
            handle
                .set_permissions(fs::Permissions::from_mode(0o700))
                .map_err(|e| self.io_err(e))?;
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
            .mode(0o600)
            .custom_flags(NO_FOLLOW)
            .open(&path)
            .map_err(|e| self.io_err(e))?;
        let mut old = String::new();
        let _ = file.read_to_string(&mut old);
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StateError::AlreadyRunning {
                    dir: self.shown(),
                    pid: old.trim().to_string(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(self.io_err(e)),
        }
        let stale = old.trim().to_string();
        let had_socket = self.remove_stale_socket()?;
        file.set_len(0).map_err(|e| self.io_err(e))?;
        file.rewind().map_err(|e| self.io_err(e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| self.io_err(e))?;
        let note = (!stale.is_empty() || had_socket).then(|| {
            format!(
                "removed stale state from a supervisor that is gone (pid {}) in {}",
                if stale.is_empty() { "unknown" } else { &stale },
                self.shown().display()
            )
        });
        Ok((PidLock { file, path }, note))
    }

    /// Who holds this state dir, without taking it. If nobody does but a pid
    /// file or socket is left over, they are removed and described in the
    /// returned note.
    pub(crate) fn probe(&self) -> (Holder, Option<StaleNote>) {
        let path = self.pid_file();
        let mut file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(NO_FOLLOW)
            .open(&path)
        {
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
                let _ = self.remove_stale_socket();
                (
                    Holder::Free,
                    Some(format!(
                        "removed stale state of a supervisor that is gone (pid {}) in {}",
                        old.trim(),
                        self.shown().display()
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
            Ok(m) if m.file_type().is_socket() => {
                let _ = fs::remove_file(&sock);
                (
                    Holder::Free,
                    Some(format!(
                        "removed a stale control socket in {}",
                        self.shown().display()
                    )),
                )
            }
            // Not ours to remove; `fleet up` refuses to start beside it.
            Ok(m) => (
                Holder::Free,
                Some(format!(
                    "{} is {}, not a socket: left in place",
                    sock.display(),
                    kind(&m)
                )),
            ),
        }
    }

    /// Remove a dead supervisor's `fleet.sock`, only if it is a socket;
    /// true if there was one. Anything else there is refused, never removed.
    fn remove_stale_socket(&self) -> Result<bool, StateError> {
        let sock = self.socket();
        match fs::symlink_metadata(&sock) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io_err(e)),
            Ok(m) if m.file_type().is_socket() => {
                fs::remove_file(&sock).map_err(|e| self.io_err(e))?;
                Ok(true)
            }
            Ok(m) => Err(self.not_own(format!(
                "its fleet.sock is {}, not a socket, and fleet removes only a stale socket there; move it away",
                kind(&m)
            ))),
        }
    }
}

/// What a file is, for a message: "a symbolic link", "a regular file", ...
fn kind(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

impl PidLock {
    /// Remove the pid file; the lock itself goes with the file handle.
    pub(crate) fn release(self) {
        let _ = fs::remove_file(&self.path);
        drop(self.file);
    }

    /// The locked file, to hand to a new supervisor (`fleet upgrade`): a
    /// `flock` belongs to the open file, so a copy of the descriptor in
    /// another process holds the same lock, with no moment where it is free.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The lock received from the supervisor this one takes over from.
    pub(crate) fn adopt(file: File, path: PathBuf) -> Self {
        PidLock { file, path }
    }

    /// Write our pid over the old one's (once this supervisor holds the fleet).
    pub(crate) fn write_pid(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        writeln!(self.file, "{}", std::process::id())
    }

    /// Let go of the lock but leave the pid file: the supervisor that took
    /// over holds the same lock and has written its pid there.
    pub(crate) fn hand_over(self) {
        drop(self.file);
    }
}
