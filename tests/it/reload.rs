//! A reload cannot take the fleet down: a new probe or command is tried on
//! one backend first and rolled back if it does not pass; restarts for
//! failed probes go one at a time; a `fleet scale` outlives a reload that
//! leaves `backends` alone, and counters never go back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::operate::{Load, ok, pids_of, ports_of, scalable, up};

/// How long the fleet is watched after a refused reload.
const AFTER: Duration = Duration::from_secs(10);

/// The fleet.yaml of `f` with `path` added to its health section, and a
/// probe timeout a loaded machine meets (so the probe sees the answer).
fn with_health_path(yaml: &str, path: &str) -> String {
    let health = "  interval: 100ms\n  timeout: 100ms\n";
    assert!(yaml.contains(health), "{yaml}");
    yaml.replacen(
        health,
        &format!("  interval: 1s\n  timeout: 1s\n  path: {path}\n"),
        1,
    )
}

/// Every status for `AFTER`: all backends running, on the workers of
/// `before`; then all healthy. (A probe may time out now and then on a
/// loaded machine, so health is checked once, with a deadline.)
fn stays_healthy_on(f: &Fleet, before: &[Option<u32>]) {
    let until = Instant::now() + AFTER;
    while Instant::now() < until {
        let s = f.status();
        assert!(
            s.backends.iter().all(|b| b.state == Phase::Running),
            "{s:?}"
        );
        assert_eq!(pids_of(&s), before, "no backend was restarted");
    }
    f.wait_status(
        Duration::from_secs(10),
        "every backend healthy",
        Fleet::all_healthy,
    );
}

/// The original file reloads as "no change": what it says is in force.
fn in_force(f: &Fleet, yaml: &str) {
    f.scratch.write("fleet.yaml", yaml);
    let out = ok(f, &["reload"]);
    assert!(out.contains("no setting changed"), "{out}");
}

/// After a refused reload: the fleet stays healthy on the workers `pids`
/// while `load` goes on, `good` (the original fleet.yaml) is in force, and
/// no request failed.
fn serves_on_after_a_refused_reload(f: &Fleet, load: Load, pids: &[Option<u32>], good: &str) {
    let n = load.sent();
    stays_healthy_on(f, pids);
    assert!(load.sent() > n, "requests went out after the reload");
    in_force(f, good);

    let (sent, failures) = load.finish(n + 200);
    assert_no_failures(sent, &failures);
}

#[test]
fn a_reload_to_a_failing_probe_fails_keeps_the_old_probe_and_loses_no_request() {
    let (scratch, ports, listen) = scalable("");
    let f = up(scratch, &ports, listen);
    let before = pids_of(&f.status());
    let good = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    let load = Load::under_way(f.addr());

    f.scratch
        .write("fleet.yaml", &with_health_path(&good, "/nope.html"));
    let out = f.fleet(&["reload"]);
    assert_exit(&out, 1, "GET /nope.html answered 404");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the old probe stays in force"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("reload: health.path: /.fleet/health -> /nope.html"),
        "the change line names the key that changed:\n{}",
        text(&out)
    );
    serves_on_after_a_refused_reload(&f, load, &before, &good);
}

#[test]
fn a_reload_to_a_command_that_does_not_pass_is_rolled_back_on_the_backend_that_tried_it() {
    let (scratch, ports, listen) = scalable("shutdown:\n  timeout: 2s\n");
    let f = up(scratch, &ports, listen);
    let before = pids_of(&f.status());
    let good = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    let load = Load::under_way(f.addr());

    // The same worker as a custom command, with a probe it cannot pass.
    let www = f.scratch.path().join("www");
    let bad = format!(
        "{}backend:\n  command: [\"{FLEET}\", \"serve\", \"--port\", \"{{port}}\", \"--www\", \"{}\"]\n",
        with_health_path(&good, "/nope.html"),
        www.display()
    );
    f.scratch.write("fleet.yaml", &bad);
    let out = f.fleet(&["reload"]);
    assert_exit(&out, 1, "GET /nope.html answered 404");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rolled back: nothing changed"), "{err}");
    assert!(
        err.contains(&format!("backend {} is back on the old settings", ports[0])),
        "{err}"
    );

    // The backend that tried it runs the old command again; the rest were
    // never touched.
    let s = f.status();
    assert!(Fleet::all_healthy(&s), "{s:?}");
    let after = pids_of(&s);
    assert_ne!(after[0], before[0], "the tried backend was restarted");
    assert_eq!(after[1..], before[1..], "the others were not");
    serves_on_after_a_refused_reload(&f, load, &after, &good);
}

