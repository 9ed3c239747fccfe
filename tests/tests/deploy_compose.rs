//! The container deployment, checked without a container engine: the
//! repository's `Dockerfile` and `.dockerignore`, and
//! `deploy/compose/compose.yaml` with the Prometheus and OpenTelemetry
//! collector configs beside it.
//!
//! Nothing here builds an image or starts a container (no engine runs where
//! the tests run). Instead the compose file is validated against the
//! compose-spec JSON schema, vendored in `deploy/compose` so nothing is
//! downloaded, and both files are checked against what the rest of the
//! repository says: the stages' `[[bin]]` names, their configuration keys
//! (each stage's compose environment is loaded by that stage's own config
//! loader), the ports they listen on, and the files the compose file mounts.
//!
//! Every check returns the problems it finds as sentences. The tests at the
//! end run the same checks on deliberately broken copies, so a check that can
//! no longer fail shows up as a failing test.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use weir_aggregator::config::AggregatorConfig;
use weir_core::config::CommonArgs;
use weir_ingest::config::IngestConfig;
use weir_processor::config::{CommitModeSetting, ProcessorConfig};

/// The three stage binaries: compose service names, `[[bin]]` names and the
/// crate directories are all the same word.
const STAGES: [&str; 3] = ["ingest", "processor", "aggregator"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn compose_dir() -> PathBuf {
    repo().join("deploy/compose")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// YAML as compose and Prometheus read it: merge keys (`<<`) applied, so the
/// stages' shared `x-` anchors count, then as JSON for the schema validator.
fn yaml_to_json(text: &str) -> Json {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).expect("valid YAML");
    value.apply_merge().expect("YAML merge keys apply");
    serde_json::to_value(value).expect("YAML with string keys converts to JSON")
}

fn load_compose() -> Json {
    yaml_to_json(&read(&compose_dir().join("compose.yaml")))
}

fn services(doc: &Json) -> &serde_json::Map<String, Json> {
    doc["services"]
        .as_object()
        .expect("compose file has services")
}

fn assert_none(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}:\n  - {}",
        problems.join("\n  - ")
    );
}

fn assert_finds(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem mentioning {needle:?}, got {problems:#?}"
    );
}

// ---------------------------------------------------------------- images --

/// Why an image reference does not name one version of an image, or `None`
/// when it does: a sha256 digest, or a tag that is a version number. `latest`,
/// no tag (which means `latest`) and names such as `nonroot` or `stable` move
/// whenever the publisher pushes.
fn unpinned(reference: &str) -> Option<String> {
    if reference.contains('$') {
        return Some(format!(
            "{reference}: built from a variable, so its pin cannot be checked"
        ));
    }
    if let Some((_, digest)) = reference.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        return (hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("{reference}: the digest is not sha256:<64 hex digits>"));
    }
    // A ':' before the last '/' belongs to a registry's port, not to a tag.
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.split_once(':') {
        None => Some(format!("{reference}: no tag, which means `latest`")),
        Some((_, tag)) if !is_version_tag(tag) => Some(format!(
            "{reference}: tag {tag:?} is not a version, so it moves"
        )),
        Some(_) => None,
    }
}

fn is_version_tag(tag: &str) -> bool {
    let digits = tag.strip_prefix('v').unwrap_or(tag);
    digits.starts_with(|c: char| c.is_ascii_digit())
}

// --------------------------------------------------------------- compose --

fn schema_problems(doc: &Json) -> Vec<String> {
    let schema: Json = serde_json::from_str(&read(&compose_dir().join("compose-spec.schema.json")))
        .expect("the vendored schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the compose-spec schema compiles");
    validator
        .iter_errors(doc)
        .map(|e| format!("schema: at {}: {e}", e.instance_path()))
        .collect()
}

/// Services pulled from a registry must be pinned. Services built here are
/// exempt from that, but must name their image with a tag other than `latest`,
/// which is what lets the three stages share one build.
fn pin_problems(doc: &Json) -> Vec<String> {
    let mut problems = vec![];
    for (name, svc) in services(doc) {
        let image = svc["image"].as_str();
        match (svc.get("build"), image) {
            (Some(_), None) => problems.push(format!(
                "{name}: is built here but names no image, so each stage would build its own"
            )),
            (Some(_), Some(image)) => {
                let last = image.rsplit('/').next().unwrap_or(image);
                if !last
                    .split_once(':')
                    .is_some_and(|(_, t)| !t.is_empty() && t != "latest")
                {
                    problems.push(format!(
                        "{name}: built image {image} needs a tag other than latest"
                    ));
                }
            }
            (None, None) => problems.push(format!("{name}: has neither image nor build")),
            (None, Some(image)) => {
                if let Some(p) = unpinned(image) {
                    problems.push(format!("{name}: {p}"));
                }
            }
        }
    }
    problems
}

/// A volume entry, short (`src:dst[:mode]`) or long syntax, as (source,
/// target, is_bind). Compose treats a short source starting with `.`, `/` or
/// `~` as a host path and anything else as a named volume.
fn mounts(svc: &Json) -> Vec<(String, String, bool)> {
    let mut out = vec![];
    for v in svc["volumes"].as_array().into_iter().flatten() {
        if let Some(short) = v.as_str() {
            let mut parts = short.splitn(3, ':');
            let (src, dst) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let bind = src.starts_with(['.', '/', '~']);
            out.push((src.to_string(), dst.to_string(), bind));
        } else {
            let src = v["source"].as_str().unwrap_or("").to_string();
            let dst = v["target"].as_str().unwrap_or("").to_string();
            out.push((src, dst, v["type"] == "bind"));
        }
    }
    out
}

