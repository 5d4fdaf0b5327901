//! The open-file limit. Every socket is a descriptor, and the usual default
//! soft limit (1024) is below what the balancer, a worker or the load
//! generator may hold at once, so each raises it at start-up by this one
//! policy: the soft limit goes up to what is needed, never above the hard
//! limit (nor macOS's `OPEN_MAX`, which its hard limit may claim to exceed),
//! and never down. What to do when even that is too low is the caller's
//! decision: `fleet up` refuses to start, the worker and `fleet bench` warn.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The soft limit after trying to raise it to `want`. Below `want` when the
/// hard limit is lower, or when the kernel refused the change.
pub(crate) fn raise(want: u64) -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    // macOS reports RLIM_INFINITY but refuses soft limits above OPEN_MAX.
    #[cfg(target_os = "macos")]
    let hard = hard.min(10240);
    if soft >= want {
        return Ok(soft);
    }
    let new = want.min(hard);
    Ok(match setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
        Ok(()) => new,
        Err(_) => soft,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_never_lowered_and_never_past_the_hard_one() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(raise(1).unwrap(), soft, "already enough: unchanged");
        let have = raise(u64::MAX).unwrap();
        assert!(have >= soft && have <= hard, "{soft} <= {have} <= {hard}");
    }
}
