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
    verify_systemd(&units);
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

    let (_custom, k8s) = export(CUSTOM, "kubernetes", "k8s");
    let dep = std::fs::read_to_string(k8s.join("deployment.yaml")).unwrap();
    assert!(dep.contains("tcpSocket"), "{dep}");
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
