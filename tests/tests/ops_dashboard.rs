//! The operations dashboard (`deploy/grafana/dashboards/weir-operations.json`)
//! on the running stack: every panel's PromQL, evaluated by a real
//! Prometheus scraping the four stages under load (with late events and
//! refused requests among it), returns series, so no panel is left empty by
//! a wrong metric or label name. And the Kubernetes ConfigMap of the
//! dashboards is rendered from the files, not a second copy.

use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;
use weir_archiver::config::StoreConfig;
use weir_tests::archive::start_archiver;
use weir_tests::load::{now_ms, steady_load, WRITE_KEY};
use weir_tests::monitoring::{
    check_rendered, dashboards, render_dashboards_configmap, Monitoring, Targets, K8S_DASHBOARDS,
};
use weir_tests::{repo_root, Pipeline, PipelineOptions};

/// Every PromQL expression of a dashboard: (panel title, expression).
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_string())))
        })
        .collect()
}

fn operations_dashboard() -> Value {
    let (_, text) = dashboards()
        .into_iter()
        .find(|(name, _)| name == "weir-operations.json")
        .expect("deploy/grafana/dashboards/weir-operations.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_panel_of_the_operations_dashboard_shows_series_from_the_running_stages() {
    let p = Pipeline::start_with(PipelineOptions::default().env(
        "*",
        "WEIR_LAG_WATCH__INTERVAL_MS",
        "1000",
    ))
    .await;
    let store = StoreConfig {
        url: format!("file://{}", p.stack.dir.path().join("archive").display()),
        ..Default::default()
    };
    let archiver = start_archiver(
        &p.stack,
        "ops",
        &store,
        &[("WEIR_ROLL__MAX_INTERVAL_MS", "2000")],
    )
    .await;
    let m = Monitoring::start(
        p.stack.dir.path(),
        &Targets {
            ingest: vec![p.ingest.port],
            processor: p.processors.iter().map(|s| s.port).collect(),
            aggregator: vec![p.aggregator.port],
            archiver: vec![archiver.port],
        },
        1,
    )
    .await;
    let load = steady_load(p.ingest.url(""));
    // What the quieter panels show: late events (five minutes old, past the
    // allowed lateness), refused requests and a refused event.
    let http = reqwest::Client::new();
    for round in 0..10 {
        let late: Vec<Value> = (0..20)
            .map(|i| {
                json!({"event_id": format!("late-{round}-{i}"), "name": "load.tick",
                       "user_id": "u1", "timestamp": now_ms() - 300_000})
            })
            .collect();
        p.post(&late).await;
        let r = http
            .post(p.ingest.url("/v1/events"))
            .bearer_auth(WRITE_KEY)
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        // An event with a field the model does not have: refused alone.
        let r = http
            .post(p.ingest.url("/v1/events/batch"))
            .bearer_auth(WRITE_KEY)
            .json(
                &json!({"events": [{"event_id": format!("bad-{round}"), "name": "load.tick",
                                      "user_id": "u1", "colour": "red"}]}),
            )
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_client_error() || r.status() == 207,
            "{}",
            r.status()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let dashboard = operations_dashboard();
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:?}");
    let mut empty = vec![];
    for (title, expr) in &queries {
        // What Grafana substitutes: every namespace, a rate window that
        // holds several 1 s scrapes.
        let promql = expr
            .replace("$namespace", ".*")
            .replace("$__rate_interval", "30s");
        let series = m
            .query(&promql)
            .await
            .unwrap_or_else(|e| panic!("{title}: {e}"));
        if series.is_empty() {
            empty.push(format!("{title}: {expr}"));
        }
    }
    load.store(true, Ordering::Relaxed);
    assert!(
        empty.is_empty(),
        "panels with no series:\n{}",
        empty.join("\n")
    );
}

/// Every panel reads the Prometheus data source weir provisions, and the
/// panels cover what an operator on call needs.
#[test]
fn the_operations_dashboard_reads_weirs_prometheus_and_covers_the_pipeline() {
    let dashboard = operations_dashboard();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "weir-prometheus",
            "{}",
            panel["title"]
        );
    }
    let all: String = panel_queries(&dashboard)
        .into_iter()
        .map(|(_, e)| e)
        .collect::<Vec<_>>()
        .join("\n");
    for needed in [
        "weir_ingest_events_published_total",
        "weir_processor_events_total",
        "weir_aggregator_rows_inserted_total",
        "weir_archiver_events_archived_total",
        "weir_consumer_group_lag",
        "weir_processor_watermark_ms",
        "weir_aggregator_late_correction_lag_seconds_bucket",
        "weir_processor_commits_total",
        "weir_processor_aborts_total",
        "weir_ingest_rejected_requests_total",
        "weir_aggregator_insert_seconds_bucket",
        "weir_aggregator_insert_failures_total",
        "weir_processor_dedup_bytes",
        "weir_processor_dedup_spilled_keys",
        "process_resident_memory_bytes",
    ] {
        assert!(all.contains(needed), "no panel reads {needed}");
    }
    let provisioned = std::fs::read_to_string(
        repo_root().join("deploy/grafana/provisioning/datasources/prometheus.yaml"),
    )
    .unwrap();
    assert!(provisioned.contains("uid: weir-prometheus"));
}

/// The Kubernetes ConfigMap for Grafana's sidecar is the dashboards rendered.
#[test]
fn the_kubernetes_configmap_is_rendered_from_the_dashboards() {
    let on_disk = check_rendered(
        K8S_DASHBOARDS,
        &render_dashboards_configmap(&dashboards()),
        "deploy/grafana/dashboards",
        "ops_dashboard",
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&on_disk).unwrap();
    for (name, json) in dashboards() {
        let embedded = doc["data"][name.as_str()].as_str().expect("each dashboard");
        let a: Value = serde_json::from_str(embedded).unwrap();
        let b: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(a, b, "{name}");
    }
}
