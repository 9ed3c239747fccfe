//! The Kubernetes manifests in `deploy/k8s/`, rendered and checked.
//!
//! The base and both overlays are rendered with `kubectl kustomize` from
//! Debian's kubernetes-client (kubectl 1.20, kustomize v2.0.3) and validated
//! with PyPI's kubernetes-validate against the Kubernetes 1.30 JSON schemas,
//! strictly (unknown fields are errors). Both are installed by
//! `deploy/local/install.sh` into `$WEIR_TOOLS` (default
//! `~/.cache/weir/tools`); the test never uses another kubectl. The schemas
//! do not know the Prometheus Operator's kinds (ServiceMonitor,
//! PrometheusRule), so the validator only warns about those, and this file
//! checks them itself; a warning about any other kind fails.
//!
//! Then the rules the schemas cannot express, on the rendered objects:
//! every container has liveness and readiness probes on a port it declares,
//! requests and limits, and a non-root, read-only, capability-less
//! securityContext; its config file and environment load with the stage's
//! real config loader (so a misspelt key or a wrong port fails here, not at
//! start-up), and the keys of the base's placeholder Secret are refused by it;
//! Services, the HPA, the PodDisruptionBudgets and the ServiceMonitor reach
//! what they name; the processor runs at most as many replicas as the
//! partitions it is configured with; and every metric an alert uses is one
//! docs/operations.md documents. The Alertmanager example is checked against the
//! alerts' labels.

use base64::Engine as _;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use weir_aggregator::config::AggregatorConfig;
use weir_core::api_keys::KeyKind;
use weir_core::config::CommonArgs;
use weir_ingest::config::IngestConfig;
use weir_processor::config::ProcessorConfig;
use weir_tests::repo_root;

/// The Kubernetes version the manifests are validated against.
const K8S_VERSION: &str = "1.30.0";
const IMAGE: &str = "ghcr.io/weir-dev/weir";
const STAGES: [&str; 3] = ["ingest", "processor", "aggregator"];
/// Kinds kubernetes-validate has no schema for; checked here instead.
const CRD_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];
/// Alerts the operations issue asks for, by the name the README gives them.
const REQUIRED_ALERTS: [&str; 8] = [
    "WeirProcessorConsumerLag",
    "WeirAggregatorConsumerLag",
    "WeirLateEventsHigh",
    "WeirInvalidEventsHigh",
    "WeirIngest5xxHigh",
    "WeirIngest503High",
    "WeirClickHouseInsertFailures",
    "WeirWatermarkStalled",
];
/// Series Prometheus writes itself for every target; no stage exports them.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flavour {
    Base,
    Dev,
    Prod,
}

/// Everything wrong, collected, so one run reports all defects at once.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn fail(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }

    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }
}

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

struct Tools {
    kubectl: PathBuf,
    validate: PathBuf,
}

impl Tools {
    fn locate() -> Self {
        let dir = std::env::var_os("WEIR_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME or WEIR_TOOLS"))
                    .join(".cache/weir/tools")
            });
        let tools = Self {
            kubectl: dir.join("k8s/bin/kubectl"),
            validate: dir.join("venv-k8s/bin/kubernetes-validate"),
        };
        for tool in [&tools.kubectl, &tools.validate] {
            assert!(
                tool.exists(),
                "{} is missing: run deploy/local/install.sh",
                tool.display()
            );
        }
        tools
    }

    fn render(&self, dir: &Path) -> Result<String, String> {
        let out = Command::new(&self.kubectl)
            .arg("kustomize")
            .arg(dir)
            .output()
            .expect("run kubectl");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8(out.stdout).expect("utf-8 manifests"))
    }

    /// Validates `file` strictly; only the CRD kinds may go unchecked.
    fn validate(&self, name: &str, file: &Path, docs: &[Value], p: &mut Problems) {
        let out = Command::new(&self.validate)
            .args(["--strict", "-k", K8S_VERSION])
            .arg(file)
            .output()
            .expect("run kubernetes-validate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        p.check(out.status.success(), || {
            format!(
                "{name}: kubernetes-validate failed ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mut passed = 0;
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            if line.starts_with("INFO ") && line.contains(" passed for resource ") {
                passed += 1;
                continue;
            }
            let unchecked_kind = line
                .strip_prefix("WARN ")
                .and_then(|rest| rest.split("for kind ").nth(1))
                .and_then(|rest| rest.split_whitespace().next());
            match unchecked_kind {
                Some(kind) if CRD_KINDS.contains(&kind) => {}
                _ => p.fail(format!("{name}: kubernetes-validate: {line}")),
            }
        }
        let expected = docs
            .iter()
            .filter(|d| !CRD_KINDS.contains(&kind(d)))
            .count();
        p.check(passed == expected, || {
            format!("{name}: kubernetes-validate passed {passed} objects, expected {expected}")
        });
    }
}

// ---------------------------------------------------------------------------
// Rendered manifests
// ---------------------------------------------------------------------------

/// Splits a multi-document YAML stream (as kubectl prints it) into objects.
fn parse_docs(yaml: &str) -> Vec<Value> {
    let mut docs = vec![];
    let mut current = String::new();
    for line in yaml.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                let doc: Value = serde_yaml::from_str(&current)
                    .unwrap_or_else(|e| panic!("unparsable YAML document: {e}\n{current}"));
                if !doc.is_null() {
                    docs.push(doc);
                }
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

fn kind(v: &Value) -> &str {
    str_at(v, "/kind").unwrap_or_default()
}

fn name(v: &Value) -> &str {
    str_at(v, "/metadata/name").unwrap_or_default()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn labels_at(v: &Value, pointer: &str) -> BTreeMap<String, String> {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), scalar(v)))
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default()
}

/// A YAML scalar as Kubernetes would read it into a string.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn subset(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A resource quantity in base units (cores, bytes).
fn quantity(v: &Value) -> Option<f64> {
    if let Some(n) = v.as_f64() {
        return Some(n);
    }
    let s = v.as_str()?;
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, scale) in SUFFIXES {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    s.parse().ok()
}

struct Rendered {
    name: &'static str,
    flavour: Flavour,
    docs: Vec<Value>,
}

impl Rendered {
    fn of_kind(&self, k: &str) -> std::vec::IntoIter<&Value> {
        let of_kind: Vec<&Value> = self.docs.iter().filter(|d| kind(d) == k).collect();
        of_kind.into_iter()
    }

    fn find(&self, k: &str, n: &str) -> Option<&Value> {
        self.of_kind(k).find(|d| name(d) == n)
    }

    fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.docs
            .iter()
            .filter(|d| matches!(kind(d), "Deployment" | "StatefulSet"))
    }

    /// The value of `key` in the named ConfigMap or (decoded) Secret.
    fn data(&self, k: &str, n: &str, key: &str) -> Option<String> {
        let obj = self.find(k, n)?;
        if k == "Secret" {
            if let Some(v) = str_at(obj, &format!("/stringData/{key}")) {
                return Some(v.to_string());
            }
            let encoded = str_at(obj, &format!("/data/{key}"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            return String::from_utf8(bytes).ok();
        }
        obj.pointer(&format!("/data/{key}")).map(scalar)
    }

    fn data_keys(&self, k: &str, n: &str) -> Vec<String> {
        let Some(obj) = self.find(k, n) else {
            return vec![];
        };
        ["/data", "/stringData"]
            .iter()
            .filter_map(|ptr| obj.pointer(ptr).and_then(Value::as_object))
            .flat_map(|m| m.keys().cloned())
            .collect()
    }
}

/// The stage a container runs: the binary its command names.
fn stage_of(container: &Value) -> Option<&'static str> {
    let bin = str_at(container, "/command/0")?;
    let file = bin.strip_prefix("/usr/local/bin/")?;
    STAGES.into_iter().find(|s| *s == file)
}

fn replicas(workload: &Value) -> i64 {
    workload
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// A pod name as the workload's controller would give it.
fn pod_name(workload: &Value) -> String {
    match kind(workload) {
        "StatefulSet" => format!("{}-0", name(workload)),
        _ => format!("{}-5d8f7c9b4-x2k7q", name(workload)),
    }
}

fn port_of(addr: &str) -> Option<i64> {
    addr.rsplit_once(':')?.1.parse().ok()
}

// ---------------------------------------------------------------------------
// Stage configuration, loaded as the stage loads it
// ---------------------------------------------------------------------------

/// Each stage's top-level config keys: what it reads from `WEIR_*`.
fn known_keys() -> BTreeMap<&'static str, BTreeSet<String>> {
    fn keys(v: serde_json::Result<Value>) -> BTreeSet<String> {
        v.expect("config serialises")
            .as_object()
            .expect("config is a table")
            .keys()
            .cloned()
            .collect()
    }
    BTreeMap::from([
        (
            "ingest",
            keys(serde_json::to_value(IngestConfig::default())),
        ),
        (
            "processor",
            keys(serde_json::to_value(ProcessorConfig::default())),
        ),
        (
            "aggregator",
            keys(serde_json::to_value(AggregatorConfig::default())),
        ),
    ])
}

/// The top-level config key a `WEIR_*` variable sets.
fn env_top_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix("WEIR_")?;
    Some(rest.split("__").next()?.to_ascii_lowercase())
}

/// What the checks need from a loaded stage config.
struct StageView {
    listen: String,
    grpc_listen: Option<String>,
    instance_id: Option<String>,
    partitions: i32,
    spill_dir: Option<String>,
    shutdown_timeout_ms: Option<u64>,
    /// Whether the stage accepts its keys (`Err` is the reason it would not
    /// start); `None` for the processor, which takes none.
    keys: Option<Result<usize, String>>,
}

/// Loads `stage`'s config from `file` and the container's `env`, through the
/// stage's own loader, with the process environment of a pod.
///
/// The environment is process-wide: this test is the only one in its binary
/// that touches it, and it runs the loads one after another.
fn load_stage(
    stage: &str,
    file: &Path,
    env: &BTreeMap<String, String>,
    pod: &str,
) -> Result<StageView, String> {
    let saved: Vec<(String, Option<std::ffi::OsString>)> = ["HOSTNAME", "TMPDIR"]
        .iter()
        .map(|k| (k.to_string(), std::env::var_os(k)))
        .collect();
    std::env::set_var("HOSTNAME", pod);
    std::env::set_var("TMPDIR", env.get("TMPDIR").map_or("/tmp", String::as_str));
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with("WEIR_")) {
        std::env::set_var(k, v);
    }
    let args = CommonArgs {
        config: Some(file.to_path_buf()),
        overrides: vec![],
        print_config: false,
    };
    let view = match stage {
        "ingest" => args.load::<IngestConfig>().map(|c| StageView {
            listen: c.listen.clone(),
            grpc_listen: Some(c.grpc_listen.clone()),
            instance_id: None,
            partitions: c.kafka.partitions,
            spill_dir: None,
            shutdown_timeout_ms: Some(c.shutdown_timeout_ms),
            keys: Some(keys_of(c.auth.keys(KeyKind::Write))),
        }),
        "processor" => args.load::<ProcessorConfig>().and_then(|c| {
            c.validate()?;
            Ok(StageView {
                listen: c.listen.clone(),
                grpc_listen: None,
                instance_id: Some(c.instance_id.clone()),
                partitions: c.kafka.partitions,
                spill_dir: Some(c.dedup_spill_dir.clone()),
                shutdown_timeout_ms: None,
                keys: None,
            })
        }),
        "aggregator" => args.load::<AggregatorConfig>().map(|c| StageView {
            listen: c.listen.clone(),
            grpc_listen: None,
            instance_id: Some(c.instance_id.clone()),
            partitions: c.kafka.partitions,
            spill_dir: None,
            shutdown_timeout_ms: None,
            keys: Some(keys_of(c.auth.keys(KeyKind::Read))),
        }),
        other => unreachable!("stage {other}"),
    };
    for k in env.keys().filter(|k| k.starts_with("WEIR_")) {
        std::env::remove_var(k);
    }
    for (k, v) in saved {
        match v {
            Some(v) => std::env::set_var(&k, v),
            None => std::env::remove_var(&k),
        }
    }
    view.map_err(|e| format!("{e:#}"))
}

