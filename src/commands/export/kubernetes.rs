//! Kubernetes manifests for a fleet: a Deployment with one pod per backend,
//! a Service in front of them (Kubernetes balances; fleet's balancer is not
//! needed), and the www content.
//!
//! Mapping:
//! - `backends` -> `replicas`; every pod listens on `base_port`, the
//!   Service on `listen`'s port.
//! - `health:` -> readiness probe (http path or tcp; `interval`, `timeout`
//!   rounded up to whole seconds, `fall` failures, `rise` successes) and
//!   liveness probe (`restart_after` failures), plus a startup probe giving a
//!   new pod the 30 s `fleet up` gives a backend's first pass.
//! - `shutdown.timeout` -> `terminationGracePeriodSeconds`.
//! - `upstreams:` are not exported (the Service balances only its pods);
//!   the header names them.
//! - `restart:` does not map: a Deployment always restarts its pods (with
//!   the kubelet's own backoff); the header says so when the policy differs.
//! - www (built-in worker): a ConfigMap mounted at `/srv/www` when the
//!   files total under [`CONFIGMAP_LIMIT`]; otherwise a PersistentVolumeClaim
//!   named `fleet-www` that the user fills (a ConfigMap is capped at 1 MiB
//!   and every object lives in etcd). No www: the embedded page, no volume.
//!
//! - A custom command's `backend.cwd` -> `workingDir`, the path as on this
//!   machine (the header says the image must hold the command there), and
//!   `PYTHONUNBUFFERED=1` as `fleet up` sets it, unless `backend.env` names it.
//! - `imagePullPolicy: IfNotPresent`: the default for `:latest` is `Always`,
//!   which never finds an image built locally and loaded into kind or
//!   minikube (the header says how to load one).
//!
//! Resource requests are small fixed values ([`CPU_REQUEST`],
//! [`MEMORY_REQUEST`]) measured for the built-in worker; a custom command
//! should edit them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{ExportError, File};
use crate::config::{BackendProgram, Config, HealthKind, RestartPolicy, Www};

/// Above this total size the www content goes to a volume, not a ConfigMap.
pub(super) const CONFIGMAP_LIMIT: u64 = 512 * 1024;
/// Where the www content is mounted in the pod.
const WWW_MOUNT: &str = "/srv/www";
/// The built-in worker idles at about 3 MiB RSS and well under 1% of a core.
const CPU_REQUEST: &str = "50m";
const MEMORY_REQUEST: &str = "32Mi";
/// How long a new pod may take to pass its first probe, as `fleet up` allows.
const STARTUP_GRACE_S: u64 = 30;
const NAME: &str = "fleet";

pub(super) fn manifests(config: &Config, image: &str) -> Result<Vec<File>, ExportError> {
    let service_port = config.listen.port();
    if service_port == 0 {
        return Err(ExportError::ListenPortZero);
    }
    let www = match (&config.backend, &config.www) {
        (BackendProgram::Builtin, Www::Dir(dir)) => Some(read_www(dir)?),
        _ => None,
    };
    let mut notes = vec![format!(
        "image {image}, imagePullPolicy IfNotPresent: a locally built image is used once \
         loaded into the cluster (kind load docker-image {image}; minikube image load {image})"
    )];
    if let BackendProgram::Custom { cwd, .. } = &config.backend {
        notes.push(format!(
            "workingDir is backend.cwd as on this machine ({}): the image must hold the \
             command's files there",
            cwd.display()
        ));
    }
    if config.restart.policy != RestartPolicy::Always {
        notes.push(format!(
            "restart.policy {} is not exported: a Deployment always restarts its pods",
            match config.restart.policy {
                RestartPolicy::OnFailure => "on-failure",
                _ => "never",
            }
        ));
    }
    if !config.upstreams.is_empty() {
        let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        notes.push(format!(
            "upstreams ({}) are not exported: the Service balances only these pods",
            names.join(", ")
        ));
    }
    let mut files = Vec::new();
    let volume = match &www {
        Some(site) if site.total < CONFIGMAP_LIMIT => {
            files.push(file("configmap.yaml", &[], &configmap(site)));
            Some(json!({
                "name": "www",
                "configMap": {"name": format!("{NAME}-www"), "items": site.items()},
            }))
        }
        Some(site) => {
            notes.push(format!(
                "www is {} KiB, more than a ConfigMap should hold ({} KiB): copy its files \
                 into the PersistentVolumeClaim {NAME}-www, or bake them into the image at {WWW_MOUNT} \
                 and drop the volume",
                site.total.div_ceil(1024),
                CONFIGMAP_LIMIT / 1024
            ));
            files.push(file("pvc.yaml", &[], &pvc(site.total)));
            Some(json!({
                "name": "www",
                "persistentVolumeClaim": {"claimName": format!("{NAME}-www"), "readOnly": true},
            }))
        }
        None => None,
    };
    files.push(file(
        "deployment.yaml",
        &notes,
        &deployment(config, image, volume),
    ));
    files.push(file("service.yaml", &[], &service(config, service_port)));
    Ok(files)
}

