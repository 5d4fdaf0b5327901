//! Slow start (`balancer.slow_start`): a backend that comes back into
//! rotation takes a share of new requests that ramps up, measured under
//! steady load against the backends that stayed.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::operate::{Load, ok};

/// Requests each backend has answered, ever (monotonic across restarts),
/// and the restarted one's ramp in percent, from one status (so the two
/// agree).
fn counts(f: &Fleet) -> (Vec<u64>, Option<u8>) {
    let s = f.status();
    let counts = s.backends.iter().map(|b| b.traffic.requests).collect();
    (counts, s.backends[0].weight_pct)
}

#[test]
fn a_restarted_backend_ramps_up_to_its_share_while_the_others_carry_the_rest() {
    let f = Fleet::start(4, "balancer:\n  slow_start: 10s\n");
    let load = Load::start(f.addr());
    wait_for(Duration::from_secs(20), "load under way", || {
        (load.sent() >= 500).then_some(())
    });
    // The fleet's first start is not ramped: everyone is at full share.
    let s = f.status();
    assert!(
        s.backends.iter().all(|b| b.weight_pct.is_none()),
        "{:?}",
        s.backends.iter().map(|b| b.weight_pct).collect::<Vec<_>>()
    );

    let port = f.ports[0].to_string();
    let out = ok(&f, &["restart", &port]);
    assert!(out.contains("back in rotation"), "{out}");
    let back = Instant::now();
    // Its ramp shows in the status, in JSON and in the human view.
    let s = f.status();
    let pct = s.backends[0].weight_pct;
    assert!(pct.is_some_and(|p| p < 100), "weight_pct {pct:?}");
    let human = String::from_utf8_lossy(&f.fleet(&["status"]).stdout).into_owned();
    assert!(
        human.contains(&format!("backend {port}: slow start, ramp ")),
        "{human}"
    );

    // The first part of its 10 s ramp: until the others each answered a
    // few hundred more, and at least 2 s. The expected share comes from the
    // ramp the status reports at both ends of the window, not from the
    // clock, so a slow machine (a longer window) only raises it.
    let (before, start_pct) = counts(&f);
    let (after, end_pct) = wait_for(Duration::from_secs(60), "the others to serve more", || {
        let (now, pct) = counts(&f);
        let least = (1..4).map(|i| now[i] - before[i]).min().unwrap_or(0);
        (least >= 300 && back.elapsed() >= Duration::from_secs(2)).then_some((now, pct))
    });
    let grew: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let others = grew[1..].iter().sum::<u64>() as f64 / 3.0;
    let ratio = grew[0] as f64 / others;
    // Linear: its mean share over the window is the mean of the two ends;
    // at full share it would be ~1.
    // (No ramp left at an end, on a machine slow enough: 100%.)
    let pct = |p: Option<u8>| f64::from(p.unwrap_or(100));
    let expected = (pct(start_pct) + pct(end_pct)) / 200.0;
    eprintln!(
        "slow start: over {:?} (ramp {start_pct:?}% to {end_pct:?}%) the restarted backend grew \
         {grew:?}, {ratio:.2} of the others' mean (expected ~{expected:.2})",
        back.elapsed()
    );
    if expected < 0.6 {
        assert!(
            ratio < expected + 0.3,
            "restarted backend's share {ratio:.2} of steady (expected ~{expected:.2}): {grew:?}"
        );
    } else {
        // Not silent: `skip` lists it at the end of .ci/run.
        skip("the machine was too slow to measure the first part of the ramp");
    }
    assert!(grew[0] > 0, "a ramping backend still gets some: {grew:?}");
    // What it was not given is spread over the others, not handed to one.
    for g in &grew[1..] {
        assert!(
            *g as f64 > others * 0.6,
            "uneven spread over the others: {grew:?}"
        );
    }

    // The ramp ends: full share again, and the status says no more.
    f.wait_status(Duration::from_secs(60), "the ramp to end", |s| {
        s.backends[0].weight_pct.is_none()
    });
    let (before, _) = counts(&f);
    let after = wait_for(Duration::from_secs(60), "the others to serve more", || {
        let (now, _) = counts(&f);
        let least = (1..4).map(|i| now[i] - before[i]).min().unwrap_or(0);
        (least >= 300).then_some(now)
    });
    let grew: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let others = grew[1..].iter().sum::<u64>() as f64 / 3.0;
    let ratio = grew[0] as f64 / others;
    assert!(ratio > 0.7, "back at full share: {ratio:.2} {grew:?}");

    let (sent, failures) = load.finish(0);
    assert_no_failures(sent, &failures);
}
