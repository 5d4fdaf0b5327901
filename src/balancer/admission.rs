//! Admission: at most `max_connections` clients at once over the whole
//! balancer, and when full, an idle connection is closed to let a new
//! client in.
//!
//! "Idle" means waiting for a request with nothing received yet: between
//! requests on a kept-alive connection (http mode), or before the first byte
//! (both modes). A connection registers itself while idle and deregisters
//! when bytes arrive, so a request in flight is never cut for room.
//!
//! Per engine thread: each thread keeps its own idle set ([`Admission`]), so
//! the per-request register and deregister take a lock no other thread
//! takes (uncontended: no futex, no wake-up), except a full balancer's
//! accept looking for room. The cap itself is one fleet-wide count
//! ([`Limit`]): an atomic added to per connection, not per request. When
//! full, a thread closes its own longest-idle connection, else the
//! longest-idle one of another thread (the only cross-thread wake-up, and
//! only at the cap).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// One engine thread's idle connections, keyed by when they became idle
/// (oldest first).
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

/// The fleet-wide cap (`balancer.max_connections`) and every engine
/// thread's idle set, for making room when full.
#[derive(Debug)]
pub(crate) struct Limit {
    max: usize,
    /// Clients admitted and not yet gone.
    open: AtomicUsize,
    /// Accept loops waiting for a client to go ([`Limit::enter_within`]):
    /// only then does a leaving client notify.
    waiting: AtomicUsize,
    freed: Notify,
    threads: Box<[Arc<Admission>]>,
}

impl Limit {
    pub(crate) fn new(max: usize, threads: usize) -> Limit {
        Limit {
            max,
            open: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
            threads: (0..threads.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    /// Engine thread `i`'s idle set.
    pub(crate) fn thread(&self, i: usize) -> Arc<Admission> {
        self.threads[i % self.threads.len()].clone()
    }

    /// Admit one client if below the cap.
    pub(crate) fn try_enter(self: &Arc<Self>) -> Option<Entry> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Entry(self.clone()))
    }

    /// Admit one client once another leaves, waiting at most `patience`.
    pub(crate) async fn enter_within(self: &Arc<Self>, patience: Duration) -> Option<Entry> {
        let freed = self.freed.notified();
        tokio::pin!(freed);
        // Registered before the count is looked at, so a client leaving in
        // between still wakes this one.
        freed.as_mut().enable();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut entry = self.try_enter();
        if entry.is_none() {
            let _ = tokio::time::timeout(patience, freed).await;
            entry = self.try_enter();
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        entry
    }

    /// Close the longest-idle connection of thread `me`, else of another
    /// thread; false if no connection anywhere is idle.
    pub(crate) fn make_room(&self, me: usize) -> bool {
        let n = self.threads.len();
        (0..n).any(|k| self.threads[(me + k) % n].evict_oldest())
    }
}

/// One admitted client; dropping it lets the next one in.
#[derive(Debug)]
pub(crate) struct Entry(Arc<Limit>);

impl Drop for Entry {
    fn drop(&mut self) {
        let limit = &self.0;
        limit.open.fetch_sub(1, Ordering::SeqCst);
        if limit.waiting.load(Ordering::SeqCst) > 0 {
            limit.freed.notify_waiters();
        }
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

    #[test]
    fn the_cap_counts_clients_of_every_thread() {
        let limit = Arc::new(Limit::new(2, 4));
        let a = limit.try_enter().expect("below the cap");
        let _b = limit.try_enter().expect("below the cap");
        assert!(limit.try_enter().is_none(), "at the cap");
        drop(a);
        assert!(limit.try_enter().is_some(), "one left, one more may enter");
    }

    #[tokio::test]
    async fn a_waiting_accept_is_let_in_when_a_client_leaves() {
        let limit = Arc::new(Limit::new(1, 1));
        let first = limit.try_enter().expect("below the cap");
        let waiter = {
            let limit = limit.clone();
            tokio::spawn(async move { limit.enter_within(Duration::from_secs(60)).await })
        };
        // Let the waiter register, then leave: it must not need the minute.
        while limit.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        drop(first);
        let entered = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by the leaving client")
            .expect("the task ran");
        assert!(entered.is_some());
    }

    #[test]
    fn a_full_thread_closes_another_threads_idle_connection() {
        let limit = Limit::new(1, 3);
        let n = Arc::new(Notify::new());
        let other = limit.thread(2);
        let _idle = other.waiting(&n);
        assert!(limit.make_room(0), "thread 0 has none idle; thread 2 has");
        assert!(!limit.make_room(0), "none is left anywhere");
    }
}
