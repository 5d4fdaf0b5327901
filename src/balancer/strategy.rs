//! How a request (http mode) or a connection (tcp mode) chooses its backend.
//!
//! Selection is kept apart from health filtering, as pingora's `select_with`
//! does: `Pool::pick` first narrows the pool to the *eligible* backends
//! (routable, not yet tried for this request), and only then asks the
//! strategy to choose among them. A strategy therefore never sees a dead
//! backend, and a dead backend's share is spread over the living instead of
//! landing on its neighbour.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

// The strategy is a setting (`balancer.strategy`), so the enum and its names
// live in `config`; how each one chooses lives here.
pub(crate) use crate::config::Strategy;

/// What a strategy knows of a backend. A trait, not `pool::Slot`, so this
/// module depends on nothing of the balancer's (`pool` uses it, not the
/// other way round) and its tests choose among plain values.
pub(crate) trait Candidate {
    /// Its in-flight work (least-connections and power-of-two compare it).
    fn active(&self) -> u64;
    /// Its port (ip-hash ranks the backends by it).
    fn port(&self) -> u16;
}

impl Strategy {
    /// Choose one of `eligible` for a request from `client` (`None` when
    /// there is none). `turn` is the pool's shared round-robin cursor.
    ///
    /// `eligible` is walked (to count it, then to choose) rather than
    /// collected, so a choice allocates nothing. A backend that leaves
    /// rotation between two walks can make the chosen position fall off the
    /// end; the first eligible backend is taken then.
    pub(crate) fn choose<'a, C, I>(
        self,
        eligible: I,
        client: IpAddr,
        turn: &AtomicUsize,
    ) -> Option<&'a C>
    where
        C: Candidate + 'a,
        I: Iterator<Item = &'a C> + Clone,
    {
        self.choose_from(eligible, client, || turn.fetch_add(1, Ordering::Relaxed))
    }

    /// Choose again after the first choice was passed over (slow start).
    /// Not from the shared cursor: advanced twice for one request, its
    /// sequence would hand the passed-over share to the backend after it;
    /// from a random start instead, so it is spread evenly.
    pub(crate) fn choose_instead<'a, C, I>(self, eligible: I, client: IpAddr) -> Option<&'a C>
    where
        C: Candidate + 'a,
        I: Iterator<Item = &'a C> + Clone,
    {
        self.choose_from(eligible, client, || fastrand::usize(..))
    }

    /// `choose`, with where round-robin (and least-connections' tie-break)
    /// starts given.
    fn choose_from<'a, C, I>(
        self,
        eligible: I,
        client: IpAddr,
        start: impl FnOnce() -> usize,
    ) -> Option<&'a C>
    where
        C: Candidate + 'a,
        I: Iterator<Item = &'a C> + Clone,
    {
        let n = eligible.clone().count();
        if n == 0 {
            return None;
        }
        let chosen = match self {
            Strategy::RoundRobin => eligible.clone().nth(start() % n),
            Strategy::LeastConnections => {
                // From a rotating start, so ties are spread evenly.
                let start = start() % n;
                eligible
                    .clone()
                    .skip(start)
                    .chain(eligible.clone().take(start))
                    .min_by_key(|s| s.active())
            }
            Strategy::PowerOfTwo if n == 1 => eligible.clone().next(),
            Strategy::PowerOfTwo => {
                let a = fastrand::usize(..n);
                // A second, different position: offset by 1..n.
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                match (eligible.clone().nth(a), eligible.clone().nth(b)) {
                    (Some(a), Some(b)) => Some(if b.active() < a.active() { b } else { a }),
                    (a, b) => a.or(b),
                }
            }
            Strategy::IpHash => eligible
                .clone()
                .max_by_key(|s| rendezvous(client, s.port())),
        };
        chosen.or_else(|| eligible.clone().next())
    }
}

