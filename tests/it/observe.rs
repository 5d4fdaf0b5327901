//! Observability: /metrics through promtool, the dashboard in a real
//! browser, the live terminal view, and the supervisor's events in `fleet logs`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

fn admin_fleet(backends: u16) -> (Fleet, SocketAddr) {
    let admin = free_ports(1)[0];
    let fleet = Fleet::start(backends, &format!("admin: 127.0.0.1:{admin}\n"));
    (fleet, SocketAddr::from(([127, 0, 0, 1], admin)))
}

fn scrape(admin: SocketAddr, path: &str) -> String {
    let r = get(admin, path).unwrap();
    assert_eq!(r.status, 200, "{path}");
    String::from_utf8(r.body).unwrap()
}

/// Sum of a counter family's samples (every label set).
fn family_sum(text: &str, family: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

pub(crate) fn promtool_check(promtool: &str, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}\n--- exposition ---\n{text}",
        text_of(&out)
    );
}

fn text_of(o: &std::process::Output) -> String {
    text(o)
}

#[test]
fn metrics_pass_promtool_and_count_every_request() {
    let Some(promtool) = need_tool("promtool", "apt-get install prometheus") else {
        return;
    };
    let (fleet, admin) = admin_fleet(3);
    const THREADS: usize = 4;
    const EACH: usize = 50;
    let addr = fleet.addr();
    let load: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    assert_eq!(get(addr, "/page.html").unwrap().status, 200);
                }
            })
        })
        .collect();
    // A scrape while the load runs must be valid too.
    wait_for(Duration::from_secs(20), "requests during load", || {
        (fleet
            .status()
            .backends
            .iter()
            .any(|b| b.traffic.requests > 0))
        .then_some(())
    });
    promtool_check(promtool, &scrape(admin, "/metrics"));
    for t in load {
        t.join().unwrap();
    }
    let n = (THREADS * EACH) as u64;
    // A request is counted when its response starts and its latency observed
    // when its connection ends, which may be a moment after the client has
    // read the whole response: wait for both to settle.
    let text = wait_for(Duration::from_secs(10), "every request counted", || {
        let t = scrape(admin, "/metrics");
        (family_sum(&t, "fleet_backend_requests_total") == n
            && family_sum(&t, "fleet_backend_request_duration_seconds_count") == n)
            .then_some(t)
    });
    promtool_check(promtool, &text);
    assert_eq!(family_sum(&text, "fleet_backend_connections_total"), n);
    for port in &fleet.ports {
        assert!(
            text.contains(&format!(
                "fleet_backend_requests_total{{port=\"{port}\",code=\"2xx\"}}"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "fleet_backend_request_duration_seconds_count{{port=\"{port}\"}}"
        )));
    }
    let s = fleet.status();
    assert_eq!(sum(&s, |b| b.traffic.requests), n);
    assert!(sum(&s, |b| b.traffic.bytes_out) >= n * PAGE.len() as u64);
    // /status.json is the object `status --json` prints.
    let json: serde_json::Value = serde_json::from_str(&scrape(admin, "/status.json")).unwrap();
    assert_eq!(json["pid"], s.pid);
    assert_eq!(json["admin"], admin.to_string());
    let same: FleetStatus = serde_json::from_value(json).unwrap();
    assert_eq!(sum(&same, |b| b.traffic.requests), n);
    assert_eq!(get(admin, "/nope").unwrap().status, 404);
}

#[test]
fn dashboard_in_a_headless_browser_shows_every_backend() {
    let (fleet, admin) = admin_fleet(3);
    let Some(dom) = dashboard_dom(admin) else {
        return;
    };
    let s = fleet.status();
    for b in &s.backends {
        let port = b.port;
        let state = b.state.as_str();
        assert!(
            dom.contains(&format!("id=\"b-{port}\"")),
            "{port} missing:\n{dom}"
        );
        assert!(
            dom.contains(&format!("s-{state}\">{state}<")),
            "{state} missing:\n{dom}"
        );
    }
}

/// The page as a headless browser has it after its script ran (`None`
/// without chromium, outside CI).
fn dashboard_dom(admin: SocketAddr) -> Option<String> {
    let chromium = need_tool("chromium", "apt-get install chromium")?;
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://{admin}/"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed:\n{}", text(&out));
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-refreshes=\""),
        "the script did not run:\n{dom}"
    );
    Some(dom)
}

