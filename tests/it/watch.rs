//! Watch mode against the real binary: an edit rolls the fleet under steady
//! load without a failed request; a broken edit stops the roll with the
//! rest serving the old version and status naming the file and what the
//! probe saw; the next edit completes it. A built-in worker's www edit is
//! served without a restart.

use std::net::SocketAddr;
use std::time::Duration;

use fleet::protocol::WatchStatus;

use crate::harness::*;
use crate::operate::{Load, Target};

/// A small HTTP/1.1 server whose every answer is `version VERSION`, with
/// status STATUS; `EXIT` makes it exit at once.
fn app(version: &str, status: u16, exit: bool) -> String {
    format!(
        r#"import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
if {exit}:
    sys.exit("refusing to start")
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"version {version}\n"
        self.send_response({status})
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#,
        exit = if exit { "True" } else { "False" }
    )
}

/// Replace `name` the way editors do: write a temp file (ignored: `*.tmp`)
/// and rename it into place.
fn edit(s: &Scratch, name: &str, text: &str) {
    let tmp = s.path().join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, s.path().join(name)).unwrap();
}

/// GETs of `/` from keep-alive and one-request-per-connection clients,
/// steady, not flat out (Python answers these); anything but a 200 with a
/// `version` body is a failure.
const VERSIONED: Target = Target {
    path: "/",
    good: versioned,
    clients: 4,
    pause: Duration::from_millis(2),
    at_most: (Duration::from_secs(300), 400_000),
};

fn versioned(status: u16, body: &[u8]) -> std::io::Result<()> {
    if status == 200 && body.starts_with(b"version ") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "status {status}, body {:?}",
            String::from_utf8_lossy(body)
        )))
    }
}

/// What backend `port` answers now, straight from it.
fn answer(port: u16) -> Option<String> {
    get(SocketAddr::from(([127, 0, 0, 1], port)), "/")
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| String::from_utf8_lossy(&r.body).trim().to_owned())
}

fn watch_of(f: &Fleet) -> WatchStatus {
    *f.status().watch.expect("status has a watch field")
}

/// Wait until every backend in `ports` answers `version`.
fn serving(ports: &[u16], version: &str, what: &str) {
    let want = format!("version {version}");
    wait_for(Duration::from_secs(90), what, || {
        ports
            .iter()
            .all(|p| answer(*p).as_deref() == Some(want.as_str()))
            .then_some(())
    });
}

