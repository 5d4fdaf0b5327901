//! A size-capped log file, rotated once. Every log fleet writes (each
//! backend's output, the supervisor's own log, the balancer's access log)
//! goes through it, so none can fill a disk.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
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
    file: Mutex<Option<(File, u64)>>,
}

impl RotatingFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        RotatingFile {
            path,
            file: Mutex::new(None),
        }
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
