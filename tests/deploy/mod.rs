//! Readers for tests/deploy_files.rs: the manifests in config/k8s (every YAML document), the
//! claimgate container in each with the config its ConfigMap holds, and the Dockerfile.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_claimgate");

/// Config keys another branch is adding. A manifest whose config `claimgate check` refuses only
/// for one of these is reported pending; once the binary accepts them, the check runs for real.
pub const PENDING_KEYS: &[&str] = &[];

pub struct Manifest {
    pub file: String,
    pub docs: Vec<Value>,
}

pub fn manifests() -> Vec<Manifest> {
    let dir = Path::new(ROOT).join("config/k8s");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("config/k8s")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let all: Vec<Manifest> = files.iter().map(|p| read_manifest(p)).collect();
    assert!(!all.is_empty(), "no YAML in config/k8s");
    all
}

fn read_manifest(path: &Path) -> Manifest {
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|d| !d.is_null())
        .collect();
    for d in &docs {
        assert!(
            d["apiVersion"].is_string() && d["kind"].is_string(),
            "{file}: a document without apiVersion/kind"
        );
    }
    Manifest { file, docs }
}

pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> std::vec::IntoIter<&'a Value> {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    found.into_iter()
}

pub fn named<'a>(docs: &'a [Value], kind: &str, name: &str, ns: &str) -> Option<&'a Value> {
    of_kind(docs, kind).find(|d| d["metadata"]["name"] == name && d["metadata"]["namespace"] == ns)
}

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("not host:port: {addr}"))
}

/// A probe's or Service's port: a number, or the name of one of the container's ports.
pub fn resolve_port(ports: &BTreeMap<String, u16>, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(name) => ports.get(name).copied(),
        _ => None,
    }
}

/// A Kubernetes quantity (`512Mi`, `1G`, `1048576`) in bytes; 0 when absent.
pub fn memory_bytes(q: &Value) -> u64 {
    let q = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return 0,
    };
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => panic!("unsupported quantity {q}"),
    };
    n.parse::<u64>().unwrap() * scale
}

/// One claimgate container and the config it is started with.
pub struct Claimgate<'a> {
    /// `file: Deployment/name` for messages.
    pub at: String,
    pub deployment: &'a Value,
    pub container: &'a Value,
    pub text: String,
    pub config: Value,
}

impl Manifest {
    /// Every container running the claimgate image, with its config found by following
    /// `--config` into a volumeMount, the pod volume, its ConfigMap and the key.
    pub fn claimgates(&self) -> Vec<Claimgate<'_>> {
        let mut found = Vec::new();
        for dep in of_kind(&self.docs, "Deployment") {
            let at = format!(
                "{}: Deployment/{}",
                self.file,
                dep["metadata"]["name"].as_str().unwrap_or("?")
            );
            let containers = dep["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("containers");
            for container in containers
                .iter()
                .filter(|c| c["image"].as_str().is_some_and(|i| i.contains("claimgate")))
            {
                let text = self.config_text(&at, dep, container);
                let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
                    .unwrap_or_else(|e| panic!("{at}: embedded config: {e}"));
                let config = serde_json::to_value(yaml).unwrap();
                found.push(Claimgate {
                    at: at.clone(),
                    deployment: dep,
                    container,
                    text,
                    config,
                });
            }
        }
        found
    }

