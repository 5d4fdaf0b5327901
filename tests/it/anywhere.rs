//! A tool installed by hand must work outside its repository: `fleet up` in
//! an empty directory serves the embedded page, `fleet init` writes a fleet
//! that starts, commands find the fleet from a subdirectory, and the CLI
//! ships its completions and man page.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    FLEET, FleetStatus, PAGE, alive, free_ports, get, kill, need_tool, text, wait_for,
};

/// An empty temporary directory whose fleet uses the default state dir
/// (`./.fleet`), stopped in `Drop` however the test ends.
struct Bare {
    dir: tempfile::TempDir,
}

impl Bare {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fa")
            .tempdir_in("/tmp")
            .unwrap();
        Bare { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `fleet ARGS` run in `self/rel`, with no state dir given: the command
    /// must find the fleet itself.
    fn fleet_in(&self, rel: &str, args: &[&str]) -> Output {
        Command::new(FLEET)
            .args(args)
            .current_dir(self.path().join(rel))
            .env_remove("FLEET_STATE_DIR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn supervisor_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.path().join(".fleet/fleet.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let pid = self.supervisor_pid();
        let _ = Command::new(FLEET)
            .args(["down", "--timeout", "2", "--state-dir"])
            .arg(self.path().join(".fleet"))
            .stdin(Stdio::null())
            .output();
        if let Some(pid) = pid
            && alive(pid)
        {
            // Workers die with it (parent-death signal / lifeline).
            kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `--base-port P --backends 2 --listen L` on free ports; the balancer's port.
fn port_flags() -> (Vec<String>, u16) {
    let ports = free_ports(3);
    let flags = vec![
        "--backends".into(),
        "2".into(),
        "--base-port".into(),
        ports[0].to_string(),
        // A bare port: 127.0.0.1:PORT.
        "--listen".into(),
        ports[2].to_string(),
    ];
    (flags, ports[2])
}

fn up_detached(bare: &Bare, extra: &[String]) -> (Output, u16) {
    let (flags, listen) = port_flags();
    let mut args: Vec<&str> = vec!["up", "-d"];
    args.extend(flags.iter().map(String::as_str));
    args.extend(extra.iter().map(String::as_str));
    (bare.fleet_in("", &args), listen)
}

#[test]
fn up_in_an_empty_dir_serves_the_embedded_page_and_bench_fails_nothing() {
    let bare = Bare::new();
    let (out, listen) = up_detached(&bare, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("built-in page"),
        "up does not say it serves the built-in page:\n{}",
        text(&out)
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], listen));
    let page = get(addr, "/page.html").unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.body, PAGE);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(get(addr, "/").unwrap().status, 200);
    assert_eq!(get(addr, "/nothing.html").unwrap().status, 404);

    // `fleet bench` with no URL finds the fleet's balancer and its page.
    let run = bare.fleet_in(
        "",
        &["bench", "-n", "200", "-c", "1,10", "--format", "json"],
    );
    assert!(run.status.success(), "{}", text(&run));
    let rows: Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["failed"], 0, "{row}");
        assert_eq!(row["non_2xx"], 0, "{row}");
        assert_eq!(row["complete"], 200, "{row}");
    }
}

