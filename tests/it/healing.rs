//! Self-healing: crashes, hangs, crash loops, a dead supervisor, foreign
//! backends. Loopback only; every load is bounded in requests and time.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::*;

#[test]
fn chaos_kill_9_under_load_loses_no_request() {
    let f = Fleet::start(4, CHAOS);
    let addr = f.addr();
    // 20 one-shot clients and at least 2,000 requests.
    let killed = chaos_under_load(&f, 20, 2000, |_| move || page_ok(get(addr, "/page.html")));
    let s = f.wait_status(
        Duration::from_secs(5),
        "every backend healthy after the chaos",
        |s| Fleet::all_healthy(s) && sum(s, |b| b.restarts.into()) == 5,
    );
    for k in killed {
        assert!(!alive(k));
    }
    assert_eq!(sum(&s, |b| b.restarts.into()), 5, "{s:?}");
}

#[test]
fn sigstopped_worker_is_taken_out_of_rotation_and_restarted_by_liveness() {
    // fall × interval + timeout = 2 × 100 + 100 = 300 ms to be marked unhealthy.
    let f = Fleet::start(
        2,
        "health:\n  interval: 100ms\n  timeout: 100ms\n  fall: 2\n  rise: 2\n  restart_after: 8\n",
    );
    let stopped = f.pid_of(0);
    kill(stopped, Signal::SIGSTOP);
    let t0 = Instant::now();
    let s = f.wait_status(Duration::from_secs(3), "backend 0 unhealthy", |s| {
        !s.backends[0].healthy
    });
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_millis(300 + 400),
        "marked unhealthy after {took:?}"
    );
    assert_eq!(s.backends[0].pid, Some(stopped), "not restarted yet");
    let before = s.backends[0].total_connections;
    for _ in 0..20 {
        let r = get(f.addr(), "/page.html").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-fleet-backend"),
            Some(f.ports[1].to_string().as_str())
        );
    }
    let s = f.status();
    if s.backends[0].pid == Some(stopped) {
        assert_eq!(
            s.backends[0].total_connections, before,
            "no new connections to the stopped worker"
        );
    }
    let s = f.wait_status(Duration::from_secs(5), "the stopped worker replaced", |s| {
        let b = &s.backends[0];
        b.pid != Some(stopped) && b.healthy
    });
    assert!(s.backends[0].restarts >= 1);
    // Its exit (a clean exit 0 once SIGCONT let it handle SIGTERM) is shown
    // as fleet's doing, not as the worker's.
    let last = &s.backends[0].last_exit;
    assert_eq!(
        last.as_ref().and_then(|e| e.cause.as_deref()),
        Some("restarted by fleet: failed health checks"),
        "{last:?}"
    );
    let human = String::from_utf8_lossy(&f.fleet(&["status"]).stdout).to_string();
    assert!(
        human.contains("(restarted by fleet: failed health checks)"),
        "{human}"
    );
    wait_for(
        Duration::from_secs(3),
        "the stopped worker to be gone",
        || (!alive(stopped)).then_some(()),
    );
}

