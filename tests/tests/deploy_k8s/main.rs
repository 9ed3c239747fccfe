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
//! what they name; the processor, the aggregator and the archiver run at most
//! as many replicas as the partitions they are configured with; the
//! archiver's store is the base's marked placeholder, replaced in every
//! overlay, and a file:// store is on a writable volume of its one replica;
//! and every metric an alert uses is one docs/operations.md documents. The Alertmanager example is checked against the
//! alerts' labels.

use base64::Engine as _;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use weir_aggregator::config::AggregatorConfig;
use weir_archiver::config::ArchiverConfig;
use weir_archiver::store::ArchiveStore;
use weir_core::api_keys::KeyKind;
use weir_core::config::CommonArgs;
use weir_ingest::config::IngestConfig;
use weir_processor::config::ProcessorConfig;
use weir_tests::repo_root;

/// The Kubernetes version the manifests are validated against.
const K8S_VERSION: &str = "1.30.0";
const IMAGE: &str = "ghcr.io/weir-dev/weir";
const STAGES: [&str; 4] = ["ingest", "processor", "aggregator", "archiver"];
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

mod manifests;
mod monitoring;
mod stage_config;
mod tools;
mod workloads;

use manifests::*;
use monitoring::*;
use stage_config::*;
use tools::*;
use workloads::*;

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

/// The archiver's store check on the base's own Deployment (read as it is,
/// no kustomize needed), edited: each edit is a mistake an overlay could
/// make, and each must be reported.
#[test]
fn archive_store_check_catches_misplaced_stores() {
    let text = std::fs::read_to_string(repo_root().join("deploy/k8s/base/archiver.yaml"))
        .expect("deploy/k8s/base/archiver.yaml");
    let deployment = parse_docs(&text)
        .into_iter()
        .find(|d| kind(d) == "Deployment")
        .expect("archiver.yaml has a Deployment");
    let check = |flavour: Flavour, url: &str, edit: &dyn Fn(&mut Value)| -> Vec<String> {
        let mut w = deployment.clone();
        edit(&mut w);
        let pod = w.pointer("/spec/template/spec").expect("a pod template");
        let volumes: BTreeMap<&str, &Value> = array_at(pod, "/volumes")
            .iter()
            .filter_map(|v| Some((str_at(v, "/name")?, v)))
            .collect();
        let container = &array_at(pod, "/containers")[0];
        let r = Rendered {
            name: "edited",
            flavour,
            docs: vec![w.clone()],
        };
        let mut p = Problems::default();
        check_archive_store(&r, &w, container, &volumes, url, "archiver", &mut p);
        p.0
    };
    // An archive volume, as the dev overlay mounts one.
    let with_volume = |at: &'static str, volume: Value, read_only: bool| {
        move |w: &mut Value| {
            let pod = w.pointer_mut("/spec/template/spec").unwrap();
            let mut v = volume.clone();
            v["name"] = "archive".into();
            pod["volumes"].as_array_mut().unwrap().push(v);
            pod["containers"][0]["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .push(
                    serde_json::json!({"name": "archive", "mountPath": at, "readOnly": read_only}),
                );
        }
    };
    let empty_dir = serde_json::json!({"emptyDir": {}});
    let claim = serde_json::json!({"persistentVolumeClaim": {"claimName": "archive"}});
    let file = "file:///var/lib/weir/archive";
    let base_url = "s3://REPLACE_ME-in-an-overlay/weir";
    let none: &dyn Fn(&mut Value) = &|_| {};
    let finds = |problems: Vec<String>, needle: &str| {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem mentioning {needle:?}, got {problems:#?}"
        );
    };

    // What the base and the overlays do passes.
    assert_eq!(check(Flavour::Base, base_url, none), Vec::<String>::new());
    assert_eq!(
        check(Flavour::Prod, "s3://archive-bucket/weir", none),
        Vec::<String>::new()
    );
    let dev = with_volume("/var/lib/weir/archive", empty_dir.clone(), false);
    assert_eq!(check(Flavour::Dev, file, &dev), Vec::<String>::new());
    let claim_above = with_volume("/var/lib/weir", claim.clone(), false);
    assert_eq!(
        check(Flavour::Prod, file, &claim_above),
        Vec::<String>::new()
    );

    // The placeholder where it does not belong, or missing where it does.
    finds(
        check(Flavour::Prod, base_url, none),
        "still holds the base's placeholder",
    );
    finds(
        check(Flavour::Base, "s3://archive-bucket/weir", none),
        "must be the marked placeholder",
    );
    // A filesystem store on the read-only root, a read-only or a
    // non-writable volume, or another directory than the volume's.
    let no_volume = "is on no writable emptyDir or PersistentVolumeClaim";
    finds(check(Flavour::Dev, file, none), no_volume);
    finds(
        check(
            Flavour::Dev,
            file,
            &with_volume("/var/lib/weir/archive", empty_dir.clone(), true),
        ),
        no_volume,
    );
    finds(
        check(
            Flavour::Dev,
            file,
            &with_volume(
                "/var/lib/weir/archive",
                serde_json::json!({"configMap": {"name": "weir-config"}}),
                false,
            ),
        ),
        no_volume,
    );
    finds(check(Flavour::Dev, "file:///srv/archive", &dev), no_volume);
    // Two pods, two archives.
    let two = |w: &mut Value| {
        dev(w);
        w["spec"]["replicas"] = 2.into();
    };
    finds(check(Flavour::Dev, file, &two), "would split the archive");
    finds(
        check(Flavour::Dev, "/var/lib/weir/archive", &dev),
        "is not a URL",
    );
}
