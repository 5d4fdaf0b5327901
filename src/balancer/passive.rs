//! Passive health that needs evidence: when failed requests take a backend
//! out of rotation. Pure: no I/O, no tokio, `now` is a parameter.
//!
//! Two kinds of failure, two rules (both engines):
//! - A refused or reset *connect* takes the backend out at once
//!   (`balancer::connect`): nothing listens there.
//! - A request that fails *after it was written* (the backend closed or
//!   reset the connection before a response head, no head within
//!   `response_timeout`, a malformed response) is one *strike*: it may be
//!   the request's fault (a URL that crashes the handler), not the
//!   backend's. Only `eject_after` strikes in a row, the last within
//!   `eject_window` of the first, take the backend out (Envoy's
//!   `consecutive_5xx`, HAProxy's `observe layer7` + `error-limit`); any
//!   response head in between ends the run.
//!
//! Two limits keep one bad input from emptying the rotation: an ejection by
//! strikes happens only while the backends out of rotation (for any reason)
//! stay within `max_ejection_percent` of the fleet and at least one other is
//! routable (`may_eject`, Envoy's `max_ejection_percent`); and one request
//! ejects at most one backend (the engines keep that count, and retry a
//! request that failed after being written at most once).
//!
//! ```text
//!            strike                    strike (within the window, below the limit)
//!   Clear ──────────▶ Striking{1} ──────────────▶ Striking{n+1}
//!     ▲                   │ │  strike after the window: Striking{1} (a new run)
//!     │  answered         │ │  strike reaching the limit: Eject (the state stays
//!     └───────────────────┘ │  at the limit until the ejection happens)
//!     ▲      ejected        │
//!     └─────────────────────┘
//! ```
//!
//! An ejected backend comes back as after any passive failure: when its
//! owner's health probes pass `health.rise` times (`supervisor::state`).

use std::time::Instant;

use tracing::trace;

use crate::config::PassiveHealth;

/// One backend's current run of failed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Strikes {
    /// No failure since the last response (or ever).
    #[default]
    Clear,
    /// `count` failed requests in a row, the first at `since`.
    Striking { count: u32, since: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A request failed after it was written.
    Strike,
    /// The backend sent a response head.
    Answered,
    /// The backend was taken out of rotation for its strikes.
    Ejected,
}

/// What the balancer should do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    /// Enough evidence: take it out of rotation, if `may_eject` allows.
    Eject,
}

/// The one transition function.
pub(crate) fn step(s: Strikes, ev: Event, now: Instant, p: &PassiveHealth) -> (Strikes, Verdict) {
    use Strikes::{Clear, Striking};
    let limit = |count: u32, since: Instant| {
        let s = Striking { count, since };
        if count >= p.eject_after {
            (s, Verdict::Eject)
        } else {
            (s, Verdict::Keep)
        }
    };
    match (s, ev) {
        // Clear -> Striking (the first failure; Eject if one is the limit)
        (Clear, Event::Strike) => limit(1, now),
        // Striking -> Striking (a new run: the last one is older than the window)
        (Striking { since, .. }, Event::Strike)
            if now.saturating_duration_since(since) > p.eject_window =>
        {
            limit(1, now)
        }
        // Striking -> Striking (one more within the window; Eject at the limit)
        (Striking { count, since }, Event::Strike) => limit(count.saturating_add(1), since),
        // Clear | Striking -> Clear (it answered: the run is over)
        (_, Event::Answered) => (Clear, Verdict::Keep),
        // Striking -> Clear (out of rotation; it starts afresh when back)
        (Striking { .. }, Event::Ejected) => (Clear, Verdict::Keep),
        (Clear, Event::Ejected) => {
            trace!(target: "balancer", "ejected with no strikes: nothing to forget");
            (Clear, Verdict::Keep)
        }
    }
}