#[test]
fn killing_the_supervisor_takes_every_worker_with_it_and_up_starts_cleanly_after() {
    let mut f = Fleet::start(3, "");
    let workers = f.worker_pids();
    assert_eq!(workers.len(), 3);
    let procs = Procs::of(&workers);
    kill(f.supervisor, Signal::SIGKILL);
    let t0 = Instant::now();
    wait_for(Duration::from_secs(2), "every worker to exit", || {
        (!procs.any_alive()).then_some(())
    });
    eprintln!("workers gone {:?} after the supervisor", t0.elapsed());
    let out = f.fleet(&["up", "-d"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stale"),
        "says it cleaned stale state: {}",
        text(&out)
    );
    f.supervisor = f.status().pid;
    let s = f.status();
    assert!(Fleet::all_healthy(&s), "{s:?}");
    assert_eq!(get(f.addr(), "/page.html").unwrap().status, 200);
}

#[test]
fn status_after_a_supervisor_crash_reports_and_cleans_stale_state() {
    let f = Fleet::start(1, "");
    kill(f.supervisor, Signal::SIGKILL);
    wait_for(Duration::from_secs(2), "the supervisor to die", || {
        (!alive(f.supervisor)).then_some(())
    });
    let out = f.fleet(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stale"), "{err}");
    assert!(!f.scratch.state().join("fleet.pid").exists());
    assert!(!f.scratch.state().join("fleet.sock").exists());
}

/// `fleet serve` for every port but `bad`, which exits with code 3 at once.
fn one_bad_backend(ports: &[u16], bad: u16, www: &std::path::Path) -> String {
    format!(
        "backend:\n  command: [\"sh\", \"-c\", \"if [ {{port}} = {bad} ]; then echo dying >&2; exit 3; fi; exec {FLEET} serve --port {{port}} --www {}\"]\n",
        www.display()
    ) + &format!("# ports {ports:?}\n")
}

/// User + system CPU seconds of `pid`, from /proc/PID/stat.
#[cfg(target_os = "linux")]
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // After "pid (comm)": state is field 0, utime 11, stime 12.
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks
}

#[test]
fn crash_looping_backend_is_marked_failed_and_the_others_keep_serving() {
    let scratch = Scratch::new();
    let ports = free_ports(3);
    let bad = ports[1];
    let www = scratch.path().join("www");
    let yaml = format!(
        "backends: 2\nbase_port: {}\nlisten: 127.0.0.1:{}\nhealth:\n  interval: 100ms\n  timeout: 100ms\n\
         restart:\n  initial_backoff: 200ms\n  max_backoff: 1s\n  max_restarts: 4\n  window: 60s\n{}",
        ports[0],
        ports[2],
        one_bad_backend(&ports, bad, &www)
    );
    scratch.write("fleet.yaml", &yaml);
    // Start `up -d` without waiting: it returns only once the bad backend has
    // given up, and the CPU is measured while it crash-loops.
    let up = std::process::Command::new(FLEET)
        .args(["up", "-d"])
        .current_dir(scratch.path())
        .env("FLEET_STATE_DIR", scratch.state())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Adopt the fleet for cleanup whatever happens next.
    let mut f = Fleet::adopt(scratch, ports[..2].to_vec(), ports[2]);
    let scratch_dir = f.scratch.path().to_path_buf();
    let poll = |cond: &dyn Fn(&BackendStatus) -> bool| {
        wait_for(Duration::from_secs(10), "backend state", || {
            std::thread::sleep(Duration::from_millis(100)); // light polling: the supervisor's CPU is measured
            let out = std::process::Command::new(FLEET)
                .args(["status", "--json"])
                .env("FLEET_STATE_DIR", scratch_dir.join("st"))
                .output()
                .unwrap();
            let v: FleetStatus = serde_json::from_slice(&out.stdout).ok()?;
            cond(&v.backends[1]).then_some(v)
        })
    };
    let s = poll(&|b| b.restarts >= 1);
    f.supervisor = s.pid;
    #[cfg(target_os = "linux")]
    let (cpu0, t0) = (cpu_seconds(f.supervisor), Instant::now());
    poll(&|b| b.state == Phase::Failed);
    #[cfg(target_os = "linux")]
    {
        let (cpu, wall) = (cpu_seconds(f.supervisor) - cpu0, t0.elapsed().as_secs_f64());
        assert!(wall > 1.0, "the crash loop lasted {wall}s");
        assert!(
            cpu / wall < 0.05,
            "supervisor used {:.1}% CPU while the backend crash-looped",
            100.0 * cpu / wall
        );
        eprintln!(
            "supervisor CPU during the crash loop: {:.2}%",
            100.0 * cpu / wall
        );
    }
    let out = up.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "a degraded start still runs: {}",
        text(&out)
    );
    let said = text(&out);
    assert!(
        said.contains("DEGRADED") && said.contains(&bad.to_string()),
        "{said}"
    );
    let s = f.status();
    let b = &s.backends[1];
    assert_eq!(b.state, Phase::Failed, "{b:?}");
    assert!(!b.healthy);
    assert_eq!(b.restarts, 4, "{b:?}");
    assert_eq!(b.last_exit.as_ref().and_then(|e| e.code), Some(3), "{b:?}");
    assert!(
        b.reason
            .as_deref()
            .unwrap_or_default()
            .contains("crash loop"),
        "{b:?}"
    );
    for _ in 0..10 {
        let r = get(f.addr(), "/page.html").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-fleet-backend"),
            Some(ports[0].to_string().as_str())
        );
    }
    let human = String::from_utf8_lossy(&f.fleet(&["status"]).stdout).to_string();
    assert!(
        human.contains("failed") && human.contains("crash loop") && human.contains("exit 3"),
        "{human}"
    );
    let logs = String::from_utf8_lossy(&f.fleet(&["logs", &bad.to_string()]).stdout).to_string();
    assert!(
        logs.contains("dying"),
        "the failing backend's output is kept: {logs}"
    );
}

