//! `fleet export`: what the real binary writes passes the orchestrators' own
//! checkers, `systemd-analyze verify` and `kubernetes-validate`, for the
//! shipped fleet.yaml and for a custom command with tcp health.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{FLEET, Scratch, need_tool, text};

const SHIPPED: &str = include_str!("../../fleet.yaml");
const CUSTOM: &str = "\
backends: 3
base_port: 9100
listen: 8080
backend:
  command: [\"python3\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{port}\"]
  env: {GREETING: \"hello 100%\"}
health:
  kind: tcp
  interval: 2s
  timeout: 1500ms
restart:
  policy: on-failure
  max_restarts: 2
  window: 30s
";

/// `fleet export TARGET -o OUT` for a fleet.yaml of `yaml`: the scratch
/// directory (keep it while the files are read) and OUT in it.
fn export(yaml: &str, target: &str, out: &str) -> (Scratch, PathBuf) {
    let s = Scratch::new();
    s.write("fleet.yaml", yaml);
    let dir = s.path().join(out);
    let o = s.fleet(&[
        "export",
        target,
        "-o",
        dir.to_str().unwrap(),
        "--exe",
        FLEET,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    (s, dir)
}

fn verify_systemd(dir: &Path) {
    // A template is verified through an instance; the unit files are read
    // from the directory the paths name.
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("fleet-backend@9002.service"))
        .arg(dir.join("fleet.service"))
        .arg(dir.join("fleet-balancer.service"))
        .output()
        .unwrap();
    // verify exits 0 on a key it ignores, so its complaints are read too.
    let complaints: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains("fleet"))
        .map(str::to_owned)
        .collect();
    assert!(
        o.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {}\n{complaints:#?}",
        text(&o)
    );
}

fn validate_kubernetes(dir: &Path) {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.iter().any(|f| f.ends_with("deployment.yaml")));
    assert!(files.iter().any(|f| f.ends_with("service.yaml")));
    let o = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .output()
        .unwrap();
    assert!(o.status.success(), "kubernetes-validate: {}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("WARN"),
        "{}",
        text(&o)
    );
}

#[test]
fn exported_systemd_units_verify_for_the_shipped_and_a_custom_fleet() {
    if need_tool("systemd-analyze", "apt-get install systemd").is_none() {
        return;
    }
    let (_shipped, units) = export(SHIPPED, "systemd", "units");
    let unit = std::fs::read_to_string(units.join("fleet-backend@.service")).unwrap();
    assert!(unit.contains("Restart=always"), "{unit}");
    assert!(unit.contains("StartLimitBurst=6"), "{unit}");
    verify_systemd(&units);

    let (_custom, units) = export(CUSTOM, "systemd", "units");
    let unit = std::fs::read_to_string(units.join("fleet-backend@.service")).unwrap();
    assert!(unit.contains("http.server --bind 127.0.0.1 %i\n"), "{unit}");
    assert!(unit.contains("Restart=on-failure"), "{unit}");
    assert!(
        unit.contains("Environment=\"GREETING=hello 100%%\""),
        "{unit}"
    );
    // As `fleet up` runs a custom command: unbuffered Python output.
    assert!(
        unit.contains("\nEnvironment=PYTHONUNBUFFERED=1\n"),
        "{unit}"
    );
    // Never a version manager's shim (pyenv's python3 is one on many machines).
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(!exec.contains("/shims/"), "{unit}");
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap();
    for name in [
        "fleet-backend@.service",
        "fleet.service",
        "fleet-balancer.service",
    ] {
        let u = std::fs::read_to_string(units.join(name)).unwrap();
        if me.uid.is_root() {
            assert!(u.contains("\n#User=\n") && !u.contains("\nUser="), "{u}");
        } else {
            assert!(u.contains(&format!("\nUser={}\n", me.name)), "{u}");
        }
        assert!(!u.contains("systemd-run"), "{u}");
    }
    verify_systemd(&units);
}

/// `fleet export systemd` for `yaml` run with `cmd`'s settings (user, PATH),
/// the units' text by file name.
fn export_systemd_as(s: &Scratch, yaml: &str, cmd: &mut Command) -> PathBuf {
    s.write("fleet.yaml", yaml);
    let dir = s.path().join("as");
    let o = crate::harness::run_to_end(
        cmd.args(["export", "systemd", "--exe", FLEET, "-o"])
            .arg(&dir)
            .current_dir(s.path())
            .env_remove("FLEET_STATE_DIR")
            .env_remove("RUST_LOG"),
        std::time::Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", text(&o));
    dir
}

#[test]
fn exported_units_run_as_the_exporting_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if need_tool("systemd-analyze", "apt-get install systemd").is_none() {
        return;
    }
    let s = Scratch::new();
    // Not `nobody`: systemd-analyze calls that user unsafe, rightly.
    let other = nix::unistd::User::from_name("daemon").unwrap();
    let (mut cmd, name) = match other {
        // As root (CI), export as another user, who must be able to read
        // the scratch dir and write the units there.
        Some(u) if nix::unistd::geteuid().is_root() => {
            std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
            let mut c = Command::new(FLEET);
            c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            (c, u.name)
        }
        _ => {
            let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
                .unwrap()
                .unwrap();
            (Command::new(FLEET), me.name)
        }
    };
    let units = export_systemd_as(&s, CUSTOM, &mut cmd);
    for file in [
        "fleet-backend@.service",
        "fleet.service",
        "fleet-balancer.service",
    ] {
        let u = std::fs::read_to_string(units.join(file)).unwrap();
        assert!(u.contains(&format!("\nUser={name}\n")), "{u}");
    }
    verify_systemd(&units);
}

/// A version manager laid out like pyenv: `ROOT/shims/PROGRAM` on PATH and
/// `ROOT/bin/MANAGER which PROGRAM` naming the real program, per directory.
#[test]
fn a_version_manager_shim_is_exported_as_the_program_it_runs() {
    use std::os::unix::fs::PermissionsExt;
    if need_tool("systemd-analyze", "apt-get install systemd").is_none() {
        return;
    }
    let s = Scratch::new();
    let root = s.path().join(".labenv");
    let exe = |path: &Path, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let real = s.path().join("versions/7.1/bin/labserve");
    exe(&real, "#!/bin/sh\nexit 0\n");
    exe(
        &root.join("shims/labserve"),
        "#!/bin/sh\nexec labenv exec labserve \"$@\"\n",
    );
    // Answers only from the backend's directory, as pyenv's .python-version does.
    exe(
        &root.join("bin/labenv"),
        &format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"which labserve\" ] && [ -f .labenv-version ] && echo {}\n",
            real.display()
        ),
    );
    std::fs::create_dir(s.path().join("app")).unwrap();
    std::fs::write(s.path().join("app/.labenv-version"), "7.1\n").unwrap();
    let path = format!(
        "{}:{}",
        root.join("shims").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let yaml = "backend:\n  command: [labserve, \"{port}\"]\n  cwd: app\n";
    let units = export_systemd_as(&s, yaml, Command::new(FLEET).env("PATH", &path));
    let unit = std::fs::read_to_string(units.join("fleet-backend@.service")).unwrap();
    assert!(
        unit.contains(&format!("\nExecStart={} %i\n", real.display())),
        "{unit}"
    );
    assert!(unit.contains("# labserve is a labenv shim here"), "{unit}");
    verify_systemd(&units);

    // No answer (here: run from another directory): the shim stays, and the
    // unit says what to do.
    let yaml = "backend:\n  command: [labserve, \"{port}\"]\n";
    let units = export_systemd_as(&s, yaml, Command::new(FLEET).env("PATH", &path));
    let unit = std::fs::read_to_string(units.join("fleet-backend@.service")).unwrap();
    assert!(unit.contains("/.labenv/shims/labserve %i\n"), "{unit}");
    assert!(
        unit.contains("put the\n# interpreter's own path here"),
        "{unit}"
    );
}

#[test]
fn exported_kubernetes_manifests_validate_for_the_shipped_and_a_custom_fleet() {
    if need_tool("kubernetes-validate", "pip install kubernetes-validate").is_none() {
        return;
    }
    let (_shipped, k8s) = export(SHIPPED, "kubernetes", "k8s");
    let cm = std::fs::read_to_string(k8s.join("configmap.yaml")).unwrap();
    assert!(
        cm.contains("Hello from the fleet"),
        "www is not in the ConfigMap"
    );
    validate_kubernetes(&k8s);

    let (custom, k8s) = export(CUSTOM, "kubernetes", "k8s");
    let dep = std::fs::read_to_string(k8s.join("deployment.yaml")).unwrap();
    assert!(dep.contains("tcpSocket"), "{dep}");
    // backend.cwd (here the file's directory) is carried, and said to be so.
    let cwd = custom.path().display().to_string();
    assert!(dep.contains(&format!("workingDir: {cwd}\n")), "{dep}");
    assert!(
        dep.contains("# workingDir is backend.cwd as on this machine"),
        "{dep}"
    );
    // A locally built image (kind, minikube) is found.
    assert!(dep.contains("imagePullPolicy: IfNotPresent\n"), "{dep}");
    assert!(
        dep.contains("value: '1'") || dep.contains("value: \"1\""),
        "{dep}"
    );
    assert!(dep.contains("replicas: 3"), "{dep}");
    assert!(!k8s.join("configmap.yaml").exists());
    validate_kubernetes(&k8s);
}

#[test]
fn export_prints_to_stdout_without_out_dir_and_rejects_detach() {
    let s = Scratch::new();
    let o = s.fleet(&["export", "kubernetes", "--listen", "8080"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("kind: Deployment") && out.contains("port: 8080"),
        "{out}"
    );
    let o = s.fleet(&["export", "systemd", "-d"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
