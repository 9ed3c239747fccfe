//! Each stage's configuration as the stage itself would load it from a
//! container's config file and environment.

use super::*;

/// Each stage's top-level config keys: what it reads from `WEIR_*`.
pub(crate) fn known_keys() -> BTreeMap<&'static str, BTreeSet<String>> {
    pub(crate) fn keys(v: serde_json::Result<Value>) -> BTreeSet<String> {
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
        (
            "archiver",
            keys(serde_json::to_value(ArchiverConfig::default())),
        ),
    ])
}

/// The top-level config key a `WEIR_*` variable sets.
pub(crate) fn env_top_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix("WEIR_")?;
    Some(rest.split("__").next()?.to_ascii_lowercase())
}

/// What the checks need from a loaded stage config.
pub(crate) struct StageView {
    pub(crate) listen: String,
    pub(crate) grpc_listen: Option<String>,
    pub(crate) instance_id: Option<String>,
    pub(crate) partitions: i32,
    pub(crate) spill_dir: Option<String>,
    pub(crate) shutdown_timeout_ms: Option<u64>,
    /// Whether the stage accepts its keys (`Err` is the reason it would not
    /// start); `None` for the processor and the archiver, which take none.
    pub(crate) keys: Option<Result<usize, String>>,
    /// The archiver's `store.url`; `None` for the other stages.
    pub(crate) store_url: Option<String>,
}

/// Loads `stage`'s config from `file` and the container's `env`, through the
/// stage's own loader, with the process environment of a pod.
///
/// The environment is process-wide: this test is the only one in its binary
/// that touches it, and it runs the loads one after another.
pub(crate) fn load_stage(
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
            store_url: None,
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
                store_url: None,
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
            store_url: None,
        }),
        "archiver" => args.load::<ArchiverConfig>().and_then(|c| {
            // The archiver builds its store first thing: an object store URL
            // it cannot use (a typo'd scheme, `gs://` in a build without
            // the gcs feature) stops it at start-up. A file:// store is left
            // alone here, as building it creates the directory.
            if !c.store.url.starts_with("file:") {
                ArchiveStore::build(&c.store)?;
            }
            Ok(StageView {
                listen: c.listen.clone(),
                grpc_listen: None,
                instance_id: Some(c.instance_id.clone()),
                partitions: c.kafka.partitions,
                spill_dir: None,
                shutdown_timeout_ms: None,
                keys: None,
                store_url: Some(c.store.url.clone()),
            })
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

pub(crate) fn keys_of(
    keys: anyhow::Result<Option<weir_core::api_keys::ApiKeys>>,
) -> Result<usize, String> {
    match keys {
        Ok(Some(k)) => Ok(k.len()),
        Ok(None) => Err("auth is off".into()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The container's environment as the kubelet builds it: `envFrom` first,
/// then `env`, which wins.
pub(crate) fn container_env(
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
pub(crate) fn config_file(
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
