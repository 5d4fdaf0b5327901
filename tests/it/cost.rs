//! Each operation reports its cost: the line `fleet restart` (and stop,
//! start, scale, reload) ends with, and the same numbers in `/metrics`.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::*;
use crate::observe::promtool_check;
use crate::operate::{Load, ok};

const MISBEHAVING_PY: &str = include_str!("backends/misbehaving.py");

/// The cost line in a command's output: (failed, requests, the reasons).
fn cost_line(out: &str, op: &str) -> (u64, u64, String) {
    let line = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output: {out}"));
    let rest = line
        .strip_prefix(&format!("fleet: {op} took "))
        .unwrap_or_else(|| panic!("the last line is not the cost line:\n{out}"));
    // "2.3 s: 0 of 18,211 requests failed[ (why)]"
    let (secs, rest) = rest.split_once(" s: ").expect("N.N s: ");
    let (whole, tenth) = secs.split_once('.').expect("seconds with one decimal");
    assert!(
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && tenth.len() == 1
            && tenth.bytes().all(|b| b.is_ascii_digit()),
        "{line}"
    );
    let (failed, rest) = rest.split_once(" of ").expect("F of N");
    let (requests, why) = rest
        .split_once(" requests failed")
        .expect("requests failed");
    let n = |s: &str| -> u64 {
        s.replace(',', "")
            .parse()
            .unwrap_or_else(|_| panic!("{line}"))
    };
    (n(failed), n(requests), why.to_owned())
}

/// The value of the sample `name{labels}` in a scrape.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// The sample `series` in a scrape is `want`.
fn has_sample(text: &str, series: &str, want: f64) {
    assert_eq!(sample(text, series), want, "{series}");
}

fn scrape(admin: SocketAddr) -> String {
    let r = get(admin, "/metrics").unwrap();
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

#[test]
fn a_rolling_restart_under_load_ends_with_its_cost_and_metrics_carry_it() {
    let admin = free_ports(1)[0];
    let f = Fleet::start(4, &format!("admin: 127.0.0.1:{admin}\n"));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    let load = Load::under_way(f.addr());
    let out = ok(&f, &["restart"]);
    let (failed, requests, why) = cost_line(&out, "restart");
    assert_eq!((failed, why.as_str()), (0, ""), "{out}");
    assert!(
        requests > 0,
        "requests were served during the restart: {out}"
    );

    let text = scrape(admin);
    has_sample(
        &text,
        r#"fleet_operations_total{op="restart",outcome="ok"}"#,
        1.0,
    );
    has_sample(
        &text,
        r#"fleet_operation_requests_total{op="restart"}"#,
        requests as f64,
    );
    for reason in ["bad_gateway", "gateway_timeout", "no_backend"] {
        let series =
            format!(r#"fleet_operation_failed_requests_total{{op="restart",reason="{reason}"}}"#);
        has_sample(&text, &series, 0.0);
    }
    assert!(sample(&text, r#"fleet_operation_seconds_total{op="restart"}"#) > 0.0);
    has_sample(
        &text,
        r#"fleet_operations_total{op="scale",outcome="ok"}"#,
        0.0,
    );
    if let Some(promtool) = need_tool("promtool", "apt-get install prometheus") {
        promtool_check(promtool, &text);
    }

    // The other operations end with the line too.
    let out = ok(&f, &["stop", &f.ports[3].to_string()]);
    assert_eq!(cost_line(&out, "stop").0, 0, "{out}");
    let out = ok(&f, &["start"]);
    assert_eq!(cost_line(&out, "start").0, 0, "{out}");
    let out = ok(&f, &["reload"]);
    assert_eq!(cost_line(&out, "reload").0, 0, "{out}");

    load.finish_without_failures(0);
    assert!(f.log().contains("restart took "), "the log has it too");
}

#[test]
fn requests_that_fail_during_a_restart_are_counted_with_their_reason() {
    let Some(_) = need_tool("python3", "apt-get install python3") else {
        return;
    };
    let admin = free_ports(1)[0];
    // Passive ejection off: the crashing requests must not change which
    // backends serve.
    let f = Fleet::python(
        MISBEHAVING_PY,
        2,
        &format!("admin: 127.0.0.1:{admin}\nbalancer:\n  max_ejection_percent: 0\n"),
    );
    let admin = SocketAddr::from(([127, 0, 0, 1], admin));
    let addr = f.addr();
    let restarting = AtomicBool::new(true);
    let (out, bad_gateways) = std::thread::scope(|s| {
        let crasher = s.spawn(|| {
            // A request every backend closes on without answering: 502, each
            // time, until the restart is over.
            let mut got = 0u64;
            while restarting.load(Ordering::SeqCst) {
                let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.write_all(b"GET /crash HTTP/1.1\r\nHost: fleet\r\n\r\n")
                    .unwrap();
                let raw = read_to_close(&mut c);
                let status = parse(&raw).map(|r| r.status);
                assert_eq!(status, Some(502), "{}", String::from_utf8_lossy(&raw));
                got += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            got
        });
        let out = f.fleet(&["restart"]);
        restarting.store(false, Ordering::SeqCst);
        (out, crasher.join().unwrap())
    });
    assert!(out.status.success(), "{}", text(&out));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (failed, requests, why) = cost_line(&out, "restart");
    assert!(
        (1..=bad_gateways).contains(&failed),
        "{failed} counted, {bad_gateways} 502s seen: {out}"
    );
    assert!(requests >= failed, "{out}");
    assert_eq!(
        why,
        format!(" ({failed} × 502 backend failed before answering)"),
        "{out}"
    );
    let text = scrape(admin);
    has_sample(
        &text,
        r#"fleet_operation_failed_requests_total{op="restart",reason="bad_gateway"}"#,
        failed as f64,
    );
}
