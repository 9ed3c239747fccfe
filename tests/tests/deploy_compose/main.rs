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
//! loader), the ports they listen on, the files the compose file mounts, and
//! where the archiver keeps its archive.
//!
//! Every check returns the problems it finds as sentences. The tests at the
//! end run the same checks on deliberately broken copies, so a check that can
//! no longer fail shows up as a failing test.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use weir_aggregator::config::AggregatorConfig;
use weir_archiver::config::ArchiverConfig;
use weir_core::config::CommonArgs;
use weir_ingest::config::IngestConfig;
use weir_processor::config::{CommitModeSetting, ProcessorConfig};

/// The four stage binaries: compose service names, `[[bin]]` names and the
/// crate directories are all the same word.
const STAGES: [&str; 4] = ["ingest", "processor", "aggregator", "archiver"];

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

mod compose;
mod dockerfile;
mod images;
mod services;

use compose::*;
use dockerfile::*;
use images::*;
use services::*;

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
            d["services"]["archiver"]["environment"]["WEIR_LISTEN"] = "0.0.0.0:9091".into()
        }),
        "does not scrape archiver:9091",
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
            d["services"]["archiver"]["healthcheck"]["test"][5] =
                "http://127.0.0.1:8090/readyz".into()
        }),
        "archiver: healthcheck",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["archiver"]
                .as_object_mut()
                .unwrap()
                .remove("volumes");
        }),
        "archiver: its store file:///var/lib/weir/archive is on no volume",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["archiver"]["volumes"][0] = "archive-data:/var/lib/weir".into()
        }),
        "would be owned by root",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["archiver"]["volumes"][0] = "archive:/var/lib/weir/archive".into()
        }),
        "volume archive is not declared",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["archiver"]["environment"]["WEIR_STORE__URL"] =
                "file:///srv/archive".into()
        }),
        "archiver: its store file:///srv/archive is on no volume",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["archiver"]["environment"]["WEIR_STOR__URL"] = "s3://bucket/weir".into()
        }),
        "archiver: WEIR_STOR__URL is not one of its settings",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["archiver"]["environment"]["WEIR_CLICKHOUSE__PASSWORD"] = "x".into()
        }),
        "archiver: has another ClickHouse password",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"]["archiver"]["depends_on"]
                .as_object_mut()
                .unwrap()
                .remove("schema-registry");
        }),
        "archiver: does not wait for a healthy schema-registry",
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
            d["services"]["archiver"]["command"] = serde_json::json!(["aggregator"])
        }),
        "not the archiver binary",
    );
    assert_finds(
        &broken_compose(|d| {
            d["services"].as_object_mut().unwrap().remove("archiver");
        }),
        "no archiver service",
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
    for (job, target) in [
        ("processor", "processor:9102"),
        ("archiver", "archiver:8091"),
    ] {
        let mut prometheus = prometheus_config();
        prometheus["scrape_configs"]
            .as_array_mut()
            .unwrap()
            .retain(|j| j["job_name"] != job);
        let problems = compose_problems(
            &load_compose(),
            &prometheus,
            &image_facts(&dockerfile_text()),
        );
        assert_finds(&problems, &format!("does not scrape {target}"));
    }
}

#[test]
fn archive_check_catches_an_image_that_keeps_the_store_directory_for_root() {
    let text = dockerfile_text();
    let chown = "COPY --from=build --chown=65532:65532 /out/archive /var/lib/weir/archive";
    assert!(
        text.contains(chown),
        "the Dockerfile no longer contains {chown:?}; update this test"
    );
    for (from, to) in [
        (
            chown,
            "COPY --from=build /out/archive /var/lib/weir/archive",
        ),
        (
            chown,
            "COPY --from=build --chown=0:0 /out/archive /var/lib/weir/archive",
        ),
        ("USER 65532:65532", "USER 1000:1000"),
    ] {
        let image = image_facts(&text.replacen(from, to, 1));
        let problems = compose_problems(&load_compose(), &prometheus_config(), &image);
        assert_finds(
            &problems,
            "archiver: named volume archive-data at /var/lib/weir/archive would be owned by root",
        );
    }
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
        &broken(
            " /out/bin/aggregator /out/bin/archiver ",
            " /out/bin/archiver ",
        ),
        "aggregator binary",
    );
    assert_finds(
        &broken(" /out/bin/archiver /usr/local/bin/", " /usr/local/bin/"),
        "the final stage does not copy the archiver binary",
    );
    assert_finds(
        &broken(" -p weir-archiver", ""),
        "`cargo build` does not select weir-archiver",
    );
    assert_finds(
        &broken("COPY tests/Cargo.toml tests/\n", ""),
        "tests/Cargo.toml",
    );
    assert_finds(
        &broken("COPY archiver/Cargo.toml archiver/\n", ""),
        "does not copy archiver/Cargo.toml",
    );
    assert_finds(
        &broken("--chown=65532:65532 /out/archive", "/out/archive"),
        "does not create /var/lib/weir/archive",
    );
    assert_finds(
        &broken(
            "/out/archive /var/lib/weir/archive",
            "/out/archive /var/lib/weir/archives",
        ),
        "does not create /var/lib/weir/archive",
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
    assert_finds(
        &dockerignore_problems(
            "*\n!Cargo.*\n!core\n!ingest\n!processor\n!aggregator\n!client\n!tests\n",
        ),
        "excludes archiver/Cargo.toml",
    );
    assert!(dockerignore_problems(
        "*\n!Cargo.*\n!core\n!ingest\n!processor\n!aggregator\n!archiver\n!client\n!tests\n"
    )
    .is_empty());
}
