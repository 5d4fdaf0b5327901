//! A size-capped log file, rotated once. Every log fleet writes (each
//! backend's output, the supervisor's own log, the balancer's access log)
//! goes through it, so none can fill a disk.
//!
//! The logs in the state dir are opened with `O_NOFOLLOW`: a symbolic link
//! planted as `supervisor.log` or `backend-9002.log` fails the open (the
//! write is dropped) and is never followed (`state_dir`). The access log is
//! a path the user chose, anywhere: it follows links like any path.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// Rotate a log past this size (the previous file is kept as `.1`).
pub(crate) const MAX_LOG_BYTES: u64 = 1024 * 1024;

/// A log file capped at `MAX_LOG_BYTES`: a write that would pass the cap
/// first renames the file to `<name>.1` (replacing the previous one) and
/// starts a new one, so the pair never holds more than twice the cap.
/// Opened lazily (and again after a rotation); a write that fails is dropped,
/// because a full disk must not stop the fleet.
#[derive(Debug)]
pub(crate) struct RotatingFile {
    path: PathBuf,
    /// `custom_flags` for the open: `O_NOFOLLOW` in the state dir, 0 elsewhere.
    flags: i32,
    file: Mutex<Option<(File, u64)>>,
}

impl RotatingFile {
    /// A log in the state dir: never opened through a symbolic link.
    pub(crate) fn new(path: PathBuf) -> Self {
        RotatingFile {
            path,
            flags: crate::state_dir::NO_FOLLOW,
            file: Mutex::new(None),
        }
    }

    /// A log at a path the user chose (`balancer.access_log`), which may
    /// be a link like any path they name.
    pub(crate) fn at_user_path(path: PathBuf) -> Self {
        RotatingFile {
            path,
            flags: 0,
            file: Mutex::new(None),
        }
    }

    /// Where this file is written, for messages.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Append `bytes` (whole lines: a rotation never splits one).
    pub(crate) fn append(&self, bytes: &[u8]) {
        let mut guard = self
            .file
            .lock()
            .expect("log lock is never poisoned: no panics while held");
        if guard
            .as_ref()
            .is_some_and(|(_, size)| size + bytes.len() as u64 > MAX_LOG_BYTES)
        {
            *guard = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = fs::rename(&self.path, old);
        }
        if guard.is_none() {
            let Ok(f) = OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(self.flags)
                .open(&self.path)
            else {
                return;
            };
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            *guard = Some((f, size));
        }
        if let Some((f, size)) = guard.as_mut()
            && f.write_all(bytes).is_ok()
        {
            *size += bytes.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_in_the_state_dir_is_never_written_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let log = dir.path().join("supervisor.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        RotatingFile::new(log.clone()).append(b"a log line\n");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        // The user's own access log path may be a link.
        RotatingFile::at_user_path(log).append(b"a log line\n");
        assert_eq!(
            fs::read_to_string(&victim).unwrap(),
            "precious\na log line\n"
        );
    }
}