fn file(name: &str, notes: &[String], doc: &Value) -> File {
    let mut text = format!("# {name}: generated by `fleet export kubernetes`\n");
    for n in notes {
        let _ = writeln!(text, "# {n}");
    }
    text.push_str("---\n");
    text.push_str(&serde_saphyr::to_string(doc).expect("a JSON value serializes as YAML"));
    File {
        name: name.into(),
        text,
    }
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": NAME})
}

fn deployment(config: &Config, image: &str, volume: Option<Value>) -> Value {
    let port = config.base_port;
    let (command, env) = match &config.backend {
        BackendProgram::Builtin => {
            let mut cmd = vec![
                "fleet".to_string(),
                "serve".into(),
                "--port".into(),
                port.to_string(),
                // Pods are reached over the pod network, not loopback.
                "--bind".into(),
                "0.0.0.0".into(),
            ];
            if volume.is_some() {
                cmd.extend(["--www".into(), WWW_MOUNT.into()]);
            } else {
                cmd.push("--embedded".into());
            }
            (cmd, Vec::new())
        }
        BackendProgram::Custom {
            program, args, env, ..
        } => {
            let port = port.to_string();
            let mut cmd = vec![program.clone()];
            cmd.extend(args.iter().map(|a| a.replace("{port}", &port)));
            // As `fleet up` sets it: output reaches `kubectl logs` as written.
            let unbuffered = (!env.iter().any(|(k, _)| k == "PYTHONUNBUFFERED"))
                .then(|| json!({"name": "PYTHONUNBUFFERED", "value": "1"}));
            let env: Vec<Value> = unbuffered
                .into_iter()
                .chain(env.iter().map(|(k, v)| json!({"name": k, "value": v})))
                .collect();
            (cmd, env)
        }
    };
    let mut env = env;
    env.push(json!({"name": "PORT", "value": port.to_string()}));
    let h = &config.health;
    let check = match &h.kind {
        HealthKind::Http { path } => json!({"httpGet": {"path": path, "port": port}}),
        HealthKind::Tcp => json!({"tcpSocket": {"port": port}}),
    };
    let period = whole_secs(h.interval);
    let timeout = whole_secs(h.timeout);
    let probe = |extra: Value| {
        let mut p = check.clone();
        merge(
            &mut p,
            json!({"periodSeconds": period, "timeoutSeconds": timeout}),
        );
        merge(&mut p, extra);
        p
    };
    let mut container = json!({
        "name": "backend",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": probe(json!({"failureThreshold": h.fall, "successThreshold": h.rise})),
        "livenessProbe": probe(json!({"failureThreshold": h.restart_after, "successThreshold": 1})),
        "startupProbe": probe(json!({
            "periodSeconds": 1,
            "failureThreshold": STARTUP_GRACE_S,
            "successThreshold": 1,
        })),
        "resources": {"requests": {"cpu": CPU_REQUEST, "memory": MEMORY_REQUEST}},
    });
    let mut pod = json!({
        "containers": [],
        "terminationGracePeriodSeconds": whole_secs(config.shutdown.timeout),
    });
    if let BackendProgram::Custom { cwd, .. } = &config.backend {
        container["workingDir"] = json!(cwd.display().to_string());
    }
    if let Some(v) = volume {
        merge(
            &mut container,
            json!({"volumeMounts": [{"name": "www", "mountPath": WWW_MOUNT, "readOnly": true}]}),
        );
        pod["volumes"] = json!([v]);
    }
    pod["containers"] = json!([container]);
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "labels": labels()},
        "spec": {
            "replicas": config.backends,
            "selector": {"matchLabels": labels()},
            "template": {"metadata": {"labels": labels()}, "spec": pod},
        },
    })
}