#[test]
fn when_the_probe_fails_on_every_backend_restart_after_restarts_them_one_at_a_time() {
    let scratch = Scratch::new();
    let probe = scratch.path().join("www/probe.html");
    std::fs::write(&probe, "ok\n").unwrap();
    // Probes get a timeout a loaded machine meets: only the missing page
    // fails them.
    let f = Fleet::start_in(
        scratch,
        3,
        "health:\n  interval: 250ms\n  timeout: 250ms\n  path: /probe.html\n  fall: 2\n  \
         restart_after: 4\nrestart:\n  initial_backoff: 50ms\n",
    );
    let restarts: Vec<u32> = f.status().backends.iter().map(|b| b.restarts).collect();
    // The probe's page goes: every probe fails at once.
    std::fs::remove_file(&probe).unwrap();
    let log = wait_for(
        Duration::from_secs(30),
        "a backend waiting for its turn",
        || {
            let log = f.log();
            log.contains("such restarts go one at a time")
                .then_some(log)
        },
    );
    assert!(log.contains("is not restarted while backend"), "{log}");
    // Four seconds, sixteen probe intervals: only one backend is being restarted.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let s = f.status();
        let restarted = s
            .backends
            .iter()
            .zip(&restarts)
            .filter(|(b, before)| b.restarts > **before || b.state != Phase::Running)
            .count();
        assert!(restarted <= 1, "{s:?}");
    }
    // The page is back: every backend passes again.
    std::fs::write(&probe, "ok\n").unwrap();
    f.wait_status(
        Duration::from_secs(30),
        "every backend healthy again",
        Fleet::all_healthy,
    );
}

/// The value of one sample line (`name{labels}`) of a scrape.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

fn scrape(admin: SocketAddr) -> String {
    let r = get(admin, "/metrics").unwrap();
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

#[test]
fn a_scale_outlives_a_reload_that_leaves_backends_alone_and_counters_never_go_back() {
    let (scratch, ports, listen) = scalable("");
    let admin = SocketAddr::from(([127, 0, 0, 1], ports[8]));
    let yaml = std::fs::read_to_string(scratch.path().join("fleet.yaml")).unwrap();
    scratch.write("fleet.yaml", &format!("{yaml}admin: {admin}\n"));
    let f = up(scratch, &ports, listen);
    let good = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();

    ok(&f, &["scale", "6"]);
    for _ in 0..60 {
        assert_eq!(get(f.addr(), "/page.html").unwrap().status, 200);
    }
    let s = f.wait_status(Duration::from_secs(10), "the top backend counted", |s| {
        s.backends.len() == 6 && s.backends[5].traffic.requests > 0
    });

    // A reload of the unchanged file keeps the six.
    let out = ok(&f, &["reload"]);
    assert!(
        out.contains("backends: kept at 6 (set by fleet scale; fleet.yaml says 4, unchanged)"),
        "{out}"
    );
    assert!(out.contains("no setting changed"), "{out}");
    assert!(!out.contains("draining"), "{out}");
    let s2 = f.status();
    assert_eq!(pids_of(&s2), pids_of(&s));

    // Scaling down keeps the removed backends' counts in the totals.
    let total = s2.traffic.requests;
    assert_eq!(total, sum(&s2, |b| b.traffic.requests));
    assert!(total >= 60, "{total}");
    let top = s2.backends[5].traffic.requests;
    let metrics = scrape(admin);
    assert_eq!(
        sample(&metrics, "fleet_requests_total{code=\"2xx\"}"),
        total
    );
    ok(&f, &["scale", "4"]);
    let s3 = f.status();
    assert_eq!(ports_of(&s3), ports[..4]);
    assert_eq!(s3.traffic.requests, total, "status totals");
    assert_eq!(f.status_json()["requests"], total, "the JSON field");
    let human = String::from_utf8(f.fleet(&["status"]).stdout).unwrap();
    assert!(
        human.contains(&format!("{total} requests in all")),
        "{human}"
    );
    let metrics = scrape(admin);
    assert_eq!(
        sample(&metrics, "fleet_requests_total{code=\"2xx\"}"),
        total,
        "/metrics"
    );

    // fleet.yaml's own change wins; a port scaled back carries on.
    f.scratch
        .write("fleet.yaml", &good.replace("backends: 4", "backends: 6"));
    let out = ok(&f, &["reload"]);
    assert!(out.contains("reload: backends: 4 -> 6"), "{out}");
    let s4 = f.status();
    assert_eq!(s4.backends[5].traffic.requests, top);
    assert_eq!(s4.traffic.requests, total);
    let port = ports[5];
    assert_eq!(
        sample(
            &scrape(admin),
            &format!("fleet_backend_requests_total{{port=\"{port}\",code=\"2xx\"}}")
        ),
        top
    );
}