/// The rendezvous weight of (client, backend): each client ranks the
/// backends by it and takes the highest eligible one.
fn rendezvous(client: IpAddr, port: u16) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    client.hash(&mut h);
    port.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend as a strategy sees it.
    struct Fake {
        port: u16,
        active: u64,
    }

    impl Candidate for Fake {
        fn active(&self) -> u64 {
            self.active
        }
        fn port(&self) -> u16 {
            self.port
        }
    }

    /// `n` idle backends on ports 9000, 9001, ...
    fn slots(n: u16) -> Vec<Fake> {
        (0..n)
            .map(|i| Fake {
                port: 9000 + i,
                active: 0,
            })
            .collect()
    }

    fn counts(
        s: Strategy,
        slots: &[Fake],
        rounds: usize,
        client: impl Fn(usize) -> IpAddr,
    ) -> Vec<usize> {
        let turn = AtomicUsize::new(0);
        let mut c = vec![0; slots.len()];
        for r in 0..rounds {
            let chosen = s.choose(slots.iter(), client(r), &turn).expect("one");
            c[usize::from(chosen.port - 9000)] += 1;
        }
        c
    }

    fn ip(i: usize) -> IpAddr {
        IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])
    }

    #[test]
    fn names_round_trip() {
        for name in Strategy::NAMES {
            assert_eq!(Strategy::from_name(name).map(Strategy::name), Some(*name));
        }
        assert_eq!(Strategy::from_name("random"), None);
    }

    #[test]
    fn round_robin_gives_each_backend_an_equal_share() {
        assert_eq!(counts(Strategy::RoundRobin, &slots(4), 400, ip), [100; 4]);
    }

    #[test]
    fn least_connections_picks_the_least_busy_backend() {
        let mut s = slots(3);
        s[0].active = 5;
        s[2].active = 1;
        assert_eq!(counts(Strategy::LeastConnections, &s, 50, ip), [0, 50, 0]);
    }

    #[test]
    fn least_connections_spreads_ties_evenly() {
        assert_eq!(
            counts(Strategy::LeastConnections, &slots(4), 400, ip),
            [100; 4]
        );
    }

    #[test]
    fn power_of_two_avoids_the_busiest_backend_and_spreads_the_rest() {
        let mut s = slots(4);
        s[3].active = 10;
        let c = counts(Strategy::PowerOfTwo, &s, 3000, ip);
        assert_eq!(c[3], 0, "the busiest of any pair is never chosen: {c:?}");
        for n in &c[..3] {
            assert!((800..=1200).contains(n), "uneven spread {c:?}");
        }
    }

    #[test]
    fn no_eligible_backend_is_no_choice() {
        let turn = AtomicUsize::new(0);
        for s in [
            Strategy::RoundRobin,
            Strategy::LeastConnections,
            Strategy::PowerOfTwo,
            Strategy::IpHash,
        ] {
            let none: [Fake; 0] = [];
            assert!(s.choose(none.iter(), ip(1), &turn).is_none(), "{s:?}");
        }
    }

    #[test]
    fn power_of_two_with_one_backend_takes_it() {
        assert_eq!(counts(Strategy::PowerOfTwo, &slots(1), 10, ip), [10]);
    }

    #[test]
    fn ip_hash_keeps_a_client_on_one_backend_and_spreads_clients() {
        let s = slots(4);
        let same = counts(Strategy::IpHash, &s, 100, |_| ip(7));
        assert_eq!(same.iter().filter(|&&n| n > 0).count(), 1, "{same:?}");
        let many = counts(Strategy::IpHash, &s, 4000, ip);
        for n in &many {
            assert!((700..=1300).contains(n), "uneven spread {many:?}");
        }
    }

    #[test]
    fn ip_hash_moves_only_the_clients_of_a_removed_backend() {
        let s = slots(4);
        let turn = AtomicUsize::new(0);
        let port = |of: &[Fake], i| {
            let chosen = Strategy::IpHash.choose(of.iter(), ip(i), &turn);
            chosen.expect("one").port
        };
        for i in 0..1000 {
            let before = port(&s, i);
            let after = port(&s[..3], i);
            if before != 9003 {
                assert_eq!(before, after, "client {i} moved though its backend stayed");
            }
        }
    }
}
