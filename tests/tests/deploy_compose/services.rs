//! The services around the stages: one image for all four, healthchecks,
//! Prometheus's scrape targets, Kafka, Grafana and the OpenTelemetry collector.

use super::*;

/// The four stages run one image, each with its own binary as the command.
pub(crate) fn stage_image_problems(
    doc: &Json,
    binaries_in_image: &BTreeSet<String>,
) -> Vec<String> {
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
pub(crate) fn health_problems(
    doc: &Json,
    views: &[StageView],
    image_files: &BTreeSet<String>,
) -> Vec<String> {
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
pub(crate) fn prometheus_problems(
    doc: &Json,
    prometheus: &Json,
    views: &[StageView],
) -> Vec<String> {
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
pub(crate) fn kafka_problems(doc: &Json) -> Vec<String> {
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
pub(crate) fn grafana_problems(doc: &Json) -> Vec<String> {
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
pub(crate) fn collector_config_path(svc: &Json) -> &str {
    svc["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .find_map(|a| a.strip_prefix("--config="))
        .unwrap_or("/etc/otelcol-contrib/config.yaml")
}

/// The config file the collector service mounts at that path, parsed.
pub(crate) fn collector_config(svc: &Json) -> Option<Json> {
    mounted_at(svc, collector_config_path(svc)).map(|file| yaml_to_json(&read(&file)))
}

/// The collector's OTLP receivers listen beyond the container's loopback and
/// its traces pipeline runs from the OTLP receiver to the debug exporter.
pub(crate) fn collector_problems(doc: &Json) -> Vec<String> {
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
pub(crate) fn compose_problems(doc: &Json, prometheus: &Json, image: &ImageFacts) -> Vec<String> {
    let mut problems = schema_problems(doc);
    problems.extend(pin_problems(doc));
    problems.extend(mount_problems(doc, &compose_dir()));
    let views = stage_views(doc, &mut problems);
    problems.extend(wiring_problems(doc, &views));
    problems.extend(stage_image_problems(doc, &image.binaries));
    problems.extend(health_problems(doc, &views, &image.files));
    problems.extend(archive_problems(doc, &views, image));
    problems.extend(prometheus_problems(doc, prometheus, &views));
    problems.extend(kafka_problems(doc));
    problems.extend(grafana_problems(doc));
    problems.extend(collector_problems(doc));
    problems
}
