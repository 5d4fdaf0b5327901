//! The state dir is fleet's own: `fleet up` refuses one that is a link,
//! another user's or writable by others, never writes through a link planted
//! in it, and removes a leftover `fleet.sock` only if it is a socket.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::harness::*;

fn mkdir_mode(path: &Path, mode: u32) {
    fs::DirBuilder::new().mode(mode).create(path).unwrap();
    // The umask may have taken bits off.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The `nobody` user when this runs as root; otherwise None, having said
/// the test is skipped because what it does (`needs`) needs root.
fn nobody_if_root(needs: &str) -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: {needs} needs root (CI runs as root)");
        return None;
    }
    Some(
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("a nobody user"),
    )
}

/// `fleet up -d` in `s` (its state dir `st`) with a valid fleet.yaml: the
/// output and the ports it was given (none of them must be left open).
fn up(s: &Scratch) -> (std::process::Output, Vec<u16>) {
    let p = free_ports(2);
    s.write("fleet.yaml", &fleet_yaml(&p, ""));
    (s.fleet(&["up", "-d"]), p)
}

#[track_caller]
fn assert_refused(s: &Scratch, says: &[&str]) {
    let (out, ports) = up(s);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // One line, naming the state dir by its absolute path.
    assert_eq!(err.trim_end().lines().count(), 1, "{}", text(&out));
    assert!(
        err.contains(&format!("refusing state dir {}", s.state().display())),
        "{}",
        text(&out)
    );
    for word in says {
        assert!(err.contains(word), "{word:?} in {}", text(&out));
    }
    for p in ports {
        assert!(!port_open(p), "port {p} left open");
    }
}

#[test]
fn a_link_planted_as_the_supervisor_log_is_refused_and_never_written_through() {
    let s = Scratch::new();
    mkdir_mode(&s.state(), 0o700);
    mkdir_mode(&s.state().join("logs"), 0o700);
    let victim = s.write("victim.txt", "precious\n");
    std::os::unix::fs::symlink(&victim, s.state().join("logs/supervisor.log")).unwrap();
    assert_refused(&s, &["logs/supervisor.log is a symbolic link", "remove it"]);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    // The link is the user's to remove: left as it was.
    assert!(
        fs::symlink_metadata(s.state().join("logs/supervisor.log"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_state_dir_that_is_a_link_is_refused() {
    let s = Scratch::new();
    let elsewhere = s.path().join("elsewhere");
    mkdir_mode(&elsewhere, 0o755);
    std::os::unix::fs::symlink(&elsewhere, s.state()).unwrap();
    assert_refused(&s, &["it is a symbolic link (to ", "--state-dir"]);
    // Nothing was created or changed through the link.
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(mode(&elsewhere), 0o755);
}

#[test]
fn a_state_dir_writable_by_others_is_refused() {
    for (dir_mode, logs_mode) in [(0o770, None), (0o707, None), (0o700, Some(0o777))] {
        let s = Scratch::new();
        mkdir_mode(&s.state(), dir_mode);
        if let Some(m) = logs_mode {
            mkdir_mode(&s.state().join("logs"), m);
        }
        assert_refused(&s, &["writable by group or others", "chmod 700"]);
        // Refused, not fixed: what was planted meanwhile cannot be known.
        assert_eq!(mode(&s.state()), dir_mode);
    }
}

#[test]
fn a_state_dir_readable_by_others_is_tightened_to_0700() {
    let s = Scratch::new();
    mkdir_mode(&s.state(), 0o755);
    mkdir_mode(&s.state().join("logs"), 0o755);
    let f = Fleet::start_in(s, 1, "");
    let st = f.scratch.state();
    assert_eq!(mode(&st), 0o700);
    assert_eq!(mode(&st.join("logs")), 0o700);
}

#[test]
fn another_users_state_dir_is_refused() {
    let Some(nobody) = nobody_if_root("giving a dir to another user") else {
        return;
    };
    let s = Scratch::new();
    mkdir_mode(&s.state(), 0o700);
    nix::unistd::chown(&s.state(), Some(nobody.uid), Some(nobody.gid)).unwrap();
    assert_refused(
        &s,
        &[
            &format!("belongs to uid {}", nobody.uid),
            "run fleet as its owner",
        ],
    );
}

#[test]
fn another_user_running_up_on_a_state_dir_is_refused_naming_its_owner() {
    use std::os::unix::process::CommandExt;
    let Some(nobody) = nobody_if_root("dropping privileges") else {
        return;
    };
    let s = Scratch::new();
    mkdir_mode(&s.state(), 0o700);
    // nobody may read the project, not the state dir.
    fs::set_permissions(s.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let p = free_ports(2);
    s.write("fleet.yaml", &fleet_yaml(&p, ""));
    let out = run_to_end(
        std::process::Command::new(FLEET)
            .args(["up", "-d"])
            .current_dir(s.path())
            .env("FLEET_STATE_DIR", s.state())
            .env_remove("RUST_LOG")
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw()),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "it belongs to uid 0, not to uid {} that runs fleet",
            nobody.uid
        )),
        "{}",
        text(&out)
    );
    for port in p {
        assert!(!port_open(port));
    }
}

#[test]
fn a_file_named_fleet_sock_is_not_deleted_but_refused() {
    let s = Scratch::new();
    mkdir_mode(&s.state(), 0o700);
    let sock = s.state().join("fleet.sock");
    fs::write(&sock, "not a socket\n").unwrap();
    assert_refused(
        &s,
        &["fleet.sock is a regular file, not a socket", "move it away"],
    );
    assert_eq!(fs::read_to_string(&sock).unwrap(), "not a socket\n");
    // The verbs that clean up a dead fleet's socket leave it too.
    let out = s.fleet(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a socket: left in place"),
        "{}",
        text(&out)
    );
    assert_eq!(fs::read_to_string(&sock).unwrap(), "not a socket\n");
}
