//! Admission: at most `max_connections` clients at once, and when full, the
//! connection idle the longest is closed to let a new client in.
//!
//! "Idle" means waiting for a request with nothing received yet: between
//! requests on a kept-alive connection (http mode), or before the first byte
//! (both modes). A connection registers itself while idle and deregisters
//! when bytes arrive, so a request in flight is never cut for room.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The idle connections, keyed by when they became idle (oldest first).
#[derive(Debug, Default)]
pub(crate) struct Admission {
    idle: Mutex<BTreeMap<u64, Arc<Notify>>>,
    seq: AtomicU64,
}

impl Admission {
    /// Mark a connection idle until the returned guard drops; `evict` is
    /// notified if the balancer needs its slot.
    pub(crate) fn waiting<'a>(&'a self, evict: &Arc<Notify>) -> WaitingGuard<'a> {
        let key = self.seq.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, evict.clone());
        WaitingGuard { table: self, key }
    }

    /// Ask the connection idle the longest to close; false if none is idle.
    pub(crate) fn evict_oldest(&self) -> bool {
        let oldest = self.lock().pop_first();
        match oldest {
            Some((_, evict)) => {
                // `notify_one` keeps the wake-up even if the connection is
                // between polls, so it cannot be lost.
                evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        self.idle
            .lock()
            .expect("admission lock is never poisoned: no panics while held")
    }
}

pub(crate) struct WaitingGuard<'a> {
    table: &'a Admission,
    key: u64,
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.table.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_longest_waiting_connection_is_evicted_first() {
        let a = Admission::default();
        let (first, second) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let _g1 = a.waiting(&first);
        let _g2 = a.waiting(&second);
        assert!(a.evict_oldest());
        // The stored permit makes this complete at once.
        first.notified().await;
        assert!(a.evict_oldest());
        second.notified().await;
        assert!(!a.evict_oldest(), "nothing idle is left");
    }

    #[test]
    fn a_busy_connection_is_never_evicted() {
        let a = Admission::default();
        let n = Arc::new(Notify::new());
        drop(a.waiting(&n));
        assert!(
            !a.evict_oldest(),
            "it left the idle set when its request came"
        );
    }
}