/// May one more of `total` backends leave rotation for its strikes, when
/// `out` of them are out already? Only while the result stays within
/// `max_percent` of the fleet and leaves another backend routable: a fleet
/// of one is never emptied by strikes, and `0` turns ejection off.
pub(crate) fn may_eject(total: usize, out: usize, max_percent: u8) -> bool {
    let after = out + 1;
    after < total && after * 100 <= total * usize::from(max_percent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> PassiveHealth {
        PassiveHealth {
            eject_after: 3,
            eject_window: Duration::from_secs(10),
            max_ejection_percent: 50,
        }
    }

    /// Feed `n` strikes `gap` apart from `t0`.
    fn strikes(n: u32, t0: Instant, gap: Duration) -> (Strikes, Verdict) {
        let mut s = (Strikes::Clear, Verdict::Keep);
        for i in 0..n {
            s = step(s.0, Event::Strike, t0 + gap * i, &policy());
        }
        s
    }

    #[test]
    fn clear_to_striking_on_the_first_failure() {
        let t0 = Instant::now();
        assert_eq!(
            step(Strikes::Clear, Event::Strike, t0, &policy()),
            (
                Strikes::Striking {
                    count: 1,
                    since: t0
                },
                Verdict::Keep
            )
        );
    }

    #[test]
    fn clear_to_eject_on_the_first_failure_when_the_limit_is_one() {
        let t0 = Instant::now();
        let p = PassiveHealth {
            eject_after: 1,
            ..policy()
        };
        assert_eq!(
            step(Strikes::Clear, Event::Strike, t0, &p).1,
            Verdict::Eject
        );
    }

    #[test]
    fn striking_to_striking_below_the_limit() {
        let t0 = Instant::now();
        assert_eq!(
            strikes(2, t0, Duration::from_secs(1)),
            (
                Strikes::Striking {
                    count: 2,
                    since: t0
                },
                Verdict::Keep
            )
        );
    }

    #[test]
    fn striking_to_eject_at_the_limit_within_the_window() {
        let t0 = Instant::now();
        assert_eq!(
            strikes(3, t0, Duration::from_secs(5)),
            (
                Strikes::Striking {
                    count: 3,
                    since: t0
                },
                Verdict::Eject
            )
        );
    }

    #[test]
    fn striking_starts_a_new_run_after_the_window() {
        let t0 = Instant::now();
        // Three strikes, but the third is 12 s after the first: a new run.
        let (s, v) = strikes(3, t0, Duration::from_secs(6));
        assert_eq!(v, Verdict::Keep);
        assert_eq!(
            s,
            Strikes::Striking {
                count: 1,
                since: t0 + Duration::from_secs(12)
            }
        );
    }

    #[test]
    fn striking_to_clear_on_an_answer() {
        let t0 = Instant::now();
        let (s, _) = strikes(2, t0, Duration::ZERO);
        assert_eq!(
            step(s, Event::Answered, t0, &policy()),
            (Strikes::Clear, Verdict::Keep)
        );
    }

    #[test]
    fn clear_stays_clear_on_an_answer() {
        let t0 = Instant::now();
        assert_eq!(
            step(Strikes::Clear, Event::Answered, t0, &policy()),
            (Strikes::Clear, Verdict::Keep)
        );
    }

    #[test]
    fn striking_at_the_limit_asks_again_on_the_next_strike_when_spared() {
        // The budget refused the ejection: the state stays at the limit, and
        // the next strike within the window asks again.
        let t0 = Instant::now();
        let (s, v) = strikes(4, t0, Duration::from_secs(1));
        assert_eq!(v, Verdict::Eject);
        assert_eq!(
            s,
            Strikes::Striking {
                count: 4,
                since: t0
            }
        );
    }

    #[test]
    fn striking_to_clear_once_ejected() {
        let t0 = Instant::now();
        let (s, _) = strikes(3, t0, Duration::ZERO);
        assert_eq!(
            step(s, Event::Ejected, t0, &policy()),
            (Strikes::Clear, Verdict::Keep)
        );
        assert_eq!(
            step(Strikes::Clear, Event::Ejected, t0, &policy()),
            (Strikes::Clear, Verdict::Keep)
        );
    }

    #[test]
    fn ejection_keeps_within_the_share_and_never_empties_the_rotation() {
        // Half of four: the first two may go, a third may not.
        assert!(may_eject(4, 0, 50));
        assert!(may_eject(4, 1, 50));
        assert!(!may_eject(4, 2, 50));
        // A fleet of one or two: never the last routable backend.
        assert!(!may_eject(1, 0, 100));
        assert!(may_eject(2, 0, 50));
        assert!(!may_eject(2, 1, 100));
        // Three at 50%: one.
        assert!(may_eject(3, 0, 50));
        assert!(!may_eject(3, 1, 50));
        // 0 turns it off.
        assert!(!may_eject(10, 0, 0));
    }
}