/// The host file or directory a service mounts at `target`, if it binds one.
fn mounted_at(svc: &Json, target: &str) -> Option<PathBuf> {
    mounts(svc)
        .into_iter()
        .find(|(_, dst, bind)| *bind && dst == target)
        .map(|(src, _, _)| compose_dir().join(src))
}

/// Everything the compose file takes from the repository must be there:
/// bind-mounted files, build contexts and their Dockerfiles, env files; and
/// every named volume must be declared.
fn mount_problems(doc: &Json, base: &Path) -> Vec<String> {
    let mut problems = vec![];
    let declared: BTreeSet<&String> = doc["volumes"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    for (name, svc) in services(doc) {
        for (src, dst, bind) in mounts(svc) {
            if bind {
                if !base.join(&src).exists() {
                    problems.push(format!(
                        "{name}: mounts {src} at {dst}, which does not exist"
                    ));
                }
            } else if !declared.contains(&src) {
                problems.push(format!(
                    "{name}: volume {src} is not declared under volumes:"
                ));
            }
        }
        if let Some(build) = svc.get("build") {
            let context = build.as_str().or(build["context"].as_str()).unwrap_or(".");
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            if !base.join(context).join(dockerfile).is_file() {
                problems.push(format!(
                    "{name}: builds {context}/{dockerfile}, which does not exist"
                ));
            }
        }
        let env_files = match &svc["env_file"] {
            Json::String(s) => vec![s.clone()],
            Json::Array(a) => a
                .iter()
                .filter_map(|f| f.as_str().or(f["path"].as_str()).map(String::from))
                .collect(),
            _ => vec![],
        };
        for file in env_files {
            if !base.join(&file).is_file() {
                problems.push(format!("{name}: env_file {file} does not exist"));
            }
        }
    }
    problems
}

/// A service's environment as a map, from either compose form.
fn environment(svc: &Json) -> BTreeMap<String, String> {
    let scalar = |v: &Json| match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    };
    match &svc["environment"] {
        Json::Object(m) => m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Json::Array(a) => a
            .iter()
            .filter_map(|e| e.as_str())
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// What compose tells one stage, read back through the stage's own loader.
struct StageView {
    name: &'static str,
    listen_port: u16,
    brokers: String,
    registry_url: String,
    otlp_endpoint: String,
}

/// Loads a stage's configuration from its compose environment the way the
/// stage would: `WEIR_A__B=v` is `--set a.b=v`, and a key whose top-level
/// section the stage does not have is one the stage silently ignores, which in
/// a compose file means a typo.
fn stage_config<T: Serialize + DeserializeOwned + Default>(
    stage: &str,
    env: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<T> {
    let known: BTreeSet<String> = match serde_json::to_value(T::default()) {
        Ok(Json::Object(m)) => m.keys().cloned().collect(),
        _ => panic!("{stage}'s config serializes as a table"),
    };
    let mut overrides = vec![];
    for (key, value) in env {
        let Some(rest) = key.strip_prefix("WEIR_") else {
            continue;
        };
        let path = rest.to_ascii_lowercase().replace("__", ".");
        let top = path.split('.').next().unwrap_or_default();
        if known.contains(top) {
            overrides.push(format!("{path}={value}"));
        } else {
            problems.push(format!(
                "{stage}: {key} is not one of its settings, so it is ignored"
            ));
        }
    }
    let args = CommonArgs {
        config: None,
        overrides,
        print_config: false,
    };
    match args.load::<T>() {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            problems.push(format!("{stage}: its environment does not load: {e:#}"));
            None
        }
    }
}

fn port_of(listen: &str) -> Option<u16> {
    listen.rsplit_once(':')?.1.parse().ok()
}

/// The stages' configurations, as far as they load, plus the problems found
/// loading them and in what they say about each other.
fn stage_views(doc: &Json, problems: &mut Vec<String>) -> Vec<StageView> {
    let svcs = services(doc);
    let mut views = vec![];
    if let Some(svc) = svcs.get("ingest") {
        if let Some(c) = stage_config::<IngestConfig>("ingest", &environment(svc), problems) {
            if c.auth.enabled && c.auth.write_keys.is_empty() && c.auth.write_keys_file.is_empty() {
                problems.push(
                    "ingest: auth is on but it has no write keys, so every request gets 401".into(),
                );
            }
            views.push(StageView {
                name: "ingest",
                listen_port: port_of(&c.listen).unwrap_or(0),
                brokers: c.kafka.brokers,
                registry_url: c.schema_registry_url,
                otlp_endpoint: c.telemetry.otlp_endpoint,
            });
        }
    } else {
        problems.push("no ingest service".into());
    }
    if let Some(svc) = svcs.get("processor") {
        if let Some(c) = stage_config::<ProcessorConfig>("processor", &environment(svc), problems) {
            if c.commit_mode != CommitModeSetting::ExactlyOnce {
                problems.push(format!(
                    "processor: commit_mode is {:?}, not exactly_once",
                    c.commit_mode
                ));
            }
            if c.instance_id.is_empty() {
                problems.push("processor: no instance_id, so no stable transactional.id".into());
            }
            views.push(StageView {
                name: "processor",
                listen_port: port_of(&c.listen).unwrap_or(0),
                brokers: c.kafka.brokers,
                registry_url: c.schema_registry_url,
                otlp_endpoint: c.telemetry.otlp_endpoint,
            });
        }
    } else {
        problems.push("no processor service".into());
    }
    if let Some(svc) = svcs.get("aggregator") {
        if let Some(c) = stage_config::<AggregatorConfig>("aggregator", &environment(svc), problems)
        {
            if c.auth.enabled && c.auth.read_keys.is_empty() && c.auth.read_keys_file.is_empty() {
                problems.push(
                    "aggregator: auth is on but it has no read keys, so every query gets 401"
                        .into(),
                );
            }
            clickhouse_client_problems(
                doc,
                "aggregator",
                &c.clickhouse.url,
                &c.clickhouse.user,
                &c.clickhouse.password,
                problems,
            );
            views.push(StageView {
                name: "aggregator",
                listen_port: port_of(&c.listen).unwrap_or(0),
                brokers: c.kafka.brokers,
                registry_url: c.schema_registry_url,
                otlp_endpoint: c.telemetry.otlp_endpoint,
            });
        }
    } else {
        problems.push("no aggregator service".into());
    }
    views
}

/// A ClickHouse client (the aggregator, Grafana) must reach the clickhouse
/// service with the user the image creates from CLICKHOUSE_USER/PASSWORD.
fn clickhouse_client_problems(
    doc: &Json,
    client: &str,
    url: &str,
    user: &str,
    password: &str,
    problems: &mut Vec<String>,
) {
    let Some(ch) = services(doc).get("clickhouse") else {
        problems.push("no clickhouse service".into());
        return;
    };
    let env = environment(ch);
    match reqwest::Url::parse(url) {
        Ok(u) if u.host_str() == Some("clickhouse") && u.port_or_known_default() == Some(8123) => {}
        _ => problems.push(format!(
            "{client}: ClickHouse at {url}, not the clickhouse service's HTTP port 8123"
        )),
    }
    let want_user = env.get("CLICKHOUSE_USER").map_or("default", String::as_str);
    if user != want_user {
        problems.push(format!(
            "{client}: logs in to ClickHouse as {user:?}, but the clickhouse service sets up {want_user:?}"
        ));
    }
    if Some(password) != env.get("CLICKHOUSE_PASSWORD").map(String::as_str) {
        problems.push(format!(
            "{client}: has another ClickHouse password than the clickhouse service sets up"
        ));
    }
}

/// The addresses each stage was given must be services of this file, on the
/// ports those services listen on.
fn wiring_problems(doc: &Json, views: &[StageView]) -> Vec<String> {
    let mut problems = vec![];
    let svcs = services(doc);
    let kafka_advertised = svcs
        .get("kafka")
        .map(|k| {
            environment(k)
                .get("KAFKA_ADVERTISED_LISTENERS")
                .cloned()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let advertised: BTreeSet<&str> = kafka_advertised
        .split(',')
        .filter_map(|l| l.split_once("://").map(|(_, addr)| addr))
        .collect();
    let registry_port: Option<u16> = svcs
        .get("schema-registry")
        .and_then(|r| environment(r).get("SCHEMA_REGISTRY_LISTENERS").cloned())
        .and_then(|l| reqwest::Url::parse(l.split(',').next()?).ok()?.port());
    let collector_http = svcs
        .get("otel-collector")
        .and_then(collector_config)
        .and_then(|cfg| {
            cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
                .as_str()
                .map(String::from)
        });
    for v in views {
        for broker in v.brokers.split(',') {
            if !advertised.contains(broker) {
                problems.push(format!(
                    "{}: broker {broker} is not a listener the kafka service advertises ({kafka_advertised})",
                    v.name
                ));
            }
        }
        match reqwest::Url::parse(&v.registry_url) {
            Ok(u)
                if u.host_str() == Some("schema-registry")
                    && u.port_or_known_default() == registry_port => {}
            _ => problems.push(format!(
                "{}: schema registry {} is not the schema-registry service on its listener port",
                v.name, v.registry_url
            )),
        }
        match (reqwest::Url::parse(&v.otlp_endpoint), &collector_http) {
            (Ok(u), Some(http)) if u.host_str() == Some("otel-collector")
                && u.port().map(|p| p.to_string()) == http.rsplit_once(':').map(|(_, p)| p.to_string())
                && u.path() == "/v1/traces" => {}
            _ => problems.push(format!(
                "{}: traces go to {:?}, not the collector's OTLP/HTTP receiver ({collector_http:?}) at /v1/traces",
                v.name, v.otlp_endpoint
            )),
        }
    }
    problems
}

/// The three stages run one image, each with its own binary as the command.
fn stage_image_problems(doc: &Json, binaries_in_image: &BTreeSet<String>) -> Vec<String> {
    let mut problems = vec![];
    let svcs = services(doc);
    let images: BTreeSet<String> = STAGES
        .iter()
        .filter_map(|s| svcs.get(*s))
        .map(|svc| format!("{} {}", svc["image"], svc["build"]))
        .collect();
    if images.len() != 1 {
        problems.push(format!(
            "the stages should share one image and build, they have {images:?}"
        ));
    }
    for stage in STAGES {
        let Some(svc) = svcs.get(stage) else { continue };
        let command: Vec<&str> = match &svc["command"] {
            Json::Array(a) => a.iter().filter_map(Json::as_str).collect(),
            Json::String(s) => s.split_whitespace().collect(),
            _ => vec![],
        };
        let program = command.first().map(|c| c.rsplit('/').next().unwrap_or(c));
        if program != Some(stage) {
            problems.push(format!("{stage}: runs {command:?}, not the {stage} binary"));
        } else if !binaries_in_image.contains(stage) {
            problems.push(format!(
                "{stage}: the Dockerfile does not put a {stage} binary in the image"
            ));
        }
    }
    problems
}

/// Each stage reports itself healthy through /readyz on its listen port,
/// probed by a program the Dockerfile puts in the image, and waits for healthy
/// Kafka and Schema Registry. Across the file, a `service_healthy` dependency
/// on a service without a healthcheck would stop `docker compose up`.
fn health_problems(doc: &Json, views: &[StageView], image_files: &BTreeSet<String>) -> Vec<String> {
    let mut problems = vec![];
    let svcs = services(doc);
    let has_healthcheck =
        |svc: &Json| svc["healthcheck"].is_object() && svc["healthcheck"]["disable"] != true;
    for (name, svc) in svcs {
        let deps: Vec<(String, String)> = match &svc["depends_on"] {
            Json::Object(m) => m
                .iter()
                .map(|(d, c)| {
                    (
                        d.clone(),
                        c["condition"]
                            .as_str()
                            .unwrap_or("service_started")
                            .to_string(),
                    )
                })
                .collect(),
            Json::Array(a) => a
                .iter()
                .filter_map(Json::as_str)
                .map(|d| (d.to_string(), "service_started".to_string()))
                .collect(),
            _ => vec![],
        };
        for (dep, condition) in &deps {
            match svcs.get(dep) {
                None => problems.push(format!("{name}: depends on {dep}, which is not a service")),
                Some(d) if condition == "service_healthy" && !has_healthcheck(d) => problems.push(
                    format!("{name}: waits for {dep} to be healthy, but {dep} has no healthcheck"),
                ),
                _ => {}
            }
        }
        if STAGES.contains(&name.as_str()) {
            for needed in ["kafka", "schema-registry"] {
                if !deps
                    .iter()
                    .any(|(d, c)| d == needed && c == "service_healthy")
                {
                    problems.push(format!("{name}: does not wait for a healthy {needed}"));
                }
            }
        }
    }
    for v in views {
        let svc = &svcs[v.name];
        if !has_healthcheck(svc) {
            problems.push(format!("{}: no healthcheck", v.name));
            continue;
        }
        let test: Vec<&str> = svc["healthcheck"]["test"]
            .as_array()
            .map(|a| a.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        // The image has no shell, so only the exec form can run.
        if test.first() != Some(&"CMD") || test.len() < 3 {
            problems.push(format!(
                "{}: healthcheck {test:?} is not [\"CMD\", program, ...]",
                v.name
            ));
            continue;
        }
        if !image_files.contains(test[1]) {
            problems.push(format!(
                "{}: healthcheck runs {}, which the Dockerfile does not put in the image",
                v.name, test[1]
            ));
        }
        let url = test.last().and_then(|u| reqwest::Url::parse(u).ok());
        let ok = url.as_ref().is_some_and(|u| {
            matches!(u.host_str(), Some("127.0.0.1" | "localhost"))
                && u.port_or_known_default() == Some(v.listen_port)
                && u.path() == "/readyz"
        });
        if !ok {
            problems.push(format!(
                "{}: healthcheck {test:?} does not fetch /readyz on its listen port {}",
                v.name, v.listen_port
            ));
        }
    }
    problems
}

/// Prometheus scrapes `/metrics` of every stage, on the port the stage
/// listens on, from the config file the prometheus service mounts.
fn prometheus_problems(doc: &Json, prometheus: &Json, views: &[StageView]) -> Vec<String> {
    let mut problems = vec![];
    let mounted = services(doc)
        .get("prometheus")
        .and_then(|p| mounted_at(p, "/etc/prometheus/prometheus.yml"));
    if mounted.map(|p| p.canonicalize().ok())
        != Some(compose_dir().join("prometheus.yml").canonicalize().ok())
    {
        problems
            .push("prometheus: does not mount deploy/compose/prometheus.yml as its config".into());
    }
    let mut scraped = BTreeSet::new();
    for job in prometheus["scrape_configs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let path_ok = job["metrics_path"].as_str().is_none_or(|p| p == "/metrics");
        let scheme_ok = job["scheme"].as_str().is_none_or(|s| s == "http");
        for sc in job["static_configs"].as_array().into_iter().flatten() {
            for t in sc["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
            {
                if path_ok && scheme_ok {
                    scraped.insert(t.to_string());
                }
            }
        }
    }
    for v in views {
        let target = format!("{}:{}", v.name, v.listen_port);
        if !scraped.contains(&target) {
            problems.push(format!(
                "prometheus: does not scrape {target}/metrics (it scrapes {scraped:?})"
            ));
        }
    }
    problems
}

/// One broker must run the transaction coordinator for the processor's
/// exactly_once mode: in KRaft combined mode, with its internal topics on a
/// single replica (Kafka's default of three would never be satisfied).
fn kafka_problems(doc: &Json) -> Vec<String> {
    let Some(kafka) = services(doc).get("kafka") else {
        return vec!["no kafka service".into()];
    };
    let env = environment(kafka);
    let mut problems = vec![];
    let mut expect = |key: &str, want: &str| {
        let got = env.get(key).map(String::as_str);
        if got != Some(want) {
            problems.push(format!("kafka: {key} is {got:?}, want {want:?}"));
        }
    };
    expect("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1");
    expect("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1");
    expect("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1");
    let roles: BTreeSet<&str> = env
        .get("KAFKA_PROCESS_ROLES")
        .map(|r| r.split(',').map(str::trim).collect())
        .unwrap_or_default();
    if roles != BTreeSet::from(["broker", "controller"]) {
        problems.push(format!(
            "kafka: KAFKA_PROCESS_ROLES {roles:?} is not a KRaft broker+controller"
        ));
    }
    let node = env.get("KAFKA_NODE_ID").cloned().unwrap_or_default();
    let voters = env
        .get("KAFKA_CONTROLLER_QUORUM_VOTERS")
        .cloned()
        .unwrap_or_default();
    if !voters
        .split(',')
        .any(|v| v.starts_with(&format!("{node}@kafka:")))
    {
        problems.push(format!(
            "kafka: node {node:?} is not among the quorum voters {voters:?}"
        ));
    }
    problems
}

/// Grafana loads weir's data source and dashboards from deploy/grafana, gets
/// every variable the data source file reads, and the ClickHouse plugin.
fn grafana_problems(doc: &Json) -> Vec<String> {
    let Some(grafana) = services(doc).get("grafana") else {
        return vec!["no grafana service".into()];
    };
    let mut problems = vec![];
    let grafana_dir = repo().join("deploy/grafana");
    let provider = yaml_to_json(&read(
        &grafana_dir.join("provisioning/dashboards/weir.yaml"),
    ));
    let dashboards_at = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap_or_default();
    for (target, want) in [
        (
            "/etc/grafana/provisioning",
            grafana_dir.join("provisioning"),
        ),
        (dashboards_at, grafana_dir.join("dashboards")),
    ] {
        let got = mounted_at(grafana, target).and_then(|p| p.canonicalize().ok());
        if got != want.canonicalize().ok() {
            problems.push(format!(
                "grafana: does not mount {} at {target}",
                want.display()
            ));
        }
    }
    let datasource = read(&grafana_dir.join("provisioning/datasources/clickhouse.yaml"));
    let env = environment(grafana);
    // Grafana expands ${VAR} in the file's values; its comments mention the
    // syntax too, so they are skipped.
    for line in datasource
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            let var = &rest[start + 2..start + len];
            if !env.contains_key(var) {
                problems.push(format!(
                    "grafana: the data source reads ${{{var}}}, which is not set"
                ));
            }
            rest = &rest[start + len..];
        }
    }
    let plugin = yaml_to_json(&datasource)["datasources"][0]["type"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let installs = [
        "GF_PLUGINS_PREINSTALL_SYNC",
        "GF_PLUGINS_PREINSTALL",
        "GF_INSTALL_PLUGINS",
    ]
    .iter()
    .filter_map(|k| env.get(*k))
    .any(|list| {
        list.split(',')
            .any(|p| p.trim().split('@').next() == Some(plugin.as_str()))
    });
    if !installs {
        problems.push(format!(
            "grafana: does not install the {plugin} plugin its data source needs"
        ));
    }
    let host = env.get("WEIR_CLICKHOUSE_HOST").cloned().unwrap_or_default();
    let port = env.get("WEIR_CLICKHOUSE_PORT").cloned().unwrap_or_default();
    clickhouse_client_problems(
        doc,
        "grafana",
        &format!("http://{host}:{port}"),
        env.get("WEIR_CLICKHOUSE_USER").map_or("", String::as_str),
        env.get("WEIR_CLICKHOUSE_PASSWORD")
            .map_or("", String::as_str),
        &mut problems,
    );
    problems
}

/// Where the collector reads its config: the `--config=` of its command, or
/// the contrib image's default.
fn collector_config_path(svc: &Json) -> &str {
    svc["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .find_map(|a| a.strip_prefix("--config="))
        .unwrap_or("/etc/otelcol-contrib/config.yaml")
}

/// The config file the collector service mounts at that path, parsed.
fn collector_config(svc: &Json) -> Option<Json> {
    mounted_at(svc, collector_config_path(svc)).map(|file| yaml_to_json(&read(&file)))
}

/// The collector's OTLP receivers listen beyond the container's loopback and
/// its traces pipeline runs from the OTLP receiver to the debug exporter.
fn collector_problems(doc: &Json) -> Vec<String> {
    let Some(svc) = services(doc).get("otel-collector") else {
        return vec!["no otel-collector service".into()];
    };
    let Some(cfg) = collector_config(svc) else {
        return vec![format!(
            "otel-collector: nothing is mounted at its config path {}",
            collector_config_path(svc)
        )];
    };
    let mut problems = vec![];
    for (protocol, port) in [("grpc", "4317"), ("http", "4318")] {
        let endpoint = cfg["receivers"]["otlp"]["protocols"][protocol]["endpoint"].as_str();
        if endpoint != Some(&format!("0.0.0.0:{port}")) {
            problems.push(format!(
                "otel-collector: OTLP {protocol} listens on {endpoint:?}, not 0.0.0.0:{port}"
            ));
        }
    }
    let traces = &cfg["service"]["pipelines"]["traces"];
    let has = |list: &str, item: &str| {
        traces[list]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == item))
    };
    if !has("receivers", "otlp") || !has("exporters", "debug") {
        problems.push(format!(
            "otel-collector: the traces pipeline {traces} is not otlp -> debug"
        ));
    }
    problems
}

/// Every compose check on one document, with the Prometheus config and the
/// Dockerfile's facts it is checked against.
fn compose_problems(doc: &Json, prometheus: &Json, image: &ImageFacts) -> Vec<String> {
    let mut problems = schema_problems(doc);
    problems.extend(pin_problems(doc));
    problems.extend(mount_problems(doc, &compose_dir()));
    let views = stage_views(doc, &mut problems);
    problems.extend(wiring_problems(doc, &views));
    problems.extend(stage_image_problems(doc, &image.binaries));
    problems.extend(health_problems(doc, &views, &image.files));
    problems.extend(prometheus_problems(doc, prometheus, &views));
    problems.extend(kafka_problems(doc));
    problems.extend(grafana_problems(doc));
    problems.extend(collector_problems(doc));
    problems
}

// ------------------------------------------------------------ Dockerfile --

struct Instruction {
    keyword: String,
    args: String,
}

struct Stage {
    image: String,
    name: Option<String>,
    body: Vec<Instruction>,
}

/// Splits a Dockerfile into stages: comment lines (parser directives
/// included) dropped, continuation lines joined, keywords upper-cased.
fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut logical = vec![];
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comment lines may sit inside a continued instruction.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = vec![];
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, kw, name] if kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                image: words.first().unwrap_or(&"").to_string(),
                name,
                body: vec![],
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push(Instruction { keyword, args });
        }
    }
    stages
}