fn keys_of(keys: anyhow::Result<Option<weir_core::api_keys::ApiKeys>>) -> Result<usize, String> {
    match keys {
        Ok(Some(k)) => Ok(k.len()),
        Ok(None) => Err("auth is off".into()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The container's environment as the kubelet builds it: `envFrom` first,
/// then `env`, which wins.
fn container_env(
    r: &Rendered,
    container: &Value,
    pod: &str,
    ctx: &str,
    p: &mut Problems,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in array_at(container, "/envFrom") {
        let (k, n) = match (
            str_at(from, "/configMapRef/name"),
            str_at(from, "/secretRef/name"),
        ) {
            (Some(n), _) => ("ConfigMap", n),
            (_, Some(n)) => ("Secret", n),
            _ => {
                p.fail(format!("{ctx}: envFrom without a ConfigMap or Secret"));
                continue;
            }
        };
        let keys = r.data_keys(k, n);
        p.check(!keys.is_empty(), || {
            format!("{ctx}: envFrom names {k} {n}, which the render does not have")
        });
        let prefix = str_at(from, "/prefix").unwrap_or_default();
        for key in keys {
            if let Some(v) = r.data(k, n, &key) {
                env.insert(format!("{prefix}{key}"), v);
            }
        }
    }
    for var in array_at(container, "/env") {
        let Some(var_name) = str_at(var, "/name") else {
            continue;
        };
        let optional = |src: &str| {
            var.pointer(&format!("/valueFrom/{src}/optional"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let value = if let Some(v) = var.get("value") {
            Some(scalar(v))
        } else if let Some(field) = str_at(var, "/valueFrom/fieldRef/fieldPath") {
            match field {
                "metadata.name" => Some(pod.to_string()),
                "metadata.namespace" => Some("weir".to_string()),
                _ => None,
            }
        } else {
            let (k, src) = if var.pointer("/valueFrom/secretKeyRef").is_some() {
                ("Secret", "secretKeyRef")
            } else {
                ("ConfigMap", "configMapKeyRef")
            };
            let n = str_at(var, &format!("/valueFrom/{src}/name")).unwrap_or_default();
            let key = str_at(var, &format!("/valueFrom/{src}/key")).unwrap_or_default();
            let found = r.data(k, n, key);
            p.check(found.is_some() || optional(src), || {
                format!(
                    "{ctx}: env {var_name} reads {k} {n} key {key}, which the render does not have"
                )
            });
            found
        };
        match value {
            Some(v) => {
                env.insert(var_name.to_string(), v);
            }
            None => {
                env.remove(var_name);
            }
        }
    }
    env
}

/// The file `WEIR_CONFIG` names, read from the ConfigMap mounted there.
fn config_file(
    r: &Rendered,
    pod_spec: &Value,
    container: &Value,
    path: &str,
    ctx: &str,
    p: &mut Problems,
) -> Option<String> {
    let mount = array_at(container, "/volumeMounts").iter().find(|m| {
        str_at(m, "/mountPath").is_some_and(|dir| {
            path.strip_prefix(dir.trim_end_matches('/'))
                .is_some_and(|rest| rest.starts_with('/'))
        })
    });
    let Some(mount) = mount else {
        p.fail(format!("{ctx}: WEIR_CONFIG={path} is on no mounted volume"));
        return None;
    };
    let dir = str_at(mount, "/mountPath").unwrap_or_default();
    let file = path[dir.trim_end_matches('/').len() + 1..].to_string();
    let volume = str_at(mount, "/name").unwrap_or_default();
    let cm = array_at(pod_spec, "/volumes")
        .iter()
        .find(|v| str_at(v, "/name") == Some(volume))
        .and_then(|v| str_at(v, "/configMap/name"));
    let Some(cm) = cm else {
        p.fail(format!(
            "{ctx}: WEIR_CONFIG={path}: volume {volume} is not a ConfigMap"
        ));
        return None;
    };
    let content = r.data("ConfigMap", cm, &file);
    p.check(content.is_some(), || {
        format!("{ctx}: WEIR_CONFIG={path}: ConfigMap {cm} has no key {file}")
    });
    content
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// Per container: probes, resources, securityContext, volumes, and the
/// stage's config as it would load it. Returns each stage's loaded view.
fn check_workloads(
    r: &Rendered,
    work: &Path,
    known: &BTreeMap<&'static str, BTreeSet<String>>,
    p: &mut Problems,
) -> BTreeMap<&'static str, (i64, StageView)> {
    let mut stages = BTreeMap::new();
    let all_known: BTreeSet<&String> = known.values().flatten().collect();
    for w in r.workloads() {
        let wctx = format!("{}: {} {}", r.name, kind(w), name(w));
        let pod_spec = w.pointer("/spec/template/spec").unwrap_or(&Value::Null);
        let pod_labels = labels_at(w, "/spec/template/metadata/labels");
        let selector = labels_at(w, "/spec/selector/matchLabels");
        p.check(
            !selector.is_empty() && subset(&selector, &pod_labels),
            || {
                format!(
                    "{wctx}: selector {selector:?} does not match its pod labels {pod_labels:?}"
                )
            },
        );
        let pod_sc = pod_spec
            .get("securityContext")
            .cloned()
            .unwrap_or(Value::Null);
        let volumes: BTreeMap<&str, &Value> = array_at(pod_spec, "/volumes")
            .iter()
            .filter_map(|v| Some((str_at(v, "/name")?, v)))
            .collect();
        let init = array_at(pod_spec, "/initContainers")
            .iter()
            .map(|c| (c, true));
        let main = array_at(pod_spec, "/containers").iter().map(|c| (c, false));
        p.check(!array_at(pod_spec, "/containers").is_empty(), || {
            format!("{wctx}: no containers")
        });
        for (c, is_init) in main.chain(init) {
            let ctx = format!("{wctx} container {}", str_at(c, "/name").unwrap_or("?"));
            let image = str_at(c, "/image").unwrap_or_default();
            p.check(
                image.starts_with(&format!("{IMAGE}:")) || image.starts_with(&format!("{IMAGE}@")),
                || format!("{ctx}: image {image:?} is not {IMAGE}:<tag>"),
            );
            if r.flavour == Flavour::Prod {
                p.check(!image.ends_with(":latest"), || {
                    format!("{ctx}: prod must pin the image, not {image}")
                });
            }

            // Probes, on ports the container declares.
            let ports = array_at(c, "/ports");
            let port_declared = |port: &Value| match port {
                Value::String(n) => ports.iter().any(|pt| str_at(pt, "/name") == Some(n)),
                Value::Number(n) => ports
                    .iter()
                    .any(|pt| pt.pointer("/containerPort").and_then(Value::as_i64) == n.as_i64()),
                _ => false,
            };
            for (probe, path, required) in [
                ("livenessProbe", Some("/healthz"), !is_init),
                ("readinessProbe", Some("/readyz"), !is_init),
                ("startupProbe", None, false),
            ] {
                let Some(pr) = c.get(probe) else {
                    p.check(!required, || format!("{ctx}: no {probe}"));
                    continue;
                };
                let port = ["httpGet", "tcpSocket", "grpc"]
                    .iter()
                    .find_map(|h| pr.pointer(&format!("/{h}/port")));
                match port {
                    Some(port) => p.check(port_declared(port), || {
                        format!("{ctx}: {probe} port {port} is not a declared containerPort")
                    }),
                    None => p.fail(format!("{ctx}: {probe} probes no port")),
                }
                if let Some(want) = path {
                    let got = str_at(pr, "/httpGet/path");
                    p.check(got == Some(want), || {
                        format!("{ctx}: {probe} must GET {want}, not {got:?}")
                    });
                }
            }

            // Requests and limits, limits at least the requests.
            for res in ["cpu", "memory"] {
                let req = c.pointer(&format!("/resources/requests/{res}"));
                let lim = c.pointer(&format!("/resources/limits/{res}"));
                match (req.and_then(quantity), lim.and_then(quantity)) {
                    (Some(req), Some(lim)) => p.check(lim >= req, || {
                        format!("{ctx}: {res} limit is below its request")
                    }),
                    _ => p.fail(format!(
                        "{ctx}: needs resources.requests.{res} and resources.limits.{res}"
                    )),
                }
            }

            // Not root, nothing writable but volumes, no privileges.
            let sc = c.get("securityContext").cloned().unwrap_or(Value::Null);
            let effective = |key: &str| sc.get(key).or_else(|| pod_sc.get(key)).cloned();
            p.check(effective("runAsNonRoot") == Some(Value::Bool(true)), || {
                format!("{ctx}: runAsNonRoot must be true")
            });
            let uid = effective("runAsUser").and_then(|v| v.as_i64());
            p.check(uid.is_some_and(|u| u > 0), || {
                format!("{ctx}: runAsUser must be set and non-zero, is {uid:?}")
            });
            p.check(
                sc.get("readOnlyRootFilesystem") == Some(&Value::Bool(true)),
                || format!("{ctx}: readOnlyRootFilesystem must be true"),
            );
            p.check(
                sc.get("allowPrivilegeEscalation") == Some(&Value::Bool(false)),
                || format!("{ctx}: allowPrivilegeEscalation must be false"),
            );
            p.check(sc.get("privileged") != Some(&Value::Bool(true)), || {
                format!("{ctx}: must not be privileged")
            });
            let drops = array_at(&sc, "/capabilities/drop");
            p.check(drops.iter().any(|d| d.as_str() == Some("ALL")), || {
                format!("{ctx}: capabilities must drop ALL")
            });
            let seccomp = effective("seccompProfile");
            p.check(
                seccomp
                    .as_ref()
                    .and_then(|s| str_at(s, "/type"))
                    .is_some_and(|t| t == "RuntimeDefault"),
                || format!("{ctx}: seccompProfile must be RuntimeDefault"),
            );

            // Volumes: every mount backed, and /tmp writable (the root
            // filesystem is not, and TMPDIR defaults there).
            let mounts = array_at(c, "/volumeMounts");
            for m in mounts {
                let v = str_at(m, "/name").unwrap_or_default();
                p.check(volumes.contains_key(v), || {
                    format!("{ctx}: mounts volume {v}, which the pod does not define")
                });
            }
            let empty_dir_mounts: Vec<&str> = mounts
                .iter()
                .filter(|m| {
                    str_at(m, "/name")
                        .and_then(|v| volumes.get(v))
                        .is_some_and(|v| v.get("emptyDir").is_some())
                })
                .filter_map(|m| str_at(m, "/mountPath"))
                .collect();
            p.check(empty_dir_mounts.contains(&"/tmp"), || {
                format!("{ctx}: needs an emptyDir at /tmp (the root filesystem is read-only)")
            });
            if is_init {
                continue;
            }

            // The stage's config, as the stage would load it.
            let Some(stage) = stage_of(c) else {
                p.fail(format!(
                    "{ctx}: command must be /usr/local/bin/<{}>",
                    STAGES.join("|")
                ));
                continue;
            };
            let pod = pod_name(w);
            let env = container_env(r, c, &pod, &ctx, p);
            for var in array_at(c, "/env")
                .iter()
                .filter_map(|v| str_at(v, "/name"))
            {
                if var == "WEIR_CONFIG" {
                    continue;
                }
                if let Some(top) = env_top_key(var) {
                    p.check(known[stage].contains(&top), || {
                        format!(
                            "{ctx}: {var} sets no key of {stage} (its keys: {:?})",
                            known[stage]
                        )
                    });
                }
            }
            for var in env.keys().filter(|k| k.as_str() != "WEIR_CONFIG") {
                if let Some(top) = env_top_key(var) {
                    p.check(all_known.contains(&top), || {
                        format!("{ctx}: {var} sets no key of any stage")
                    });
                }
            }
            let Some(config_path) = env.get("WEIR_CONFIG") else {
                p.fail(format!("{ctx}: WEIR_CONFIG is not set"));
                continue;
            };
            let Some(toml) = config_file(r, pod_spec, c, config_path, &ctx, p) else {
                continue;
            };
            let file = work.join(format!("{}-{}-{stage}.toml", r.name, name(w)));
            std::fs::write(&file, toml).expect("write config");
            let view = match load_stage(stage, &file, &env, &pod) {
                Ok(view) => view,
                Err(e) => {
                    p.fail(format!("{ctx}: {stage} would not load its config: {e}"));
                    continue;
                }
            };
            let declared = |port_name: &str| {
                ports
                    .iter()
                    .find(|pt| str_at(pt, "/name") == Some(port_name))
                    .and_then(|pt| pt.pointer("/containerPort"))
                    .and_then(Value::as_i64)
            };
            p.check(port_of(&view.listen) == declared("http"), || {
                format!(
                    "{ctx}: {stage} listens on {} but its `http` containerPort is {:?}",
                    view.listen,
                    declared("http")
                )
            });
            if let Some(grpc) = view.grpc_listen.as_deref().filter(|g| !g.is_empty()) {
                p.check(port_of(grpc) == declared("grpc"), || {
                    format!(
                        "{ctx}: gRPC listens on {grpc} but the `grpc` containerPort is {:?}",
                        declared("grpc")
                    )
                });
            }
            if let Some(timeout) = view.shutdown_timeout_ms {
                let grace = pod_spec
                    .get("terminationGracePeriodSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(30);
                p.check(timeout < grace * 1000, || {
                    format!("{ctx}: shutdown_timeout_ms {timeout} must be below terminationGracePeriodSeconds {grace}")
                });
            }
            if let Some(id) = &view.instance_id {
                let from_pod = array_at(c, "/env").iter().any(|v| {
                    str_at(v, "/name") == Some("WEIR_INSTANCE_ID")
                        && str_at(v, "/valueFrom/fieldRef/fieldPath") == Some("metadata.name")
                });
                p.check(from_pod && *id == pod, || {
                    format!("{ctx}: WEIR_INSTANCE_ID must come from the pod name (downward API); instance_id is {id:?}")
                });
            }
            if let Some(dir) = &view.spill_dir {
                p.check(
                    empty_dir_mounts
                        .iter()
                        .any(|m| Path::new(dir).starts_with(m) && !m.is_empty()),
                    || format!("{ctx}: dedup_spill_dir {dir} is not on an emptyDir"),
                );
            }
            match (&view.keys, r.flavour) {
                (Some(Ok(_)), Flavour::Base) => p.fail(format!(
                    "{ctx}: {stage} accepts the base's placeholder keys; they must make it refuse to start"
                )),
                (Some(Err(e)), Flavour::Dev | Flavour::Prod) => {
                    p.fail(format!("{ctx}: {stage} refuses its keys: {e}"))
                }
                _ => {}
            }
            if stage == "processor" {
                p.check(kind(w) == "StatefulSet", || {
                    format!("{wctx}: the processor must be a StatefulSet, for stable instance ids")
                });
            }
            if stages.insert(stage, (replicas(w), view)).is_some() {
                p.fail(format!("{}: more than one workload runs {stage}", r.name));
            }
        }
    }
    for stage in STAGES {
        p.check(stages.contains_key(stage), || {
            format!("{}: no workload runs {stage}", r.name)
        });
    }
    stages
}

/// Replica counts: bounded by the partitions, and what each overlay promises.
fn check_replicas(
    r: &Rendered,
    stages: &BTreeMap<&'static str, (i64, StageView)>,
    hpa_min: Option<i64>,
    p: &mut Problems,
) {
    for stage in ["processor", "aggregator"] {
        if let Some((replicas, view)) = stages.get(stage) {
            p.check(*replicas <= i64::from(view.partitions), || {
                format!(
                    "{}: {replicas} {stage} replicas but {} partitions: the extra instances would sit idle",
                    r.name, view.partitions
                )
            });
        }
    }
    let count = |stage: &str| stages.get(stage).map(|(n, _)| *n);
    match r.flavour {
        Flavour::Dev => {
            for (what, n) in [
                ("ingest (HPA minReplicas)", hpa_min),
                ("processor", count("processor")),
                ("aggregator", count("aggregator")),
            ] {
                p.check(n == Some(1), || {
                    format!("dev: {what} should run 1 replica, not {n:?}")
                });
            }
        }
        Flavour::Prod => {
            for (what, n) in [
                ("ingest (HPA minReplicas)", hpa_min),
                ("processor", count("processor")),
                ("aggregator", count("aggregator")),
            ] {
                p.check(n.is_some_and(|n| n >= 2), || {
                    format!("prod: {what} needs at least 2 replicas, not {n:?}")
                });
            }
        }
        Flavour::Base => {}
    }
}

/// Services reach pods that declare their target ports.
fn check_services(r: &Rendered, p: &mut Problems) {
    for svc in r.of_kind("Service") {
        let ctx = format!("{}: Service {}", r.name, name(svc));
        let selector = labels_at(svc, "/spec/selector");
        let targets: Vec<&Value> = r
            .workloads()
            .filter(|w| {
                !selector.is_empty()
                    && subset(&selector, &labels_at(w, "/spec/template/metadata/labels"))
            })
            .collect();
        p.check(!targets.is_empty(), || {
            format!("{ctx}: selects no workload")
        });
        for port in array_at(svc, "/spec/ports") {
            let target = port
                .get("targetPort")
                .or_else(|| port.get("port"))
                .cloned()
                .unwrap_or(Value::Null);
            for w in &targets {
                let declared = array_at(w, "/spec/template/spec/containers")
                    .iter()
                    .flat_map(|c| array_at(c, "/ports"))
                    .any(|pt| match &target {
                        Value::String(n) => str_at(pt, "/name") == Some(n),
                        Value::Number(n) => {
                            pt.pointer("/containerPort").and_then(Value::as_i64) == n.as_i64()
                        }
                        _ => false,
                    });
                p.check(declared, || {
                    format!(
                        "{ctx}: targetPort {target} is not a port of {} {}",
                        kind(w),
                        name(w)
                    )
                });
            }
        }
    }
    for sts in r.of_kind("StatefulSet") {
        let svc = str_at(sts, "/spec/serviceName").unwrap_or_default();
        let governs = r.find("Service", svc).is_some_and(|s| {
            subset(
                &labels_at(s, "/spec/selector"),
                &labels_at(sts, "/spec/template/metadata/labels"),
            )
        });
        p.check(governs, || {
            format!(
                "{}: StatefulSet {}: serviceName {svc:?} is no Service selecting its pods",
                r.name,
                name(sts)
            )
        });
    }
}

/// The ingest HPA; returns its minReplicas.
fn check_hpa(r: &Rendered, p: &mut Problems) -> Option<i64> {
    let hpas: Vec<&Value> = r.of_kind("HorizontalPodAutoscaler").collect();
    p.check(hpas.len() == 1, || {
        format!(
            "{}: expected one HorizontalPodAutoscaler, found {}",
            r.name,
            hpas.len()
        )
    });
    let hpa = hpas.first()?;
    let ctx = format!("{}: HorizontalPodAutoscaler {}", r.name, name(hpa));
    p.check(str_at(hpa, "/apiVersion") == Some("autoscaling/v2"), || {
        format!("{ctx}: must be autoscaling/v2")
    });
    let target_kind = str_at(hpa, "/spec/scaleTargetRef/kind").unwrap_or_default();
    let target_name = str_at(hpa, "/spec/scaleTargetRef/name").unwrap_or_default();
    let target = r.find(target_kind, target_name);
    let is_ingest = target.is_some_and(|t| {
        kind(t) == "Deployment"
            && array_at(t, "/spec/template/spec/containers")
                .iter()
                .any(|c| stage_of(c) == Some("ingest"))
    });
    p.check(is_ingest, || {
        format!("{ctx}: must target the ingest Deployment, targets {target_kind} {target_name}")
    });
    if let Some(t) = target {
        // A replicas field would reset the HPA's count on every apply.
        p.check(t.pointer("/spec/replicas").is_none(), || {
            format!("{ctx}: its target sets spec.replicas, which fights the HPA")
        });
    }
    let cpu = array_at(hpa, "/spec/metrics").iter().any(|m| {
        str_at(m, "/type") == Some("Resource") && str_at(m, "/resource/name") == Some("cpu")
    });
    p.check(cpu, || format!("{ctx}: must scale on CPU"));
    let min = hpa.pointer("/spec/minReplicas").and_then(Value::as_i64);
    let max = hpa.pointer("/spec/maxReplicas").and_then(Value::as_i64);
    p.check(
        matches!((min, max), (Some(lo), Some(hi)) if lo >= 1 && lo <= hi),
        || format!("{ctx}: needs 1 <= minReplicas <= maxReplicas, has {min:?}..{max:?}"),
    );
    min
}

/// Every workload has exactly one PodDisruptionBudget that lets a drain go on.
fn check_pdbs(r: &Rendered, p: &mut Problems) {
    for w in r.workloads() {
        let labels = labels_at(w, "/spec/template/metadata/labels");
        let pdbs: Vec<&Value> = r
            .of_kind("PodDisruptionBudget")
            .filter(|pdb| {
                let sel = labels_at(pdb, "/spec/selector/matchLabels");
                !sel.is_empty() && subset(&sel, &labels)
            })
            .collect();
        let ctx = format!("{}: {} {}", r.name, kind(w), name(w));
        p.check(pdbs.len() == 1, || {
            format!(
                "{ctx}: expected one PodDisruptionBudget, found {}",
                pdbs.len()
            )
        });
        for pdb in pdbs {
            p.check(str_at(pdb, "/apiVersion") == Some("policy/v1"), || {
                format!("{ctx}: PodDisruptionBudget must be policy/v1")
            });
            if let Some(min) = pdb.pointer("/spec/minAvailable").and_then(Value::as_i64) {
                p.check(min < replicas(w), || {
                    format!(
                        "{ctx}: minAvailable {min} with {} replicas blocks every drain",
                        replicas(w)
                    )
                });
            }
        }
    }
}

/// The keys Secret: a marked placeholder in the base, replaced in overlays.
fn check_keys_secret(r: &Rendered, p: &mut Problems) {
    let secrets: Vec<&Value> = r
        .of_kind("Secret")
        .filter(|s| name(s).starts_with("weir-keys"))
        .collect();
    p.check(secrets.len() == 1, || {
        format!(
            "{}: expected one weir-keys Secret, found {}",
            r.name,
            secrets.len()
        )
    });
    for s in secrets {
        for key in ["WEIR_AUTH__WRITE_KEYS", "WEIR_AUTH__READ_KEYS"] {
            let value = r.data("Secret", name(s), key).unwrap_or_default();
            let placeholder = value.contains("REPLACE_ME");
            p.check(placeholder == (r.flavour == Flavour::Base), || {
                format!(
                    "{}: Secret {} {key} {}",
                    r.name,
                    name(s),
                    if placeholder {
                        "still holds the base's placeholder"
                    } else {
                        "must be the marked placeholder (REPLACE_ME) in the base"
                    }
                )
            });
        }
    }
}

fn label_selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if !subset(&labels_at(selector, "/matchLabels"), labels) {
        return false;
    }
    array_at(selector, "/matchExpressions").iter().all(|e| {
        let key = str_at(e, "/key").unwrap_or_default();
        let values: Vec<&str> = array_at(e, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let have = labels.get(key).map(String::as_str);
        match str_at(e, "/operator") {
            Some("In") => have.is_some_and(|v| values.contains(&v)),
            Some("NotIn") => !have.is_some_and(|v| values.contains(&v)),
            Some("Exists") => have.is_some(),
            Some("DoesNotExist") => have.is_none(),
            _ => false,
        }
    })
}

/// The ServiceMonitor scrapes `/metrics` of every stage's Service, on a port
/// those Services name.
fn check_service_monitor(r: &Rendered, p: &mut Problems) {
    let monitors: Vec<&Value> = r.of_kind("ServiceMonitor").collect();
    p.check(monitors.len() == 1, || {
        format!(
            "{}: expected one ServiceMonitor, found {}",
            r.name,
            monitors.len()
        )
    });
    for sm in monitors {
        let ctx = format!("{}: ServiceMonitor {}", r.name, name(sm));
        p.check(
            str_at(sm, "/apiVersion") == Some("monitoring.coreos.com/v1"),
            || format!("{ctx}: must be monitoring.coreos.com/v1"),
        );
        let selector = sm.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
        let selected: Vec<&Value> = r
            .of_kind("Service")
            .filter(|s| label_selector_matches(&selector, &labels_at(s, "/metadata/labels")))
            .collect();
        for stage in STAGES {
            let scraped = selected.iter().any(|s| {
                let sel = labels_at(s, "/spec/selector");
                r.workloads().any(|w| {
                    subset(&sel, &labels_at(w, "/spec/template/metadata/labels"))
                        && array_at(w, "/spec/template/spec/containers")
                            .iter()
                            .any(|c| stage_of(c) == Some(stage))
                })
            });
            p.check(scraped, || format!("{ctx}: selects no Service of {stage}"));
        }
        let endpoints = array_at(sm, "/spec/endpoints");
        p.check(!endpoints.is_empty(), || format!("{ctx}: no endpoints"));
        for ep in endpoints {
            let port = str_at(ep, "/port");
            let path = str_at(ep, "/path").unwrap_or("/metrics");
            p.check(path == "/metrics", || {
                format!("{ctx}: scrapes {path}, not /metrics")
            });
            for s in &selected {
                let named = array_at(s, "/spec/ports")
                    .iter()
                    .any(|pt| port.is_some() && str_at(pt, "/name") == port);
                p.check(named, || {
                    format!(
                        "{ctx}: endpoint port {port:?} is no named port of Service {}",
                        name(s)
                    )
                });
            }
        }
        if let Some(job) = str_at(sm, "/spec/jobLabel") {
            for s in &selected {
                p.check(labels_at(s, "/metadata/labels").contains_key(job), || {
                    format!(
                        "{ctx}: jobLabel {job} is not a label of Service {}",
                        name(s)
                    )
                });
            }
        }
    }
}

const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const KEYWORDS: [&str; 12] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
];

/// What a PromQL expression reads, and its aggregations that drop `namespace`.
#[derive(Default, Debug)]
struct PromqlScan {
    metrics: BTreeSet<String>,
    drops_namespace: Vec<String>,
}

/// A small PromQL scanner: string literals, label matchers and ranges are
/// skipped, a name followed by `(` is a function, keywords are keywords, and
/// every other name is a metric. Aggregations must be written
/// `sum by (namespace, ...) (...)`, which keeps the label an
/// AlertmanagerConfig routes on.
fn scan_promql(expr: &str) -> PromqlScan {
    let chars: Vec<char> = expr.chars().collect();
    let mut scan = PromqlScan::default();
    let skip_to = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                Some(_) if c == '\\' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == open => depth += 1,
                None if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                None => {}
            }
            i += 1;
        }
        i
    };
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let ident_at = |i: usize| -> String {
        chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_' || **c == ':')
            .collect()
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if c == '{' {
            i = skip_to(i, '{', '}');
        } else if c == '[' {
            i = skip_to(i, '[', ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let ident = ident_at(i);
            i += ident.len();
            let j = next_non_space(i);
            let lower = ident.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) && chars.get(j) == Some(&'(')
                {
                    i = skip_to(j, '(', ')');
                }
            } else if AGGREGATIONS.contains(&lower.as_str()) {
                let modifier = if chars.get(j).is_some_and(|c| c.is_ascii_alphabetic()) {
                    ident_at(j).to_ascii_lowercase()
                } else {
                    String::new()
                };
                let list_start = next_non_space(j + modifier.len());
                let labels: String = if chars.get(list_start) == Some(&'(') {
                    chars[list_start..skip_to(list_start, '(', ')')]
                        .iter()
                        .collect()
                } else {
                    String::new()
                };
                let has_namespace = labels
                    .trim_matches(|c| c == '(' || c == ')')
                    .split(',')
                    .any(|l| l.trim() == "namespace");
                let keeps = match modifier.as_str() {
                    "by" => has_namespace,
                    "without" => !has_namespace,
                    _ => false,
                };
                if !keeps {
                    scan.drops_namespace
                        .push(format!("{ident} {modifier}{labels}"));
                }
            } else if chars.get(j) != Some(&'(') {
                scan.metrics.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    scan
}

fn documented(metric: &str, readme: &BTreeSet<String>) -> bool {
    PROMETHEUS_SERIES.contains(&metric)
        || readme.contains(metric)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| metric.strip_suffix(s).is_some_and(|m| readme.contains(m)))
}

fn is_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// The alerts: the required ones exist, each is well-formed, reads only
/// documented metrics and keeps `namespace`. Returns each alert's labels.
fn check_prometheus_rule(
    r: &Rendered,
    readme: &BTreeSet<String>,
    p: &mut Problems,
) -> Vec<(String, BTreeMap<String, String>)> {
    let rules: Vec<&Value> = r.of_kind("PrometheusRule").collect();
    p.check(rules.len() == 1, || {
        format!(
            "{}: expected one PrometheusRule, found {}",
            r.name,
            rules.len()
        )
    });
    let mut alerts = vec![];
    for pr in rules {
        let ctx = format!("{}: PrometheusRule {}", r.name, name(pr));
        p.check(
            str_at(pr, "/apiVersion") == Some("monitoring.coreos.com/v1"),
            || format!("{ctx}: must be monitoring.coreos.com/v1"),
        );
        let groups = array_at(pr, "/spec/groups");
        p.check(!groups.is_empty(), || format!("{ctx}: no groups"));
        for g in groups {
            p.check(str_at(g, "/name").is_some_and(|n| !n.is_empty()), || {
                format!("{ctx}: a group without a name")
            });
            for rule in array_at(g, "/rules") {
                let Some(alert) = str_at(rule, "/alert") else {
                    p.check(str_at(rule, "/record").is_some(), || {
                        format!("{ctx}: a rule that is neither alert nor record")
                    });
                    continue;
                };
                let actx = format!("{ctx} alert {alert}");
                let expr = str_at(rule, "/expr").unwrap_or_default();
                p.check(!expr.trim().is_empty(), || format!("{actx}: no expr"));
                let scan = scan_promql(expr);
                p.check(!scan.metrics.is_empty(), || {
                    format!("{actx}: reads no metric")
                });
                for m in &scan.metrics {
                    p.check(documented(m, readme), || {
                        format!("{actx}: metric {m} is not in docs/operations.md's metrics table")
                    });
                }
                for agg in &scan.drops_namespace {
                    p.fail(format!(
                        "{actx}: `{agg}` drops the namespace label; write `by (namespace, ...)`"
                    ));
                }
                if let Some(f) = rule.get("for") {
                    p.check(f.as_str().is_some_and(is_duration), || {
                        format!("{actx}: `for: {f}` is not a duration")
                    });
                }
                let labels = labels_at(rule, "/labels");
                let severity = labels.get("severity").map(String::as_str);
                p.check(
                    matches!(severity, Some("critical" | "warning" | "info")),
                    || {
                        format!(
                            "{actx}: severity must be critical, warning or info, is {severity:?}"
                        )
                    },
                );
                for a in ["summary", "description"] {
                    p.check(
                        str_at(rule, &format!("/annotations/{a}")).is_some_and(|s| !s.is_empty()),
                        || format!("{actx}: no {a} annotation"),
                    );
                }
                alerts.push((alert.to_string(), labels));
            }
        }
    }
    let names: BTreeSet<&str> = alerts.iter().map(|(a, _)| a.as_str()).collect();
    for required in REQUIRED_ALERTS {
        p.check(names.contains(required), || {
            format!("{}: the PrometheusRule lacks alert {required}", r.name)
        });
    }
    p.check(names.len() == alerts.len(), || {
        format!("{}: alert names repeat", r.name)
    });
    alerts
}

/// `deploy/k8s/alertmanager-example.yaml`: its routes reach receivers it
/// defines, the e-mail receiver is complete, and its matchers catch every
/// weir alert.
fn check_alertmanager_example(alerts: &[(String, BTreeMap<String, String>)], p: &mut Problems) {
    let path = repo_root().join("deploy/k8s/alertmanager-example.yaml");
    let docs = parse_docs(&std::fs::read_to_string(&path).expect("alertmanager-example.yaml"));
    let configs: Vec<&Value> = docs
        .iter()
        .filter(|d| kind(d) == "AlertmanagerConfig")
        .collect();
    p.check(configs.len() == 1, || {
        format!(
            "alertmanager-example.yaml: expected one AlertmanagerConfig, found {}",
            configs.len()
        )
    });
    for amc in configs {
        let ctx = format!(
            "alertmanager-example.yaml: AlertmanagerConfig {}",
            name(amc)
        );
        p.check(
            str_at(amc, "/apiVersion").is_some_and(|v| {
                v == "monitoring.coreos.com/v1alpha1" || v == "monitoring.coreos.com/v1beta1"
            }),
            || format!("{ctx}: unexpected apiVersion"),
        );
        let receivers: BTreeMap<&str, &Value> = array_at(amc, "/spec/receivers")
            .iter()
            .filter_map(|r| Some((str_at(r, "/name")?, r)))
            .collect();
        let route = amc.pointer("/spec/route").cloned().unwrap_or(Value::Null);
        let mut routes = vec![&route];
        routes.extend(array_at(&route, "/routes"));
        for rt in routes {
            let receiver = str_at(rt, "/receiver").unwrap_or_default();
            p.check(receivers.contains_key(receiver), || {
                format!("{ctx}: a route sends to receiver {receiver:?}, which is not defined")
            });
        }
        let top = str_at(&route, "/receiver").unwrap_or_default();
        let emails = receivers
            .get(top)
            .map(|r| array_at(r, "/emailConfigs"))
            .unwrap_or_default();
        p.check(!emails.is_empty(), || {
            format!("{ctx}: receiver {top:?} sends no e-mail")
        });
        for e in emails {
            for field in ["to", "from", "smarthost"] {
                p.check(str_at(e, &format!("/{field}")).is_some(), || {
                    format!("{ctx}: an e-mail config without {field}")
                });
            }
            if let Some(secret) = str_at(e, "/authPassword/name") {
                let key = str_at(e, "/authPassword/key").unwrap_or_default();
                let defined = docs.iter().any(|d| {
                    kind(d) == "Secret"
                        && name(d) == secret
                        && ["/stringData", "/data"]
                            .iter()
                            .any(|ptr| d.pointer(&format!("{ptr}/{key}")).is_some())
                });
                p.check(defined, || {
                    format!("{ctx}: authPassword names Secret {secret} key {key}, which the file does not define")
                });
            }
        }
        for m in array_at(&route, "/matchers") {
            let label = str_at(m, "/name").unwrap_or_default();
            let value = str_at(m, "/value").unwrap_or_default();
            let op = str_at(m, "/matchType").unwrap_or("=");
            p.check(op == "=", || {
                format!("{ctx}: this test reads `=` matchers only, not {op:?}")
            });
            for (alert, labels) in alerts {
                p.check(labels.get(label).map(String::as_str) == Some(value), || {
                    format!("{ctx}: matcher {label}={value} misses alert {alert}")
                });
            }
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read deploy/k8s") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "weir-keys.env" {
            // An operator's real keys file is never read by a test.
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn manifests_render_validate_and_keep_the_deployment_rules() {
    let tools = Tools::locate();
    let work = tempfile::tempdir().expect("tempdir");
    let k8s = work.path().join("k8s");
    copy_tree(&repo_root().join("deploy/k8s"), &k8s);
    // The prod Secret comes from a file the operator provides; the committed
    // example stands in for it.
    let prod = k8s.join("overlays/prod");
    std::fs::copy(
        prod.join("weir-keys.env.example"),
        prod.join("weir-keys.env"),
    )
    .expect("prod keys example");
    // Whatever WEIR_* the test runner's environment holds must not leak into
    // the stages' config loads below.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WEIR_")) {
        std::env::remove_var(k);
    }
    let readme = weir_tests::docs::metric_names();
    let known = known_keys();
    let mut p = Problems::default();
    let mut base_alerts = vec![];
    for (label, flavour, dir) in [
        ("base", Flavour::Base, "base"),
        ("dev", Flavour::Dev, "overlays/dev"),
        ("prod", Flavour::Prod, "overlays/prod"),
    ] {
        let yaml = match tools.render(&k8s.join(dir)) {
            Ok(yaml) => yaml,
            Err(e) => {
                p.fail(format!("{label}: kubectl kustomize {dir} failed: {e}"));
                continue;
            }
        };
        let file = work.path().join(format!("{label}.yaml"));
        std::fs::write(&file, &yaml).expect("write render");
        let docs = parse_docs(&yaml);
        tools.validate(label, &file, &docs, &mut p);
        let r = Rendered {
            name: label,
            flavour,
            docs,
        };
        let stages = check_workloads(&r, work.path(), &known, &mut p);
        let hpa_min = check_hpa(&r, &mut p);
        check_replicas(&r, &stages, hpa_min, &mut p);
        check_services(&r, &mut p);
        check_pdbs(&r, &mut p);
        check_keys_secret(&r, &mut p);
        check_service_monitor(&r, &mut p);
        let alerts = check_prometheus_rule(&r, &readme, &mut p);
        if flavour == Flavour::Base {
            base_alerts = alerts;
        }
        let kinds: BTreeMap<&str, usize> = r.docs.iter().fold(BTreeMap::new(), |mut m, d| {
            *m.entry(kind(d)).or_default() += 1;
            m
        });
        let counts: Vec<String> = stages
            .iter()
            .filter(|(s, _)| **s != "ingest")
            .map(|(s, (n, v))| format!("{s} {n} (partitions {})", v.partitions))
            .collect();
        println!(
            "{label}: {} objects {kinds:?}; replicas: ingest by HPA from {hpa_min:?}, {}",
            r.docs.len(),
            counts.join(", ")
        );
    }
    check_alertmanager_example(&base_alerts, &mut p);
    assert!(
        p.0.is_empty(),
        "deploy/k8s has {} problem(s):\n  - {}",
        p.0.len(),
        p.0.join("\n  - ")
    );
}

/// The PromQL scanner itself, on the shapes the rules use and the mistakes
/// it exists to catch.
#[test]
fn promql_scan_finds_metrics_and_dropped_namespaces() {
    let ok = scan_promql(
        r#"sum by (namespace) (rate(weir_a_total{status=~"5..", x="}"}[5m]))
           > 1.1 * (sum by (namespace) (rate(weir_b_total[10m])) or on (namespace) vector(0))
           and on (namespace) changes(weir_c_ms[15m]) == 0 and up{job="x"} == 0"#,
    );
    assert_eq!(
        ok.metrics,
        ["up", "weir_a_total", "weir_b_total", "weir_c_ms"]
            .map(String::from)
            .into(),
        "{ok:?}"
    );
    assert!(ok.drops_namespace.is_empty(), "{ok:?}");
    let bad =
        scan_promql("sum(rate(kafka_consumergroup_lag[5m])) by (namespace) / max by (pod) (x)");
    assert!(bad.metrics.contains("kafka_consumergroup_lag"), "{bad:?}");
    assert!(bad.metrics.contains("x"), "{bad:?}");
    assert_eq!(bad.drops_namespace.len(), 2, "{bad:?}");
    assert!(is_duration("15m") && is_duration("1h30m") && !is_duration("15") && !is_duration("m"));
}