#[test]
fn no_backend_ever_ready_fails_up_and_leaves_nothing_running() {
    let scratch = Scratch::new();
    let ports = free_ports(3);
    scratch.write(
        "fleet.yaml",
        &format!(
            "backends: 2\nbase_port: {}\nlisten: 127.0.0.1:{}\nbackend:\n  command: [\"sh\", \"-c\", \"exit 7\"]\n\
             restart:\n  initial_backoff: 10ms\n  max_backoff: 20ms\n  max_restarts: 2\n",
            ports[0], ports[2]
        ),
    );
    let out = scratch.fleet(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no backend became ready") && err.contains("exited with code 7"),
        "{err}"
    );
    assert!(!port_open(ports[2]), "balancer closed");
    assert!(!scratch.state().join("fleet.pid").exists());
    let st = scratch.fleet(&["status"]);
    assert_eq!(st.status.code(), Some(3));
}

#[test]
fn python_http_server_backends_serve_and_their_logs_are_kept() {
    let scratch = Scratch::new();
    let f = Fleet::start_in(
        scratch,
        2,
        "backend:\n  command: [\"python3\", \"-m\", \"http.server\", \"{port}\", \"--bind\", \"127.0.0.1\", \"--directory\", \"www\"]\n\
         health:\n  kind: tcp\n  interval: 100ms\n  timeout: 100ms\n",
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let r = get(f.addr(), "/page.html").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, PAGE);
        seen.insert(r.header("server").unwrap_or_default().to_string());
    }
    assert!(seen.iter().all(|s| s.contains("Python")), "{seen:?}");
    let logs = wait_for(
        Duration::from_secs(3),
        "request lines in fleet logs",
        || {
            let out = f.fleet(&["logs"]);
            let t = String::from_utf8_lossy(&out.stdout).to_string();
            (t.matches("\"GET /page.html HTTP/1.1\" 200").count() >= 4).then_some(t)
        },
    );
    for p in &f.ports {
        assert!(
            logs.contains(&format!("[{p}]")),
            "tagged with the port: {logs}"
        );
    }
}

/// Start a fleet in `mode`, kill every backend (never restarted) and time one request.
fn with_every_backend_down(mode: &str) -> (std::io::Result<Response>, Duration, Fleet) {
    let f = Fleet::start(
        2,
        &format!("restart:\n  policy: never\nbalancer:\n  mode: {mode}\n"),
    );
    for i in 0..2 {
        kill(f.pid_of(i), Signal::SIGKILL);
    }
    f.wait_status(Duration::from_secs(3), "both backends stopped", |s| {
        s.backends.iter().all(|b| b.state == Phase::Stopped)
    });
    let t0 = Instant::now();
    let r = get(f.addr(), "/page.html");
    (r, t0.elapsed(), f)
}

#[test]
fn with_every_backend_down_a_client_gets_503_promptly() {
    let (r, took, f) = with_every_backend_down("http");
    let r = r.expect("an answer, not a hang or a reset");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.body, b"no healthy backend is available\n");
    assert!(took < PROMPT, "answered after {took:?}");
    let human = String::from_utf8_lossy(&f.fleet(&["status"]).stdout).to_string();
    assert!(human.contains("policy is never"), "{human}");
}