/// `COPY [--flags] src... dst` as (from, sources, destination).
fn copy_parts(args: &str) -> (Option<String>, Vec<String>, String) {
    let words: Vec<&str> = args.split_whitespace().collect();
    let from = words
        .iter()
        .find_map(|w| w.strip_prefix("--from="))
        .map(String::from);
    let paths: Vec<String> = words
        .iter()
        .filter(|w| !w.starts_with("--"))
        .map(|w| w.to_string())
        .collect();
    match paths.split_last() {
        Some((dst, srcs)) => (from, srcs.to_vec(), dst.clone()),
        None => (from, vec![], String::new()),
    }
}

/// What the final image contains, as the compose checks need it.
struct ImageFacts {
    /// Absolute paths the final stage copies in from other stages.
    files: BTreeSet<String>,
    /// Their file names under /usr/local/bin, /usr/bin or /bin: the programs
    /// a `command:` can name.
    binaries: BTreeSet<String>,
}

fn image_facts(text: &str) -> ImageFacts {
    let stages = parse_dockerfile(text);
    let mut files = BTreeSet::new();
    for ins in stages.last().map(|s| &s.body[..]).unwrap_or_default() {
        if ins.keyword != "COPY" {
            continue;
        }
        let (_, srcs, dst) = copy_parts(&ins.args);
        for src in &srcs {
            let base = src.trim_end_matches('/').rsplit('/').next().unwrap_or(src);
            if dst.ends_with('/') {
                files.insert(format!("{dst}{base}"));
            } else if srcs.len() == 1 {
                files.insert(dst.clone());
            }
        }
    }
    let binaries = files
        .iter()
        .filter_map(|f| {
            let (dir, name) = f.rsplit_once('/')?;
            ["/usr/local/bin", "/usr/bin", "/bin"]
                .contains(&dir)
                .then(|| name.to_string())
        })
        .collect();
    ImageFacts { files, binaries }
}