#[test]
fn an_edit_rolls_the_fleet_a_broken_one_stops_the_roll_and_a_fix_completes_it() {
    let scratch = Scratch::new();
    scratch.write("app.py", &app("one", 200, false));
    // The backends run from this directory, which holds the state dir too:
    // their logs, written on every request, must not count as changes.
    let f = Fleet::start_in(
        scratch,
        3,
        "backend:\n  command: [python3, app.py, \"{port}\"]\n\
         shutdown:\n  timeout: 2s\n  drain_timeout: 5s\n\
         restart:\n  max_restarts: 2\n\
         watch:\n  debounce: 200ms\n",
    );
    let ports = f.ports.clone();
    serving(&ports, "one", "the first version everywhere");
    let w = watch_of(&f);
    assert_eq!(w.paths, [f.scratch.path().display().to_string()]);
    assert_eq!((w.rolls, w.last_change), (0, None));
    let load = Load::start_on(f.addr(), VERSIONED);
    load.wait_under_way();

    // A good edit rolls every backend; fleet.yaml, saved with it, is not
    // part of the change (a restart would not apply it).
    let yaml = std::fs::read_to_string(f.scratch.path().join("fleet.yaml")).unwrap();
    edit(&f.scratch, "fleet.yaml", &yaml);
    edit(&f.scratch, "app.py", &app("two", 200, false));
    serving(&ports, "two", "the edit rolled out");
    let w = f.wait_status(Duration::from_secs(60), "the roll's outcome", |s| {
        s.watch.as_ref().and_then(|w| w.outcome.as_deref()) != Some("rolling")
    });
    let w = w.watch.unwrap();
    assert_eq!(w.last_change.as_deref(), Some("app.py"));
    // What the roll did, then what it cost the clients (the cost line).
    let outcome = w.outcome.unwrap_or_default();
    assert!(
        outcome.starts_with("restarted 3 backends, one at a time; restart took ")
            && outcome.contains(" 0 of ")
            && outcome.ends_with(" requests failed"),
        "{outcome}"
    );
    assert_eq!(w.rolls, 1);

    // A version that fails its probe stops the roll at the first backend;
    // the others keep serving the old version.
    edit(&f.scratch, "app.py", &app("three", 500, false));
    let s = f.wait_status(Duration::from_secs(90), "the roll to stop", |s| {
        s.watch
            .as_ref()
            .and_then(|w| w.outcome.as_deref())
            .is_some_and(|o| o.starts_with("stopped"))
    });
    let w = s.watch.unwrap();
    let outcome = w.outcome.unwrap();
    assert_eq!(w.last_change.as_deref(), Some("app.py"));
    assert!(
        outcome.contains(&format!("backend {}", ports[0]))
            && outcome.contains("GET / answered 500"),
        "{outcome}"
    );
    for p in &ports[1..] {
        assert_eq!(answer(*p).as_deref(), Some("version two"), "backend {p}");
    }
    let human = String::from_utf8_lossy(&f.fleet(&["status"]).stdout).into_owned();
    assert!(
        human.contains("watch:")
            && human.contains("last change app.py: stopped")
            && human.contains("answered 500"),
        "{human}"
    );
    let log = f.log();
    assert!(
        log.contains("app.py") && log.contains("GET / answered 500"),
        "{log}"
    );

    // One that exits at once stops it the same way.
    edit(&f.scratch, "app.py", &app("four", 200, true));
    let s = f.wait_status(Duration::from_secs(90), "the second roll to stop", |s| {
        s.watch.as_ref().is_some_and(|w| {
            w.rolls == 3
                && w.outcome
                    .as_deref()
                    .is_some_and(|o| o.starts_with("stopped"))
        })
    });
    let outcome = s.watch.unwrap().outcome.unwrap();
    assert!(
        outcome.contains(&format!("backend {} did not come back", ports[0])),
        "{outcome}"
    );
    for p in &ports[1..] {
        assert_eq!(answer(*p).as_deref(), Some("version two"), "backend {p}");
    }

    // The fix rolls all the way.
    edit(&f.scratch, "app.py", &app("five", 200, false));
    serving(&ports, "five", "the fix rolled out");
    let s = f.wait_status(Duration::from_secs(60), "the fix's outcome", |s| {
        s.watch
            .as_ref()
            .is_some_and(|w| w.rolls == 4 && w.outcome.as_deref() != Some("rolling"))
    });
    assert!(Fleet::all_healthy(&s), "{s:?}");
    let outcome = s.watch.unwrap().outcome.unwrap_or_default();
    assert!(
        outcome.starts_with("restarted 3 backends, one at a time; restart took "),
        "{outcome}"
    );

    load.finish_without_failures(200);
    // Only the four edits rolled: the state dir's logs and the temp files
    // were ignored.
    assert_eq!(watch_of(&f).rolls, 4);
}

#[test]
fn a_www_edit_is_served_by_the_builtin_worker_without_a_restart() {
    let scratch = Scratch::new();
    let ports = free_ports(3);
    scratch.write(
        "fleet.yaml",
        &fleet_yaml(
            &ports,
            "www: www\nhealth:\n  interval: 100ms\n  timeout: 100ms\n",
        ),
    );
    let out = scratch.fleet(&["up", "-d", "--watch"]);
    let f = Fleet::adopt(scratch, ports[..2].to_vec(), ports[2]);
    assert!(out.status.success(), "{}", text(&out));
    let before: Vec<_> = f.status().backends.iter().map(|b| b.pid).collect();
    let www = f.scratch.path().join("www");
    assert_eq!(watch_of(&f).paths, [www.display().to_string()]);

    std::fs::write(www.join("page.html"), "edited\n").unwrap();
    wait_for(Duration::from_secs(30), "the edit served", || {
        get(f.addr(), "/page.html")
            .ok()
            .filter(|r| r.body == b"edited\n")
    });
    let s = f.wait_status(Duration::from_secs(30), "the change reported", |s| {
        s.watch.as_ref().is_some_and(|w| w.last_change.is_some())
    });
    let w = s.watch.unwrap();
    assert_eq!(w.last_change.as_deref(), Some("page.html"));
    assert!(w.outcome.unwrap().starts_with("no restart"));
    assert_eq!(w.rolls, 0);
    let after: Vec<_> = s.backends.iter().map(|b| b.pid).collect();
    assert_eq!(after, before, "no backend was restarted");
}