fn service(config: &Config, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "labels": labels()},
        "spec": {
            "selector": labels(),
            "ports": [{"name": "http", "port": port, "targetPort": config.base_port, "protocol": "TCP"}],
        },
    })
}

fn configmap(site: &Site) -> Value {
    let mut data = serde_json::Map::new();
    let mut binary = serde_json::Map::new();
    for f in &site.files {
        match std::str::from_utf8(&f.body) {
            Ok(text) => data.insert(f.key.clone(), json!(text)),
            Err(_) => binary.insert(
                f.key.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(&f.body)),
            ),
        };
    }
    let mut cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{NAME}-www"), "labels": labels()},
    });
    if !data.is_empty() {
        cm["data"] = Value::Object(data);
    }
    if !binary.is_empty() {
        cm["binaryData"] = Value::Object(binary);
    }
    cm
}

fn pvc(total: u64) -> Value {
    // Room for the files and some growth, in whole MiB.
    let mib = (total * 2).div_ceil(1024 * 1024).max(1);
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("{NAME}-www"), "labels": labels()},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "resources": {"requests": {"storage": format!("{mib}Mi")}},
        },
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// Kubernetes probes count in whole seconds, at least 1.
fn whole_secs(d: Duration) -> u64 {
    u64::try_from(d.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The www files the worker would serve (no dotfiles, regular files only).
struct Site {
    files: Vec<WwwFile>,
    total: u64,
}

struct WwwFile {
    /// Path under the root, `/`-separated.
    path: String,
    /// ConfigMap key: the path with characters a key may not hold as `_`,
    /// made unique.
    key: String,
    body: Vec<u8>,
}

impl Site {
    fn items(&self) -> Value {
        self.files
            .iter()
            .map(|f| json!({"key": f.key, "path": f.path}))
            .collect()
    }
}

fn read_www(root: &Path) -> Result<Site, ExportError> {
    let mut files = Vec::new();
    walk(root, root, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut seen = std::collections::HashSet::new();
    for f in &mut files {
        let base: String = f
            .path
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut key = base.clone();
        let mut n = 1;
        while !seen.insert(key.clone()) {
            n += 1;
            key = format!("{base}-{n}");
        }
        f.key = key;
    }
    let total = files.iter().map(|f| f.body.len() as u64).sum();
    Ok(Site { files, total })
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<WwwFile>) -> Result<(), ExportError> {
    let dir_error = |source| ExportError::ReadWwwDir {
        dir: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let path = entry.path();
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue; // the worker never serves dotfiles
        }
        let file_error = |source| ExportError::ReadFile {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(&path).map_err(file_error)?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() {
            let body = std::fs::read(&path).map_err(file_error)?;
            let rel = path
                .strip_prefix(root)
                .expect("walked paths are under the root")
                .to_string_lossy()
                .into_owned();
            out.push(WwwFile {
                path: rel,
                key: String::new(),
                body,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_www(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Config) {
        let d = tempfile::tempdir().unwrap();
        for (name, body) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        let c = Config {
            www: Www::Dir(d.path().to_path_buf()),
            ..Config::default()
        };
        (d, c)
    }

    fn doc(f: &File) -> Value {
        let yaml = f.text.split("---\n").nth(1).unwrap();
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn small_www_becomes_a_configmap_with_nested_paths() {
        let (_d, c) = with_www(&[
            ("page.html", b"<p>x</p>"),
            ("sub/a b.png", &[0xff, 0, 1]),
            (".git/x", b"no"),
        ]);
        let files = manifests(&c, "img").unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["configmap.yaml", "deployment.yaml", "service.yaml"]);
        let cm = doc(&files[0]);
        assert_eq!(cm["data"]["page.html"], "<p>x</p>");
        assert_eq!(cm["binaryData"]["sub_a_b.png"], "/wAB");
        let dep = doc(&files[1]);
        let items = &dep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["items"];
        assert_eq!(items[1]["path"], "sub/a b.png");
        assert_eq!(items.as_array().unwrap().len(), 2, "dotfiles are left out");
    }

    #[test]
    fn large_www_becomes_a_claim_and_says_so() {
        let big = vec![b'x'; CONFIGMAP_LIMIT as usize];
        let (_d, c) = with_www(&[("big.bin", &big)]);
        let files = manifests(&c, "img").unwrap();
        assert_eq!(files[0].name, "pvc.yaml");
        assert!(files[1].text.contains("more than a ConfigMap should hold"));
        let dep = doc(&files[1]);
        assert_eq!(
            dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "fleet-www"
        );
    }

    #[test]
    fn probes_come_from_health() {
        let (_d, mut c) = with_www(&[]);
        c.health.interval = Duration::from_millis(1500);
        c.health.timeout = Duration::from_millis(200);
        c.health.fall = 4;
        c.health.rise = 3;
        c.health.restart_after = 7;
        let files = manifests(&c, "img").unwrap();
        let dep = doc(files.iter().find(|f| f.name == "deployment.yaml").unwrap());
        let ct = &dep["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(dep["spec"]["replicas"], 4);
        assert_eq!(ct["readinessProbe"]["httpGet"]["path"], "/.fleet/health");
        assert_eq!(ct["readinessProbe"]["periodSeconds"], 2);
        assert_eq!(ct["readinessProbe"]["timeoutSeconds"], 1);
        assert_eq!(ct["readinessProbe"]["failureThreshold"], 4);
        assert_eq!(ct["readinessProbe"]["successThreshold"], 3);
        assert_eq!(ct["livenessProbe"]["failureThreshold"], 7);
        assert_eq!(ct["resources"]["requests"]["memory"], MEMORY_REQUEST);
    }

    #[test]
    fn custom_command_with_tcp_health() {
        let c = Config {
            backend: BackendProgram::Custom {
                program: "python3".into(),
                args: vec!["srv.py".into(), "{port}".into()],
                cwd: "/x".into(),
                env: Default::default(),
            },
            health: crate::config::HealthConfig {
                kind: HealthKind::Tcp,
                ..Config::default().health
            },
            restart: crate::config::RestartConfig {
                policy: RestartPolicy::Never,
                ..Config::default().restart
            },
            ..Config::default()
        };
        let files = manifests(&c, "lab:1").unwrap();
        assert_eq!(files.len(), 2, "no www for a custom command");
        assert!(
            files[0]
                .text
                .contains("restart.policy never is not exported")
        );
        let ct = &doc(&files[0])["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(ct["command"], json!(["python3", "srv.py", "9002"]));
        assert_eq!(ct["livenessProbe"]["tcpSocket"]["port"], 9002);
        assert_eq!(ct["image"], "lab:1");
        assert_eq!(ct["imagePullPolicy"], "IfNotPresent");
        assert_eq!(ct["workingDir"], "/x");
        assert!(
            files[0]
                .text
                .contains("# workingDir is backend.cwd as on this machine (/x)")
        );
        assert_eq!(
            ct["env"],
            json!([{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "PORT", "value": "9002"}])
        );
    }

    #[test]
    fn listen_port_zero_is_refused() {
        let c = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            www: Www::Embedded,
            ..Config::default()
        };
        assert!(matches!(
            manifests(&c, "img"),
            Err(ExportError::ListenPortZero)
        ));
    }
}
