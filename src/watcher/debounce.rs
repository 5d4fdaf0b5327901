//! Debouncing: a burst of changes (an editor's save is several events: a
//! temp file, a rename, a touch) becomes one action, taken once the files
//! have been quiet for `quiet`, or at the latest `max` after the first
//! change of the burst (a file rewritten without pause still rolls). Pure:
//! the caller passes the time and sleeps until `due`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Files named in one batch at most; the rest are counted.
const NAMED: usize = 16;

#[derive(Debug)]
pub(crate) struct Debounce {
    quiet: Duration,
    max: Duration,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    first: Instant,
    last: Instant,
    batch: Batch,
}

/// The changes of one burst.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    /// The changed paths, first seen first, without repeats (the first
    /// `NAMED`).
    pub(crate) files: Vec<PathBuf>,
    /// Changes past `files` (not deduplicated: a count, not a list).
    pub(crate) more: usize,
}

impl Debounce {
    /// `max` is at least `quiet`.
    pub(crate) fn new(quiet: Duration, max: Duration) -> Self {
        Debounce {
            quiet,
            max: max.max(quiet),
            pending: None,
        }
    }

    /// A change to `path` at `now`.
    pub(crate) fn change(&mut self, path: PathBuf, now: Instant) {
        let p = self.pending.get_or_insert_with(|| Pending {
            first: now,
            last: now,
            batch: Batch {
                files: Vec::new(),
                more: 0,
            },
        });
        p.last = now;
        if !p.batch.files.contains(&path) {
            if p.batch.files.len() < NAMED {
                p.batch.files.push(path);
            } else {
                p.batch.more += 1;
            }
        }
    }

    /// When the pending batch is due, if there is one.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|p| (p.last + self.quiet).min(p.first + self.max))
    }

    /// The pending batch, if it is due at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> Option<Batch> {
        if self.due().is_some_and(|d| now >= d) {
            self.pending.take().map(|p| p.batch)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nothing_is_due_without_a_change() {
        let mut d = Debounce::new(300 * MS, 3000 * MS);
        assert_eq!(d.due(), None);
        assert_eq!(d.take(Instant::now()), None);
    }

    #[test]
    fn a_burst_becomes_one_batch_after_the_quiet_time() {
        let t = Instant::now();
        let mut d = Debounce::new(300 * MS, 3000 * MS);
        d.change("a.py".into(), t);
        d.change("b.py".into(), t + 100 * MS);
        d.change("a.py".into(), t + 200 * MS);
        assert_eq!(d.due(), Some(t + 500 * MS));
        assert_eq!(d.take(t + 499 * MS), None, "still within the quiet time");
        let b = d.take(t + 500 * MS).expect("due");
        assert_eq!(b.files, [PathBuf::from("a.py"), PathBuf::from("b.py")]);
        assert_eq!(b.more, 0);
        assert_eq!(d.take(t + 10_000 * MS), None, "taken once");
    }

    #[test]
    fn each_change_pushes_the_quiet_time_back() {
        let t = Instant::now();
        let mut d = Debounce::new(300 * MS, 3000 * MS);
        d.change("a.py".into(), t);
        d.change("a.py".into(), t + 250 * MS);
        assert_eq!(d.take(t + 300 * MS), None);
        assert!(d.take(t + 550 * MS).is_some());
    }

    #[test]
    fn a_file_changing_without_pause_is_acted_on_at_max() {
        let t = Instant::now();
        let mut d = Debounce::new(300 * MS, 1000 * MS);
        for i in 0..20 {
            d.change("log.txt".into(), t + i * 100 * MS);
        }
        assert_eq!(d.due(), Some(t + 1000 * MS));
        assert!(d.take(t + 1000 * MS).is_some());
    }

    #[test]
    fn a_change_after_a_batch_starts_a_new_one() {
        let t = Instant::now();
        let mut d = Debounce::new(300 * MS, 3000 * MS);
        d.change("a.py".into(), t);
        assert!(d.take(t + 300 * MS).is_some());
        d.change("b.py".into(), t + 400 * MS);
        assert_eq!(d.due(), Some(t + 700 * MS));
        assert_eq!(
            d.take(t + 700 * MS).expect("due").files,
            [PathBuf::from("b.py")]
        );
    }

    #[test]
    fn past_the_named_files_the_rest_are_counted() {
        let t = Instant::now();
        let mut d = Debounce::new(MS, MS);
        for i in 0..NAMED + 5 {
            d.change(format!("f{i}").into(), t);
        }
        let b = d.take(t + MS).expect("due");
        assert_eq!((b.files.len(), b.more), (NAMED, 5));
    }
}