/// The `[[bin]]` names of a crate, and its package name.
fn crate_bins(dir: &str) -> (String, Vec<String>) {
    let manifest: toml::Table = read(&repo().join(dir).join("Cargo.toml"))
        .parse()
        .expect("Cargo.toml is TOML");
    let package = manifest["package"]["name"]
        .as_str()
        .expect("package.name")
        .to_string();
    let bins = manifest
        .get("bin")
        .and_then(toml::Value::as_array)
        .map(|bins| {
            bins.iter()
                .filter_map(|b| b["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (package, bins)
}

fn workspace_members() -> Vec<String> {
    let manifest: toml::Table = read(&repo().join("Cargo.toml"))
        .parse()
        .expect("Cargo.toml is TOML");
    manifest["workspace"]["members"]
        .as_array()
        .expect("workspace.members")
        .iter()
        .filter_map(|m| m.as_str().map(String::from))
        .collect()
}

/// The Dockerfile lint: stages and pins, the non-root final stage, the
/// feature argument reaching `cargo build`, the stages' binaries built and
/// copied into the image, and every workspace manifest in the
/// manifests-first layer.
fn dockerfile_problems(text: &str) -> Vec<String> {
    let stages = parse_dockerfile(text);
    let mut problems = vec![];
    if stages.len() < 2 || stages[..stages.len() - 1].iter().any(|s| s.name.is_none()) {
        problems.push(
            "wants a named build stage (FROM ... AS name) and a separate runtime stage".into(),
        );
    }
    let names: BTreeSet<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    for stage in &stages {
        if !names.contains(stage.image.as_str()) {
            if let Some(p) = unpinned(&stage.image) {
                problems.push(format!("FROM {p}"));
            }
        }
        for ins in stage.body.iter().filter(|i| i.keyword == "COPY") {
            let (from, _, _) = copy_parts(&ins.args);
            match from {
                Some(f) if !names.contains(f.as_str()) && f.parse::<usize>().is_err() => {
                    if let Some(p) = unpinned(&f) {
                        problems.push(format!("COPY --from={p}"));
                    }
                }
                _ => {}
            }
        }
    }
    let Some(last) = stages.last() else {
        return problems;
    };

    let user = last
        .body
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .map(|i| i.args.clone());
    let uid = user.as_deref().map(|u| u.split(':').next().unwrap_or(u));
    let non_root = uid.is_some_and(|u| u == "nonroot" || u.parse::<u32>().is_ok_and(|n| n != 0));
    if !non_root {
        problems.push(format!(
            "the final stage runs as {user:?}; it needs USER with a non-zero uid or nonroot"
        ));
    }

    let builds: Vec<(&Stage, &Instruction)> = stages
        .iter()
        .flat_map(|s| s.body.iter().map(move |i| (s, i)))
        .filter(|(_, i)| i.keyword == "RUN" && i.args.contains("cargo build"))
        .collect();
    let [(build_stage, build)] = builds[..] else {
        problems.push(format!(
            "wants exactly one `cargo build`, found {}",
            builds.len()
        ));
        return problems;
    };
    let cargo: String = build
        .args
        .split("cargo build")
        .nth(1)
        .unwrap_or_default()
        .split("&&")
        .next()
        .unwrap_or_default()
        .to_string();
    let declared = build_stage
        .body
        .iter()
        .any(|i| i.keyword == "ARG" && i.args.split('=').next() == Some("CARGO_FEATURES"));
    let used = ["\"$CARGO_FEATURES\"", "\"${CARGO_FEATURES}\""]
        .iter()
        .any(|v| {
            cargo.contains(&format!("--features {v}")) || cargo.contains(&format!("--features={v}"))
        });
    if !declared || !used {
        problems.push(format!(
            "the build stage must declare ARG CARGO_FEATURES (declared: {declared}) and pass it as --features \"$CARGO_FEATURES\" (passed: {used})"
        ));
    }
    if !cargo.contains("--release") {
        problems.push("`cargo build` is not --release".into());
    }

    let facts = image_facts(text);
    for dir in STAGES {
        let (package, bins) = crate_bins(dir);
        if bins.is_empty() {
            problems.push(format!("{dir}/Cargo.toml has no [[bin]]"));
        }
        if !cargo.contains(&format!("-p {package}")) && !cargo.contains("--workspace") {
            problems.push(format!("`cargo build` does not select {package}"));
        }
        for bin in bins {
            if !cargo.contains("--bins") && !cargo.contains(&format!("--bin {bin}")) {
                problems.push(format!("`cargo build` does not build the {bin} binary"));
            }
            if !facts.binaries.contains(&bin) {
                problems.push(format!(
                    "the final stage does not copy the {bin} binary onto the PATH"
                ));
            }
        }
    }

    let copied: BTreeSet<String> = build_stage
        .body
        .iter()
        .filter(|i| i.keyword == "COPY")
        .flat_map(|i| copy_parts(&i.args).1)
        .collect();
    for member in workspace_members() {
        if !copied.contains(&format!("{member}/Cargo.toml")) {
            problems.push(format!(
                "the build stage does not copy {member}/Cargo.toml before the sources, so `cargo fetch` cannot load the workspace"
            ));
        }
    }
    problems
}

/// Whether a .dockerignore pattern matches a path: `*` within a path
/// component, `**` across components, `?` one character; a pattern that
/// matches a directory also covers what is inside it.
fn ignore_matches(pattern: &str, path: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(b'*'), _) if p.get(1) == Some(&b'*') => {
                let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
                (0..=s.len()).any(|i| glob(rest, &s[i..]))
            }
            (Some(b'*'), _) => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| glob(&p[1..], &s[i..])),
            (Some(b'?'), Some(c)) if *c != b'/' => glob(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
    let mut prefix = String::new();
    path.split('/').any(|component| {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(component);
        glob(pattern.as_bytes(), prefix.as_bytes())
    })
}

fn ignored(patterns: &[&str], path: &str) -> bool {
    // The last matching line wins; `!` lines bring paths back.
    patterns
        .iter()
        .fold(false, |state, p| match p.strip_prefix('!') {
            Some(p) if ignore_matches(p, path) => false,
            None if ignore_matches(p, path) => true,
            _ => state,
        })
}

/// .dockerignore keeps the build output, git history and local stack state
/// out of the context, and none of what the image build reads.
fn dockerignore_problems(text: &str) -> Vec<String> {
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut problems = vec![];
    for path in ["target", ".git", ".local"] {
        if !ignored(&patterns, &format!("{path}/x")) {
            problems.push(format!(".dockerignore does not exclude {path}/"));
        }
    }
    let mut needed = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        "core/assets/swagger-ui/swagger-ui-bundle.js.gz".to_string(),
        "core/schemas/event.avsc".to_string(),
        "ingest/build.rs".to_string(),
        "ingest/proto/event.proto".to_string(),
        "ingest/assets/weir.js".to_string(),
        "aggregator/migrations/0001_events_and_counts.sql".to_string(),
    ];
    needed.extend(
        workspace_members()
            .iter()
            .flat_map(|m| [format!("{m}/Cargo.toml"), format!("{m}/src/lib.rs")]),
    );
    for path in needed {
        if !repo().join(&path).exists() {
            problems.push(format!(
                "{path}, which the image build reads, is gone; update this test"
            ));
        } else if ignored(&patterns, &path) {
            problems.push(format!(
                ".dockerignore excludes {path}, which the image build reads"
            ));
        }
    }
    problems
}

// ----------------------------------------------------------------- tests --

fn dockerfile_text() -> String {
    read(&repo().join("Dockerfile"))
}

fn prometheus_config() -> Json {
    yaml_to_json(&read(&compose_dir().join("prometheus.yml")))
}

#[test]
fn compose_file_is_valid_compose_and_matches_the_stages() {
    let image = image_facts(&dockerfile_text());
    assert_none(
        "deploy/compose/compose.yaml",
        compose_problems(&load_compose(), &prometheus_config(), &image),
    );
}

#[test]
fn dockerfile_builds_the_stages_once_into_a_pinned_non_root_image() {
    assert_none("Dockerfile", dockerfile_problems(&dockerfile_text()));
}

#[test]
fn dockerignore_keeps_build_output_out_and_sources_in() {
    assert_none(
        ".dockerignore",
        dockerignore_problems(&read(&repo().join(".dockerignore"))),
    );
}

#[test]
fn pins_are_versions_or_digests() {
    let digest = format!("sha256:{}", "a1".repeat(32));
    for good in [
        "apache/kafka:4.1.1".to_string(),
        "prom/prometheus:v3.5.0".to_string(),
        "localhost:5000/weir:1.0".to_string(),
        format!("gcr.io/distroless/cc-debian12:nonroot@{digest}"),
        format!("rust@{digest}"),
    ] {
        assert_eq!(unpinned(&good), None, "{good}");
    }
    for bad in [
        "apache/kafka",
        "apache/kafka:latest",
        "gcr.io/distroless/cc-debian12:nonroot",
        "localhost:5000/weir",
        "grafana/grafana:main",
        "rust@sha256:1234",
        "${IMAGE}",
    ] {
        assert!(unpinned(bad).is_some(), "{bad} should count as unpinned");
    }
}

// The checks above on broken copies: each edit is a defect the real files
// could acquire, and each must be reported.

fn broken_compose(edit: impl FnOnce(&mut Json)) -> Vec<String> {
    let mut doc = load_compose();
    edit(&mut doc);
    compose_problems(&doc, &prometheus_config(), &image_facts(&dockerfile_text()))
}

#[test]
fn compose_checks_catch_broken_files() {
    assert_finds(
        &broken_compose(|d| d["services"]["kafka"]["image"] = "apache/kafka".into()),
        "no tag",
    );
    assert_finds(
        &broken_compose(|d| d["services"]["grafana"]["image"] = "grafana/grafana:latest".into()),
        "not a version",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["ingest"]["healthchek"] = d["services"]["ingest"]["healthcheck"].take()
        }),
        "schema:",
    );
    assert_finds(
        &broken_compose(|d| {
            let env = &mut d["services"]["processor"]["environment"];
            env["WEIR_COMIT_MODE"] = env["WEIR_COMMIT_MODE"].take();
            env.as_object_mut().unwrap().remove("WEIR_COMMIT_MODE");
        }),
        "WEIR_COMIT_MODE is not one of its settings",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["processor"]["environment"]["WEIR_COMMIT_MODE"] = "ordered".into()
        }),
        "not exactly_once",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["aggregator"]["environment"]["WEIR_CLICKHOUSE__PASSWORD"] = "x".into()
        }),
        "another ClickHouse password",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["ingest"]["environment"]["WEIR_KAFKA__BROKERS"] = "broker:9092".into()
        }),
        "is not a listener the kafka service advertises",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["aggregator"]["environment"]["WEIR_LISTEN"] = "0.0.0.0:9000".into()
        }),
        "does not scrape aggregator:9000",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["ingest"]
                .as_object_mut()
                .unwrap()
                .remove("healthcheck");
        }),
        "ingest: no healthcheck",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["processor"]["depends_on"]["otel-collector"]["condition"] =
                "service_healthy".into()
        }),
        "otel-collector has no healthcheck",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["aggregator"]["depends_on"]["kafka"]["condition"] =
                "service_started".into()
        }),
        "aggregator: does not wait for a healthy kafka",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["prometheus"]["volumes"][0] =
                "./prometheus.yaml:/etc/prometheus/prometheus.yml:ro".into()
        }),
        "which does not exist",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["kafka"]["environment"]
                ["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] = 3.into()
        }),
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["grafana"]["environment"]
                .as_object_mut()
                .unwrap()
                .remove("WEIR_CLICKHOUSE_PORT");
        }),
        "${WEIR_CLICKHOUSE_PORT}",
    );
    assert_finds(
        &broken_compose(|d| d["services"]["processor"]["command"] = serde_json::json!(["ingest"])),
        "not the processor binary",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["ingest"]["environment"]["WEIR_TELEMETRY__OTLP_ENDPOINT"] =
                "http://otel-collector:4317".into()
        }),
        "not the collector's OTLP/HTTP receiver",
    );
}

