//! The compose file itself: schema, pins, mounts, and each stage's
//! environment loaded by the stage's own config loader and wired to the
//! services it names.

use super::*;

pub(crate) fn schema_problems(doc: &Json) -> Vec<String> {
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
pub(crate) fn pin_problems(doc: &Json) -> Vec<String> {
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
pub(crate) fn mounts(svc: &Json) -> Vec<(String, String, bool)> {
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
pub(crate) fn mounted_at(svc: &Json, target: &str) -> Option<PathBuf> {
    mounts(svc)
        .into_iter()
        .find(|(_, dst, bind)| *bind && dst == target)
        .map(|(src, _, _)| compose_dir().join(src))
}

/// Everything the compose file takes from the repository must be there:
/// bind-mounted files, build contexts and their Dockerfiles, env files; and
/// every named volume must be declared.
pub(crate) fn mount_problems(doc: &Json, base: &Path) -> Vec<String> {
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
pub(crate) fn environment(svc: &Json) -> BTreeMap<String, String> {
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
pub(crate) struct StageView {
    pub(crate) name: &'static str,
    pub(crate) listen_port: u16,
    pub(crate) brokers: String,
    pub(crate) registry_url: String,
    pub(crate) otlp_endpoint: String,
    /// The archiver's `store.url`; `None` for the other stages.
    pub(crate) store_url: Option<String>,
}

/// Loads a stage's configuration from its compose environment the way the
/// stage would: `WEIR_A__B=v` is `--set a.b=v`, and a key whose top-level
/// section the stage does not have is one the stage silently ignores, which in
/// a compose file means a typo.
pub(crate) fn stage_config<T: Serialize + DeserializeOwned + Default>(
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

pub(crate) fn port_of(listen: &str) -> Option<u16> {
    listen.rsplit_once(':')?.1.parse().ok()
}

/// The stages' configurations, as far as they load, plus the problems found
/// loading them and in what they say about each other.
pub(crate) fn stage_views(doc: &Json, problems: &mut Vec<String>) -> Vec<StageView> {
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
                store_url: None,
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
                store_url: None,
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
                store_url: None,
            });
        }
    } else {
        problems.push("no aggregator service".into());
    }
    if let Some(svc) = svcs.get("archiver") {
        if let Some(c) = stage_config::<ArchiverConfig>("archiver", &environment(svc), problems) {
            // `archiver backfill`, run in this service's container, writes
            // to ClickHouse with these settings.
            clickhouse_client_problems(
                doc,
                "archiver",
                &c.clickhouse.url,
                &c.clickhouse.user,
                &c.clickhouse.password,
                problems,
            );
            views.push(StageView {
                name: "archiver",
                listen_port: port_of(&c.listen).unwrap_or(0),
                brokers: c.kafka.brokers,
                registry_url: c.schema_registry_url,
                otlp_endpoint: c.telemetry.otlp_endpoint,
                store_url: Some(c.store.url),
            });
        }
    } else {
        problems.push("no archiver service".into());
    }
    views
}

/// A filesystem store keeps the archive in the container: it must be on a
/// volume, or the archive goes with the container, and the image's user must
/// be able to write it. A new named volume takes the owner of the image's
/// directory it is mounted on, so that directory must be the user's (the
/// Dockerfile's `COPY --chown`); a bind mount's owner is the host's business.
pub(crate) fn archive_problems(doc: &Json, views: &[StageView], image: &ImageFacts) -> Vec<String> {
    let mut problems = vec![];
    for v in views {
        let Some(url) = &v.store_url else { continue };
        let dir = match reqwest::Url::parse(url) {
            Ok(u) if u.scheme() == "file" => u.path().trim_end_matches('/').to_string(),
            Ok(_) => continue,
            Err(e) => {
                problems.push(format!("{}: store.url {url:?} is not a URL: {e}", v.name));
                continue;
            }
        };
        let mount = mounts(&services(doc)[v.name])
            .into_iter()
            .filter(|(_, dst, _)| Path::new(&dir).starts_with(dst.trim_end_matches('/')))
            .max_by_key(|(_, dst, _)| dst.len());
        match mount {
            None => problems.push(format!(
                "{}: its store {url} is on no volume, so the archive would be lost with the container",
                v.name
            )),
            Some((src, dst, false)) if !image.owned.contains(dst.trim_end_matches('/')) => {
                problems.push(format!(
                    "{}: named volume {src} at {dst} would be owned by root, not the image's user: the Dockerfile does not COPY --chown {dst} to its USER",
                    v.name
                ))
            }
            Some(_) => {}
        }
    }
    problems
}

/// A ClickHouse client (the aggregator, Grafana) must reach the clickhouse
/// service with the user the image creates from CLICKHOUSE_USER/PASSWORD.
pub(crate) fn clickhouse_client_problems(
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
pub(crate) fn wiring_problems(doc: &Json, views: &[StageView]) -> Vec<String> {
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