#[test]
fn commands_find_the_fleet_from_a_subdirectory_and_say_which() {
    let bare = Bare::new();
    std::fs::create_dir_all(bare.path().join("src/deep")).unwrap();
    let (out, _) = up_detached(&bare, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let pid = bare.supervisor_pid().expect("pid file");

    let st = bare.fleet_in("src/deep", &["status", "--json"]);
    assert!(st.status.success(), "{}", text(&st));
    let s: FleetStatus = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(s.pid, pid);
    let found = std::fs::canonicalize(bare.path().join(".fleet")).unwrap();
    let said = stderr(&st);
    assert_eq!(said.lines().count(), 1, "one line on stderr: {said}");
    assert!(
        said.contains(&found.display().to_string()),
        "status does not name {}: {said}",
        found.display()
    );

    // Run from the fleet's own directory, nothing is said.
    let here = bare.fleet_in("", &["status"]);
    assert!(here.status.success(), "{}", text(&here));
    assert_eq!(stderr(&here), "");

    let logs = bare.fleet_in("src", &["logs", "--tail", "1"]);
    assert!(logs.status.success(), "{}", text(&logs));

    let down = bare.fleet_in("src/deep", &["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(stdout(&down).contains(&format!("stopped (pid {pid})")));
    wait_for(Duration::from_secs(10), "supervisor to exit", || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn no_fleet_anywhere_is_said_naming_the_absolute_dir_looked_in() {
    let bare = Bare::new();
    let here = std::fs::canonicalize(bare.path()).unwrap().join(".fleet");
    let st = bare.fleet_in("", &["status"]);
    assert_eq!(st.status.code(), Some(3), "{}", text(&st));
    assert!(
        stderr(&st).contains(&format!("no fleet is running in {} ", here.display())),
        "{}",
        text(&st)
    );
    // `down` from a directory with no fleet above it: nothing to stop, and
    // it says where it looked, not "in .fleet".
    let down = bare.fleet_in("", &["down"]);
    assert_eq!(down.status.code(), Some(0), "{}", text(&down));
    assert!(
        stdout(&down).contains(&format!(
            "no fleet is running in {}; nothing to stop",
            here.display()
        )),
        "{}",
        text(&down)
    );
}

/// fleet.yaml in `bare` for `ports` (two backends, then the balancer),
/// serving `bare/site` (relative to the file).
fn parent_fleet_yaml(bare: &Bare, ports: &[u16]) {
    std::fs::create_dir_all(bare.path().join("site")).unwrap();
    std::fs::write(bare.path().join("site/page.html"), "the parent's site\n").unwrap();
    std::fs::write(
        bare.path().join("fleet.yaml"),
        format!(
            "backends: 2\nbase_port: {}\nlisten: 127.0.0.1:{}\nwww: site\n",
            ports[0], ports[2]
        ),
    )
    .unwrap();
    std::fs::create_dir_all(bare.path().join("sub/deep")).unwrap();
}

#[test]
fn up_in_a_subdirectory_uses_the_parent_fleet_yaml_and_puts_the_state_dir_beside_it() {
    let bare = Bare::new();
    let ports = free_ports(3);
    parent_fleet_yaml(&bare, &ports);
    let file = std::fs::canonicalize(bare.path())
        .unwrap()
        .join("fleet.yaml");

    let out = bare.fleet_in("sub/deep", &["up", "-d"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!("fleet: using {}\n", file.display())),
        "{}",
        text(&out)
    );
    assert!(
        bare.supervisor_pid().is_some(),
        "no .fleet beside fleet.yaml"
    );
    assert!(!bare.path().join("sub/deep/.fleet").exists());
    // www: site is relative to the file, not to where `up` ran.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], ports[2]));
    let page = get(addr, "/page.html").unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.body, b"the parent's site\n");
    // The other verbs find that state dir from there too.
    let st = bare.fleet_in("sub/deep", &["status", "--json"]);
    assert!(st.status.success(), "{}", text(&st));

    // `export` uses the same file.
    let export = bare.fleet_in("sub/deep", &["export", "systemd"]);
    assert!(export.status.success(), "{}", text(&export));
    assert!(
        !stdout(&export).contains("built-in defaults")
            && stdout(&export).contains(&ports[0].to_string()),
        "{}",
        text(&export)
    );
    assert!(
        stderr(&export).contains(&format!("fleet: using {}", file.display())),
        "{}",
        text(&export)
    );

    // A fleet.yaml here wins over the parent's.
    let own = free_ports(2);
    std::fs::write(
        bare.path().join("sub/deep/fleet.yaml"),
        format!(
            "backends: 1\nbase_port: {}\nlisten: 127.0.0.1:{}\n",
            own[0], own[1]
        ),
    )
    .unwrap();
    let export = bare.fleet_in("sub/deep", &["export", "systemd"]);
    assert!(
        stdout(&export).contains(&own[0].to_string()) && stderr(&export).is_empty(),
        "{}",
        text(&export)
    );
}

#[test]
fn a_failed_up_leaves_no_state_dir_behind() {
    let bare = Bare::new();
    let ports = free_ports(3);
    parent_fleet_yaml(&bare, &ports);
    // The balancer's port is taken: `up` fails after creating its state dir.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", ports[2])).unwrap();
    for (dir, args) in [
        ("", &["up", "-d"][..]),
        ("sub/deep", &["up", "-d"]),
        ("sub", &["up"]),
    ] {
        let out = bare.fleet_in(dir, args);
        assert_eq!(out.status.code(), Some(1), "{dir} {args:?}: {}", text(&out));
        assert!(
            stderr(&out).contains(&format!("port {} is already in use", ports[2])),
            "{}",
            text(&out)
        );
        for d in ["", "sub", "sub/deep"] {
            assert!(
                !bare.path().join(d).join(".fleet").exists(),
                "{dir} {args:?} left {d}/.fleet"
            );
        }
    }
    // A state dir that was there before is left as it was.
    std::fs::create_dir(bare.path().join(".fleet")).unwrap();
    let out = bare.fleet_in("", &["up", "-d"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(bare.path().join(".fleet").is_dir());
}

/// The starter fleet.yaml points to the full reference by a command that
/// works where the starter was written (not to examples/ in fleet's source).
#[test]
fn init_points_to_init_full_which_writes_a_valid_reference() {
    let short = Bare::new();
    assert!(short.fleet_in("", &["init"]).status.success());
    let starter = std::fs::read_to_string(short.path().join("fleet.yaml")).unwrap();
    assert!(starter.contains("`fleet init --full`"), "{starter}");
    assert!(!starter.contains("examples/"), "{starter}");

    let full = Bare::new();
    let out = full.fleet_in("", &["init", "--full"]);
    assert!(out.status.success(), "{}", text(&out));
    let reference = std::fs::read_to_string(full.path().join("fleet.yaml")).unwrap();
    assert!(
        reference.starts_with("# fleet.yaml reference"),
        "{reference}"
    );
    assert!(reference.len() > 2 * starter.len());
    // It is a fleet.yaml fleet accepts as it is (export loads it as `up` does).
    let out = full.fleet_in("", &["export", "kubernetes"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn init_writes_a_fleet_that_starts_and_never_overwrites() {
    let bare = Bare::new();
    let out = bare.fleet_in("", &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(bare.path().join("fleet.yaml").is_file());
    assert_eq!(
        std::fs::read(bare.path().join("www/page.html")).unwrap(),
        PAGE
    );
    // The starter www/ is served from disk: an edit shows.
    std::fs::write(bare.path().join("www/page.html"), "edited\n").unwrap();
    // Flags override the written fleet.yaml's lab ports, which may be busy.
    let (up, listen) = up_detached(&bare, &[]);
    assert!(up.status.success(), "{}", text(&up));
    assert!(!stderr(&up).contains("built-in page"), "{}", text(&up));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], listen));
    assert_eq!(get(addr, "/page.html").unwrap().body, b"edited\n");

    let again = bare.fleet_in("", &["init"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        stderr(&again).contains("fleet.yaml and www/ already exist"),
        "{}",
        text(&again)
    );
    assert_eq!(
        std::fs::read(bare.path().join("www/page.html")).unwrap(),
        b"edited\n"
    );
}

#[test]
fn serve_without_www_serves_the_embedded_page() {
    let bare = Bare::new();
    let port = free_ports(1)[0];
    let child = Command::new(FLEET)
        .args(["serve", "--port", &port.to_string()])
        .current_dir(bare.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = crate::harness::PidGuard::new(vec![child.id()]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let page = wait_for(Duration::from_secs(20), "the worker to answer", || {
        get(addr, "/page.html").ok()
    });
    assert_eq!(page.status, 200);
    assert_eq!(page.body, PAGE);
    assert_eq!(
        page.header("x-fleet-backend"),
        Some(port.to_string().as_str())
    );
    kill(child.id(), nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("built-in page"));
}

// --- a finished CLI --------------------------------------------------------

#[test]
fn bash_completion_is_valid_bash_and_names_the_subcommands() {
    let bare = Bare::new();
    let out = bare.fleet_in("", &["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out));
    let script = bare.path().join("fleet.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {}", text(&check));
    let s = stdout(&out);
    for sub in ["up", "status", "down", "init", "completions", "man"] {
        assert!(s.contains(sub), "completion lacks {sub}");
    }
    for shell in ["zsh", "fish"] {
        let out = bare.fleet_in("", &["completions", shell]);
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn completions_offer_no_internal_flag_and_nothing_a_subcommand_refuses() {
    let bare = Bare::new();
    let bash = stdout(&bare.fleet_in("", &["completions", "bash"]));
    // bash: each subcommand's `opts="..."` line, as the shell reads it.
    let opts = |sub: &str| -> Vec<String> {
        let at = bash
            .find(&format!("        fleet__subcmd__{sub})\n"))
            .unwrap_or_else(|| panic!("no {sub} in:\n{bash}"));
        let line = bash[at..].lines().nth(1).unwrap().trim();
        let words = line.strip_prefix("opts=\"").unwrap().trim_end_matches('"');
        words.split(' ').map(str::to_owned).collect()
    };
    let up = opts("up");
    assert!(up.contains(&"-d".to_owned()) && up.contains(&"--detach".to_owned()));
    assert!(!up.contains(&"--detached-child".to_owned()), "{up:?}");
    let export = opts("export");
    assert!(export.contains(&"--file".to_owned()), "{export:?}");
    for refused in ["-d", "--detach", "--state-dir", "--detached-child"] {
        assert!(
            !export.contains(&refused.to_owned()),
            "{refused} in {export:?}"
        );
    }
    assert!(!bash.contains("guard"), "the internal guard is offered");

    let zsh = stdout(&bare.fleet_in("", &["completions", "zsh"]));
    assert!(!zsh.contains("detached-child"), "{zsh}");
    let export = zsh
        .split("\n(export)\n")
        .nth(1)
        .and_then(|s| s.split("\n;;").next())
        .unwrap_or_else(|| panic!("no export in:\n{zsh}"));
    assert!(export.contains("'--file=["), "{export}");
    assert!(
        !export.contains("'-d[") && !export.contains("--detach") && !export.contains("--state-dir"),
        "{export}"
    );
}

#[test]
fn man_page_renders_cleanly() {
    let bare = Bare::new();
    let out = bare.fleet_in("", &["man"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains(".TH FLEET 1 "), "{}", text(&out));
    let page = bare.path().join("fleet.1");
    std::fs::write(&page, &out.stdout).unwrap();

    let dir = bare.path().join("man1");
    let out = bare.fleet_in("", &["man", "-o", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    for name in ["fleet.1", "fleet-up.1", "fleet-export.1"] {
        assert!(dir.join(name).is_file(), "no {name}");
    }
    assert!(
        !dir.join("fleet-guard.1").exists(),
        "a page for the hidden guard"
    );

    if need_tool("mandoc", "apt-get install mandoc").is_some() {
        let mut pages: Vec<PathBuf> = vec![page];
        pages.extend(std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()));
        // Every level, style included: not one message.
        let lint = Command::new("mandoc")
            .args(["-T", "lint", "-W", "all"])
            .args(&pages)
            .output()
            .unwrap();
        assert!(
            lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
            "mandoc -T lint: {}",
            text(&lint)
        );
        let render = Command::new("mandoc")
            .args(["-T", "utf8", "-O", "width=80"])
            .arg(bare.path().join("fleet.1"))
            .output()
            .unwrap();
        // Backspace overstrikes (bold) out, as `col -b` does.
        let shown: String = {
            let raw = stdout(&render);
            let mut out = String::new();
            for c in raw.chars() {
                if c == '\u{8}' {
                    out.pop();
                } else {
                    out.push(c);
                }
            }
            out
        };
        for section in [
            "\nEXAMPLES\n",
            "\nEXIT STATUS\n",
            "\nENVIRONMENT\n",
            "\nSEE ALSO\n",
        ] {
            assert!(shown.contains(section), "no {section:?}:\n{shown}");
        }
        assert!(
            !shown.contains("EXTRA") && !shown.contains("fleet-help"),
            "{shown}"
        );
        // An example as typed, on a line of its own, its explanation below it.
        assert!(shown.contains("\n       fleet up -d\n"), "{shown}");
        // Exit codes one per entry, apart from the environment.
        assert!(shown.contains("\n       3      no fleet"), "{shown}");
    }
}

#[test]
fn every_subcommand_help_has_examples() {
    let bare = Bare::new();
    for sub in [
        "up",
        "status",
        "down",
        "serve",
        "logs",
        "bench",
        "init",
        "export",
        "completions",
        "man",
    ] {
        let out = bare.fleet_in("", &[sub, "--help"]);
        assert!(out.status.success(), "{}", text(&out));
        let help = stdout(&out);
        let examples = help.split("Examples:\n").nth(1).unwrap_or("");
        assert!(
            examples.contains(&format!("fleet {sub}")),
            "`fleet {sub} --help` has no examples of itself:\n{help}"
        );
    }
}