#[test]
fn in_tcp_mode_with_every_backend_down_a_client_is_closed_promptly() {
    let (r, took, _f) = with_every_backend_down("tcp");
    assert!(r.is_err(), "no backend, no response: {r:?}");
    assert!(took < PROMPT, "closed after {took:?}");
}

#[test]
fn fleet_logs_merges_backends_with_port_tags_and_filters_by_port() {
    let f = Fleet::start(2, "");
    let merged = wait_for(
        Duration::from_secs(10),
        "both backends' start lines",
        || {
            let t = String::from_utf8_lossy(&f.fleet(&["logs"]).stdout).to_string();
            f.ports
                .iter()
                .all(|p| t.contains(&format!("[{p}]")))
                .then_some(t)
        },
    );
    assert!(merged.contains("listening"), "{merged}");
    let one = String::from_utf8_lossy(
        &f.fleet(&["logs", "--tail", "5", &f.ports[1].to_string()])
            .stdout,
    )
    .to_string();
    assert!(
        one.contains(&f.ports[1].to_string()) && !one.contains(&f.ports[0].to_string()),
        "{one}"
    );
    let none = f.fleet(&["logs", "1"]);
    assert_eq!(none.status.code(), Some(1), "{}", text(&none));
}

/// `fleet guard` (what custom commands run under) in its own process group
/// with a pipe as stdin, as the supervisor starts it.
fn guard(script: &str, portable: bool) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(FLEET)
        .args(["guard", "--", "sh", "-c", script])
        .env(PORTABLE_ENV, if portable { "1" } else { "0" })
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

fn first_line(child: &mut std::process::Child) -> u32 {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().parse().unwrap()
}

#[test]
fn guard_reports_the_commands_exit_code_and_signal() {
    for portable in MODES {
        guard_reports(portable);
    }
}

fn guard_reports(portable: bool) {
    let mut g = guard("exit 3", portable);
    let _pids = PidGuard::new(vec![g.id()]);
    let _lifeline = g.stdin.take(); // `wait` would close it
    assert_eq!(g.wait().unwrap().code(), Some(3));

    use std::os::unix::process::ExitStatusExt;
    let mut g = guard("echo $$; exec sleep 30", portable);
    let inner = first_line(&mut g);
    let _pids = PidGuard::new(vec![g.id(), inner]);
    let _lifeline = g.stdin.take();
    // The supervisor signals the whole group.
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(g.id() as i32), Signal::SIGTERM).unwrap();
    let status = g.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(15),
        "dies the way its command died: {status:?}"
    );
}

#[test]
fn guard_kills_its_command_when_the_lifeline_closes() {
    for portable in MODES {
        guard_kills(portable);
    }
}

fn guard_kills(portable: bool) {
    let mut g = guard("echo $$; exec sleep 30", portable);
    let inner = first_line(&mut g);
    let _pids = PidGuard::new(vec![g.id(), inner]);
    assert!(alive(inner));
    drop(g.stdin.take()); // the supervisor is gone
    wait_for(Duration::from_secs(2), "the guarded command to die", || {
        (!alive(inner)).then_some(())
    });
    let status = g.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn fleet_logs_follow_prints_new_lines_as_they_come() {
    use std::io::BufRead;
    let f = Fleet::start(1, "");
    let mut follow = std::process::Command::new(FLEET)
        .args(["logs", "-f", "--tail", "0"])
        .env("FLEET_STATE_DIR", f.scratch.state())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = PidGuard::new(vec![follow.id()]);
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    // A restart makes the worker print its start line again.
    kill(f.pid_of(0), Signal::SIGKILL);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.by_ref().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let line = wait_for(Duration::from_secs(10), "a followed line", || {
        rx.try_recv().ok().filter(|l| l.contains("listening"))
    });
    assert!(line.contains(&format!("[{}]", f.ports[0])), "{line}");
    let _ = follow.kill();
    let _ = follow.wait();
}