    fn config_text(&self, at: &str, dep: &Value, container: &Value) -> String {
        let args: Vec<&str> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let path = args
            .iter()
            .position(|a| *a == "--config")
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{at}: no --config FILE in args"));
        let mounts = container["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let (mount, key) = mounts
            .iter()
            .find_map(|m| {
                let dir = m["mountPath"].as_str()?.trim_end_matches('/');
                match m["subPath"].as_str() {
                    Some(sub) if *path == dir => Some((m, sub.to_owned())),
                    None => path
                        .strip_prefix(dir)?
                        .strip_prefix('/')
                        .map(|k| (m, k.to_owned())),
                    _ => None,
                }
            })
            .unwrap_or_else(|| panic!("{at}: --config {path} is not inside any volumeMount"));
        let volumes = dep["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes");
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{at}: no volume {}", mount["name"]));
        let cm_name = volume["configMap"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: volume {} is not a ConfigMap", mount["name"]));
        assert!(
            volume["configMap"]["items"].is_null(),
            "{at}: configMap items are not followed by this test"
        );
        let ns = dep["metadata"]["namespace"].as_str().unwrap_or_default();
        let cm = named(&self.docs, "ConfigMap", cm_name, ns)
            .unwrap_or_else(|| panic!("{at}: ConfigMap {cm_name} not in the file"));
        cm["data"][&key]
            .as_str()
            .unwrap_or_else(|| {
                panic!("{at}: ConfigMap {cm_name} has no key {key} (from --config {path})")
            })
            .to_owned()
    }

    /// The Service named by `<svc>.<ns>.svc.cluster.local` and the claimgate behind it.
    pub fn service_by_host(&self, host: &str) -> (&Value, Claimgate<'_>) {
        let (name, ns) = host
            .strip_suffix(".svc.cluster.local")
            .and_then(|h| h.split_once('.'))
            .unwrap_or_else(|| panic!("{}: {host} is not <svc>.<ns>.svc.cluster.local", self.file));
        let svc = named(&self.docs, "Service", name, ns)
            .unwrap_or_else(|| panic!("{}: Service {name}.{ns} is not in the file", self.file));
        let behind = self
            .claimgates()
            .into_iter()
            .find(|c| self.services_selecting(c.pod_labels()).contains(&svc));
        (
            svc,
            behind.unwrap_or_else(|| panic!("{}: no claimgate behind Service {name}", self.file)),
        )
    }

    /// The container port a Service port (matched by `port`) sends to.
    pub fn service_target(svc: &Value, port: &str, c: &Claimgate) -> Option<u16> {
        let ports = svc["spec"]["ports"].as_array()?;
        let port: u64 = port.parse().ok()?;
        let sp = ports.iter().find(|p| p["port"].as_u64() == Some(port))?;
        resolve_port(&c.container_ports(), &sp["targetPort"])
    }

    /// Services in the pod's namespace whose selector the pod's labels satisfy.
    pub fn services_selecting(&self, labels: (&Value, &Value)) -> Vec<&Value> {
        let (ns, labels) = labels;
        of_kind(&self.docs, "Service")
            .filter(|s| s["metadata"]["namespace"] == *ns)
            .filter(|s| {
                s["spec"]["selector"]
                    .as_object()
                    .is_some_and(|sel| sel.iter().all(|(k, v)| labels[k] == *v))
            })
            .collect()
    }

    /// The container's environment as the pod would see it: literal values and Secret keys
    /// (the Secret must be in the same file and namespace and hold the key).
    pub fn env_of(&self, c: &Claimgate) -> BTreeMap<String, String> {
        let ns = c.deployment["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let mut env = BTreeMap::new();
        for e in c.container["env"].as_array().cloned().unwrap_or_default() {
            let name = e["name"].as_str().expect("env name").to_owned();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_owned()
            } else {
                let r = &e["valueFrom"]["secretKeyRef"];
                let (secret, key) = (
                    r["name"].as_str().unwrap_or_else(|| {
                        panic!("{}: env {name}: neither value nor secretKeyRef", c.at)
                    }),
                    r["key"].as_str().expect("secretKeyRef.key"),
                );
                let s = named(&self.docs, "Secret", secret, ns)
                    .unwrap_or_else(|| panic!("{}: Secret {secret} not in the file", c.at));
                let plain = s["stringData"][key].as_str().map(str::to_owned);
                let encoded = s["data"][key].as_str().map(|b| {
                    use base64::Engine;
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap())
                        .unwrap()
                });
                plain
                    .or(encoded)
                    .unwrap_or_else(|| panic!("{}: Secret {secret} has no key {key}", c.at))
            };
            env.insert(name, value);
        }
        env
    }
}

impl Claimgate<'_> {
    pub fn pod_spec(&self) -> &Value {
        &self.deployment["spec"]["template"]["spec"]
    }

    pub fn pod_labels(&self) -> (&Value, &Value) {
        (
            &self.deployment["metadata"]["namespace"],
            &self.deployment["spec"]["template"]["metadata"]["labels"],
        )
    }

    /// A `host:port` of the config by dot path, with claimgate's defaults for the two listeners.
    pub fn addr(&self, key: &str) -> String {
        let v = key.split('.').fold(&self.config, |v, k| &v[k]);
        match (v.as_str(), key) {
            (Some(s), _) => s.to_owned(),
            (None, "listen") => "0.0.0.0:8080".into(),
            (None, "admin.listen") => "127.0.0.1:9901".into(),
            _ => panic!("{}: the config has no {key}", self.at),
        }
    }

    pub fn admin_port(&self) -> u16 {
        port_of(&self.addr("admin.listen"))
    }

    /// The ports clients may reach: `listen`, and the gRPC ext_authz listener when configured.
    pub fn serving_ports(&self) -> Vec<(&'static str, u16)> {
        let mut ports = vec![("listen", port_of(&self.addr("listen")))];
        if self.config["forward_auth"]["grpc_listen"].is_string() {
            ports.push((
                "forward_auth.grpc_listen",
                port_of(&self.addr("forward_auth.grpc_listen")),
            ));
        }
        ports
    }

    /// `name -> containerPort` (unnamed ports under their number).
    pub fn container_ports(&self) -> BTreeMap<String, u16> {
        let ports = self.container["ports"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ports
            .iter()
            .map(|p| {
                let n = p["containerPort"]
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .expect("containerPort");
                (
                    p["name"]
                        .as_str()
                        .map_or_else(|| n.to_string(), str::to_owned),
                    n,
                )
            })
            .collect()
    }

    /// Every `${NAME}` in the config text, as claimgate expands them.
    pub fn env_vars_used(&self) -> Vec<String> {
        let mut vars = Vec::new();
        let mut rest = self.text.as_str();
        while let Some(i) = rest.find("${") {
            rest = &rest[i + 2..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if rest[end..].starts_with('}') && end > 0 {
                vars.push(rest[..end].to_owned());
            }
        }
        vars
    }

    /// The headers claimgate puts on an allowed request (README "`forward`" defaults when unset).
    pub fn forwarded_headers(&self) -> Vec<String> {
        let fwd = &self.config["forward"];
        if fwd.is_null() {
            return vec!["X-User-Id".into(), "X-Claimgate-User".into()];
        }
        let mut names: Vec<String> = fwd["headers"]
            .as_object()
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default();
        names.extend(fwd["user_header"].as_str().map(str::to_owned));
        names
    }
}

/// `claimgate check` on `text` with exactly `env` (nothing inherited): (passed, stderr).
pub fn run_check(text: &str, env: &BTreeMap<String, String>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claimgate.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub mod docker;
pub use docker::{binary_name, dockerfile, in_context};