/// A backend stopped with `fleet stop` is `stopped` (JSON `held`), has no
/// health rather than "unhealthy", and does not make the fleet degraded: in
/// `status`, its JSON and the dashboard (after the page's own refresh).
#[test]
fn a_stopped_backend_is_stopped_not_unhealthy_and_the_fleet_not_degraded() {
    let (f, admin) = admin_fleet(2);
    let port = f.ports[1];
    let out = f.fleet(&["stop", &port.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let json = f.status_json();
    let b = &json["backends"][1];
    assert_eq!(b["state"], "stopped", "{json}");
    assert_eq!(b["held"], true, "{json}");
    assert_eq!(json["backends"][0].get("held"), None, "absent unless held");
    let human = f.fleet(&["status"]);
    let human = String::from_utf8_lossy(&human.stdout);
    let summary = human.lines().next().unwrap();
    assert!(
        summary.ends_with(", 1/1 backends healthy, 1 stopped"),
        "{human}"
    );
    assert!(
        !human.contains("DEGRADED") && !human.contains("unhealthy"),
        "{human}"
    );
    if let Some(dom) = dashboard_dom(admin) {
        assert!(dom.contains("s-stopped held\">stopped<"), "{dom}");
        assert!(
            dom.contains(">1 / 1<") && dom.contains("· 1 stopped"),
            "{dom}"
        );
        assert!(dom.contains("<td class=\"health h-none\">–</td>"), "{dom}");
        assert!(!dom.contains(">unhealthy<"), "{dom}");
        let exit = f.status().backends[1]
            .last_exit
            .clone()
            .expect("a last exit");
        assert!(
            dom.contains(&format!(
                "<td class=\"exit\">{exit}</td></tr><tr class=\"why\"><td colspan=\"13\">stopped by"
            )),
            "{dom}"
        );
    }
    let out = f.fleet(&["start", &port.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(f.status_json()["backends"][1].get("held"), None);
}

/// Not on a terminal, `--watch` prints a plain snapshot every second.
#[test]
fn watch_without_a_terminal_prints_plain_snapshots() {
    let fleet = Fleet::start(1, "");
    let mut child = Command::new(FLEET)
        .args(["status", "--watch"])
        .current_dir(fleet.scratch.path())
        .env("FLEET_STATE_DIR", fleet.scratch.state())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = PidGuard::new(vec![child.id()]);
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    wait_for(Duration::from_secs(20), "two snapshots", || {
        let mut buf = [0u8; 4096];
        let n = stdout.read(&mut buf).unwrap();
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        (text.matches("fleet pid ").count() >= 2).then_some(())
    });
    assert!(!seen.contains(&0x1b), "escape codes on a pipe");
    let _ = child.kill();
    let _ = child.wait();
}

/// `fleet status --watch` on `fleet` under a pseudo-terminal (`script`),
/// its keyboard on a pipe; the caller says where its screen goes.
fn watch_in_a_pty(script: &str, fleet: &Fleet) -> Command {
    let mut c = Command::new(script);
    c.args(["-qfec", &format!("{FLEET} status --watch"), "/dev/null"])
        .current_dir(fleet.scratch.path())
        .env("FLEET_STATE_DIR", fleet.scratch.state())
        .env("TERM", "xterm")
        .stdin(Stdio::piped());
    c
}

/// `fleet status --watch` under a pseudo-terminal (util-linux `script`).
#[test]
fn watch_shows_requests_changing_and_quits_on_q() {
    let Some(script) = need_tool("script", "apt-get install bsdutils") else {
        return;
    };
    let fleet = Fleet::start(2, "");
    let mut child = watch_in_a_pty(script, &fleet)
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = PidGuard::new(vec![child.id()]);
    let screen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = screen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let totals = || {
        let s = String::from_utf8_lossy(&screen.lock().unwrap()).to_string();
        s.split(" requests in all")
            .filter_map(|p| {
                p.rsplit(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse::<u64>().ok())
            })
            .collect::<Vec<u64>>()
    };
    wait_for(Duration::from_secs(20), "a first frame", || {
        (!totals().is_empty()).then_some(())
    });
    let addr = fleet.addr();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let load = std::thread::spawn(move || {
        let mut sent = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) && sent < 5000 {
            let _ = get(addr, "/page.html");
            sent += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    wait_for(
        Duration::from_secs(30),
        "the request counter to change",
        || {
            let t = totals();
            let distinct: std::collections::BTreeSet<_> = t.iter().collect();
            (distinct.len() >= 3).then_some(())
        },
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    child.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let status = wait_for(Duration::from_secs(10), "watch to exit on q", || {
        child.try_wait().unwrap()
    });
    reader.join().unwrap();
    assert!(status.success(), "watch exited with {status}");
    let out = String::from_utf8_lossy(&screen.lock().unwrap()).to_string();
    // The alternate screen was left and the cursor shown again.
    let tail = &out[out.rfind("requests in all").unwrap()..];
    assert!(
        tail.contains("\x1b[?1049l"),
        "alternate screen not left: {tail:?}"
    );
    assert!(tail.contains("\x1b[?25h"), "cursor not shown: {tail:?}");
}

#[test]
fn logs_show_the_supervisors_sigkill_event_with_one_timestamp() {
    let fleet = Fleet::start(2, "");
    let victim = fleet.pid_of(1);
    kill(victim, nix::sys::signal::Signal::SIGKILL);
    let needle = format!("pid={victim}");
    let out = wait_for(Duration::from_secs(20), "the kill in fleet logs", || {
        let o = fleet.fleet(&["logs"]);
        let t = String::from_utf8_lossy(&o.stdout).to_string();
        t.lines()
            .any(|l| l.starts_with("[supervisor] ") && l.contains("SIGKILL") && l.contains(&needle))
            .then_some(t)
    });
    for line in out.lines() {
        let (_tag, rest) = line.split_once("] ").unwrap();
        let mut words = rest.split(' ');
        let first = words.next().unwrap();
        assert!(
            humantime::parse_rfc3339(first).is_ok(),
            "no timestamp: {line}"
        );
        // One timestamp per line: no second one nested inside.
        assert!(
            words.all(|w| humantime::parse_rfc3339_weak(w).is_err()),
            "nested timestamp: {line}"
        );
    }
    // One backend's logs include the supervisor's events about it, and no other's.
    let one = fleet.fleet(&["logs", &fleet.ports[1].to_string()]);
    let one = String::from_utf8_lossy(&one.stdout);
    assert!(one.contains("SIGKILL") && one.contains(&needle), "{one}");
    let other = fleet.fleet(&["logs", &fleet.ports[0].to_string()]);
    assert!(!String::from_utf8_lossy(&other.stdout).contains("SIGKILL"));
    // --no-prefix drops the tags; --since keeps only recent lines.
    let plain = fleet.fleet(&["logs", "--no-prefix"]);
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert!(plain.lines().all(|l| !l.starts_with('[')), "{plain}");
    assert!(plain.contains("SIGKILL"));
    let recent = fleet.fleet(&["logs", "--since", "1h"]);
    assert!(String::from_utf8_lossy(&recent.stdout).contains("SIGKILL"));
    let none = fleet.fleet(&["logs", "--since", "1ms"]);
    assert!(
        !String::from_utf8_lossy(&none.stdout).contains("SIGKILL"),
        "{}",
        text(&none)
    );
}

/// Everything a user sees from a foreground fleet on a terminal, and from the
/// other commands, with NO_COLOR=1: no escape sequence at all.
#[test]
fn no_color_means_no_escape_codes() {
    let Some(script) = need_tool("script", "apt-get install bsdutils") else {
        return;
    };
    let scratch = Scratch::new();
    let ports = free_ports(2);
    scratch.write(
        "fleet.yaml",
        &fleet_yaml(
            &ports,
            "www: www\nhealth:\n  interval: 100ms\n  timeout: 100ms\n",
        ),
    );
    // Foreground `fleet up` on a pseudo-terminal: its log lines and the
    // echoed backend output.
    let mut up = Command::new(script)
        .args(["-qfec", &format!("{FLEET} up"), "/dev/null"])
        .current_dir(scratch.path())
        .env("FLEET_STATE_DIR", scratch.state())
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut fleet = Fleet::adopt(scratch, ports[..1].to_vec(), ports[1]);
    let _guard = PidGuard::new(vec![up.id()]);
    // Until the foreground supervisor has its socket, status says "not running".
    wait_for(Duration::from_secs(20), "the fleet up", || {
        let out = fleet.fleet(&["status", "--json"]);
        let s: FleetStatus = serde_json::from_slice(&out.stdout).ok()?;
        Fleet::all_healthy(&s).then_some(())
    });
    // Now Drop knows whom to stop, should the test fail from here on.
    fleet.supervisor = fleet.status().pid;
    get(fleet.addr(), "/page.html").unwrap();
    get(fleet.addr(), "/missing").unwrap();
    for args in [
        &["status"][..],
        &["logs"],
        &["status", "--json"],
        &["logs", "--no-prefix"],
    ] {
        let mut c = Command::new(script);
        c.args(["-qfec", &format!("{FLEET} {}", args.join(" ")), "/dev/null"])
            .current_dir(fleet.scratch.path())
            .env("FLEET_STATE_DIR", fleet.scratch.state())
            .env("NO_COLOR", "1")
            .env("TERM", "xterm")
            .stdin(Stdio::null());
        let out = c.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(!out.stdout.contains(&0x1b), "{args:?}: {}", text(&out));
    }
    let down = fleet.fleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    let out = wait_for(Duration::from_secs(20), "fleet up to exit", || {
        up.try_wait().unwrap()
    });
    assert!(out.success());
    let mut all = Vec::new();
    up.stdout.take().unwrap().read_to_end(&mut all).unwrap();
    let shown = String::from_utf8_lossy(&all);
    assert!(shown.contains("fleet ready"), "{shown}");
    assert!(!all.contains(&0x1b), "escape codes in: {shown:?}");
}

#[test]
fn access_log_has_a_line_per_request() {
    let fleet = Fleet::start(2, "balancer:\n  access_log: access.log\n");
    assert_eq!(get(fleet.addr(), "/page.html").unwrap().status, 200);
    assert_eq!(get(fleet.addr(), "/missing").unwrap().status, 404);
    assert_eq!(get(fleet.addr(), "/page.html").unwrap().status, 200);
    let path = fleet.scratch.path().join("access.log");
    let text = wait_for(Duration::from_secs(10), "three access log lines", || {
        let t = std::fs::read_to_string(&path).unwrap_or_default();
        (t.lines().count() == 3).then_some(t)
    });
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    for (l, (target, status)) in lines.iter().zip([
        ("/page.html", "200"),
        ("/missing", "404"),
        ("/page.html", "200"),
    ]) {
        assert_eq!(l.len(), 8, "{l:?}");
        assert!(humantime::parse_rfc3339(l[0]).is_ok(), "{l:?}");
        assert!(l[1].starts_with("127.0.0.1:"), "{l:?}");
        assert_eq!((l[2], l[3], l[4]), ("GET", target, status));
        assert!(l[5].parse::<u64>().unwrap() > 0);
        assert!(l[6].ends_with("ms"));
        let port: u16 = l[7].parse().unwrap();
        assert!(fleet.ports.contains(&port), "{l:?}");
    }
    // Bytes sent to the client: the page and the response head.
    assert!(lines[0][5].parse::<usize>().unwrap() > PAGE.len());
}

#[test]
fn an_admin_address_beyond_loopback_is_logged() {
    let admin = free_ports(1)[0];
    let fleet = Fleet::start(1, &format!("admin: 0.0.0.0:{admin}\n"));
    let log = fleet.log();
    assert!(
        log.contains(&format!("admin address 0.0.0.0:{admin} is beyond loopback")),
        "{log}"
    );
    // Served all the same (checked on loopback only).
    let r = get(SocketAddr::from(([127, 0, 0, 1], admin)), "/status.json").unwrap();
    assert_eq!(r.status, 200);
}

/// Every descendant of `pid` (through /proc's children lists).
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let kids =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for k in kids
            .split_whitespace()
            .filter_map(|k| k.parse::<u32>().ok())
        {
            all.push(k);
            todo.push(k);
        }
    }
    all
}

/// A terminal that goes away without a SIGHUP reaching the watch (its
/// emulator SIGKILLed) ends the watch: it neither lingers nor spins reading
/// EOF, as it once did at a third of a core.
#[test]
fn watch_ends_when_its_terminal_goes_away() {
    let Some(script) = need_tool("script", "apt-get install bsdutils") else {
        return;
    };
    let fleet = Fleet::start(1, "");
    let mut child = watch_in_a_pty(script, &fleet)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watch = wait_for(Duration::from_secs(20), "the watch under script", || {
        descendants(child.id()).into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--watch"))
        })
    });
    let _guard = PidGuard::new(vec![watch]);
    kill(child.id(), nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    wait_for(
        Duration::from_secs(10),
        "the watch to end with its terminal",
        || (!alive(watch)).then_some(()),
    );
}

/// Send `n` requests on one kept-alive connection; every answer must be 200.
fn keep_alive_requests(addr: SocketAddr, path: &str, n: usize) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..n {
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        assert_eq!(Response::read_one(&mut s).status, 200);
    }
}

/// http mode (the default) counts requests, not connections: N requests
/// over a few kept-alive connections sum to N across the backends, and what
/// fleet answers itself (a malformed request's 400) is counted apart.
#[test]
fn http_mode_counts_every_request_of_kept_alive_connections() {
    let Some(promtool) = need_tool("promtool", "apt-get install prometheus") else {
        return;
    };
    let (fleet, admin) = admin_fleet(3);
    const CONNS: usize = 4;
    const EACH: usize = 30;
    let addr = fleet.addr();
    let load: Vec<_> = (0..CONNS)
        .map(|_| std::thread::spawn(move || keep_alive_requests(addr, "/page.html", EACH)))
        .collect();
    for t in load {
        t.join().unwrap();
    }
    let mut bad = std::net::TcpStream::connect(addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n")
        .unwrap();
    assert_eq!(Response::read_one(&mut bad).status, 400);
    let n = (CONNS * EACH) as u64;
    let text = wait_for(Duration::from_secs(10), "every request counted", || {
        let t = scrape(admin, "/metrics");
        (family_sum(&t, "fleet_backend_requests_total") == n
            && family_sum(&t, "fleet_backend_request_duration_seconds_count") == n
            && family_sum(&t, "fleet_balancer_responses_total") == 1)
            .then_some(t)
    });
    promtool_check(promtool, &text);
    assert!(
        text.contains("fleet_balancer_responses_total{code=\"4xx\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        family_sum(&text, "fleet_balancer_connections_total"),
        CONNS as u64 + 1,
        "client connections, not requests"
    );
    let s = fleet.status();
    assert_eq!(sum(&s, |b| b.traffic.requests), n);
    // Round-robin per request: every backend answered some.
    for b in &s.backends {
        assert!(b.traffic.requests > 0, "{b:?}");
    }
}

#[test]
fn http_mode_access_log_has_a_line_per_request_of_a_kept_alive_connection() {
    let fleet = Fleet::start(2, "balancer:\n  access_log: access.log\n");
    keep_alive_requests(fleet.addr(), "/page.html", 3);
    let path = fleet.scratch.path().join("access.log");
    let text = wait_for(Duration::from_secs(10), "three access log lines", || {
        let t = std::fs::read_to_string(&path).unwrap_or_default();
        (t.lines().count() == 3).then_some(t)
    });
    let clients: std::collections::BTreeSet<&str> =
        text.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(clients.len(), 1, "one connection, three lines: {text}");
    let backends: std::collections::BTreeSet<&str> =
        text.lines().map(|l| l.split(' ').nth(7).unwrap()).collect();
    assert_eq!(backends.len(), 2, "balanced per request: {text}");
}

/// The real supervisor, flooded: with RUST_LOG=debug every request is a log
/// line, and thousands of them keep supervisor.log (and its one rotated
/// copy) under the cap.
#[test]
fn a_flooded_supervisor_log_stays_under_its_cap() {
    const CAP: u64 = 1024 * 1024; // supervisor::output::MAX_LOG_BYTES
    let scratch = Scratch::new();
    let ports = free_ports(3);
    scratch.write(
        "fleet.yaml",
        &fleet_yaml(&ports, "health:\n  interval: 100ms\n  timeout: 100ms\n"),
    );
    let out = Command::new(FLEET)
        .args(["up", "-d"])
        .current_dir(scratch.path())
        .env("FLEET_STATE_DIR", scratch.state())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let fleet = Fleet::adopt(scratch, ports[..2].to_vec(), ports[2]);
    assert!(out.status.success(), "{}", text(&out));
    let log = fleet.scratch.state().join("logs/supervisor.log");
    let rotated = fleet.scratch.state().join("logs/supervisor.log.1");
    let addr = fleet.addr();
    let mut rounds = 0;
    while !rotated.exists() {
        rounds += 1;
        assert!(
            rounds <= 20,
            "no rotation after {} requests",
            rounds * 8 * 250
        );
        let load: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(move || keep_alive_requests(addr, "/page.html", 250)))
            .collect();
        for t in load {
            t.join().unwrap();
        }
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&log) <= CAP, "supervisor.log is {} bytes", size(&log));
    assert!(
        size(&rotated) <= CAP,
        "supervisor.log.1 is {} bytes",
        size(&rotated)
    );
    // Whole lines on both sides of the rotation, and the fleet still logs.
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.ends_with('\n'));
    assert!(
        old.lines()
            .all(|l| humantime::parse_rfc3339(l.split(' ').next().unwrap()).is_ok())
    );
    let down = fleet.fleet(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(std::fs::read_to_string(&log).unwrap().contains("stopped"));
}
