//! The shutdown order, in process: `Supervisor::run` with listeners bound
//! here (the balancer on port 0, the control socket in a temp state dir) and
//! backends that ignore SIGTERM, stopped by a `down` request. What `fleet
//! down` promises is checked where it happens: its reply comes only after
//! every backend is dead and the control socket is gone, and the socket never
//! disappears while a backend still lives.
//!
//! Unit tests have no `fleet` binary to re-execute, so `Options::exe` is a
//! stand-in script that answers `serve --port P ...` with a Python HTTP
//! server (python3 is a CI requirement already, see `.ci/run`).

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Listeners, Options, Readiness, StateFiles, Supervisor};
use crate::config::{Config, HealthKind};
use crate::control::client;
use crate::control::protocol::{Reply, Request};
use crate::state_dir::StateDir;

const PATIENCE: Duration = Duration::from_secs(20);

/// A stand-in for the fleet executable whose workers ignore SIGTERM, so
/// shutdown has to take the SIGKILL step too.
fn stubborn_worker_exe(dir: &Path) -> std::path::PathBuf {
    let exe = dir.join("fake-fleet");
    std::fs::write(
        &exe,
        "#!/bin/sh\n# serve --port P ...\ntrap '' TERM\nexec python3 -m http.server \"$3\" --bind 127.0.0.1 >/dev/null 2>&1\n",
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// `n` consecutive free loopback ports below the ephemeral range.
fn free_ports(n: u16) -> u16 {
    for _ in 0..1000 {
        let base = fastrand::u16(30_000..31_000);
        if (base..base + n).all(|p| crate::ports::is_free(SocketAddr::from(([127, 0, 0, 1], p)))) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_replies_after_every_backend_is_dead_and_the_socket_is_gone() {
    let dir = tempfile::Builder::new()
        .prefix("fs")
        .tempdir_in("/tmp")
        .unwrap();
    let state = StateDir::new(dir.path().join("st"));
    let _created = state.create().unwrap();
    let (lock, _) = state.lock().unwrap();
    let mut config = Config {
        backends: 2,
        base_port: free_ports(2),
        www: crate::worker::Www::Dir(dir.path().to_path_buf()),
        ..Config::default()
    };
    config.health.kind = HealthKind::Tcp;
    config.health.interval = Duration::from_millis(50);
    config.health.timeout = Duration::from_millis(50);
    config.shutdown.timeout = Duration::from_millis(300);
    let balancer = crate::listener::Listening::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let balancer_addr = balancer.local_addr().unwrap();
    let control =
        tokio::net::UnixListener::from_std(crate::control::server::bind(&state.socket()).unwrap())
            .unwrap();
    let opts = Options {
        echo_output: false,
        exe: stubborn_worker_exe(dir.path()),
        reload: None,
        signals: None,
        take_over: None,
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let supervisor = tokio::spawn(
        Supervisor::start(
            config,
            Listeners {
                balancer,
                control,
                admin: None,
            },
            StateFiles {
                dir: state.clone(),
                lock,
            },
            opts,
            CancellationToken::new(),
        )
        .run(ready_tx),
    );
    let ready = tokio::time::timeout(PATIENCE, ready_rx)
        .await
        .expect("ready in time")
        .expect("the supervisor reports");
    assert!(matches!(ready, Ok(Readiness::Ready { .. })), "{ready:?}");

    let status_state = state.clone();
    let status = tokio::task::spawn_blocking(move || client::status(&status_state))
        .await
        .unwrap()
        .unwrap();
    let pids: Vec<u32> = status.backends.iter().filter_map(|b| b.pid).collect();
    assert_eq!(pids.len(), 2, "{status:?}");

    // Sample the shutdown as it happens: the socket must outlive every backend.
    let socket = state.socket();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, pids) = (Arc::clone(&done), pids.clone());
        std::thread::spawn(move || {
            let mut violations = 0;
            while !done.load(Ordering::SeqCst) {
                let alive = pids.iter().any(|p| crate::process::alive(*p));
                if alive && !socket.exists() {
                    violations += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            violations
        })
    };

    let down_state = state.clone();
    let reply = tokio::task::spawn_blocking(move || {
        client::call(
            &down_state,
            Request::Down { timeout_s: None },
            Some(PATIENCE),
        )
    })
    .await
    .unwrap();
    assert!(matches!(reply, Ok(Reply::Stopped { .. })), "{reply:?}");
    // The reply means the work is done.
    for pid in &pids {
        assert!(
            !crate::process::alive(*pid),
            "backend {pid} outlived `down`"
        );
    }
    assert!(!state.socket().exists(), "the socket outlived `down`");
    assert!(
        TcpStream::connect_timeout(&balancer_addr, Duration::from_millis(200)).is_err(),
        "the balancer still accepts"
    );
    tokio::time::timeout(PATIENCE, supervisor)
        .await
        .expect("run returns after the reply")
        .unwrap()
        .unwrap();
    done.store(true, Ordering::SeqCst);
    assert_eq!(
        watcher.join().unwrap(),
        0,
        "the socket was gone while a backend lived"
    );
}