#[test]
fn prometheus_check_catches_a_missing_stage() {
    let mut prometheus = prometheus_config();
    prometheus["scrape_configs"]
        .as_array_mut()
        .unwrap()
        .retain(|job| job["job_name"] != "processor");
    let problems = compose_problems(
        &load_compose(),
        &prometheus,
        &image_facts(&dockerfile_text()),
    );
    assert_finds(&problems, "does not scrape processor:9102");
}

#[test]
fn dockerfile_checks_catch_broken_files() {
    let text = dockerfile_text();
    let runtime_from = text
        .lines()
        .find(|l| l.starts_with("FROM gcr.io/distroless"))
        .expect("a distroless FROM");
    let broken = |from: &str, to: &str| {
        assert!(
            text.contains(from),
            "the Dockerfile no longer contains {from:?}; update this test"
        );
        dockerfile_problems(&text.replacen(from, to, 1))
    };
    assert_finds(
        &broken(
            runtime_from,
            "FROM gcr.io/distroless/cc-debian12:nonroot AS runtime",
        ),
        "is not a version",
    );
    assert_finds(
        &broken("USER 65532:65532", "USER root"),
        "the final stage runs as",
    );
    assert_finds(&broken("USER 65532:65532", ""), "the final stage runs as");
    assert_finds(
        &broken("--features \"$CARGO_FEATURES\"", ""),
        "CARGO_FEATURES",
    );
    assert_finds(&broken("ARG CARGO_FEATURES=\"\"", ""), "CARGO_FEATURES");
    assert_finds(
        &broken(" /out/bin/aggregator /usr/local/bin/", " /usr/local/bin/"),
        "aggregator binary",
    );
    assert_finds(
        &broken("COPY tests/Cargo.toml tests/\n", ""),
        "tests/Cargo.toml",
    );
    assert_finds(&broken(" AS build", ""), "named build stage");
    assert_finds(
        &broken(
            "COPY --from=build /out/wget",
            "COPY --from=busybox:musl /bin/busybox",
        ),
        "COPY --from=busybox:musl",
    );
}

#[test]
fn dockerignore_check_catches_broken_files() {
    assert_finds(
        &dockerignore_problems(".git\n.local\n"),
        "does not exclude target/",
    );
    assert_finds(
        &dockerignore_problems("target\n.git\n.local\n**/*.gz\n"),
        "swagger-ui-bundle.js.gz",
    );
    assert_finds(&dockerignore_problems("*\n"), "excludes Cargo.toml");
    assert!(dockerignore_problems(
        "*\n!Cargo.*\n!core\n!ingest\n!processor\n!aggregator\n!tests\n"
    )
    .is_empty());
}
