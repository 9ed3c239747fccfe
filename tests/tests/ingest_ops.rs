//! The gateway as operators and integrators see it: the OpenAPI spec against
//! the routes it serves, Swagger UI, the documented metrics, flagged old
//! events, and a graceful shutdown that loses nothing and ends in bounded time.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use weir_tests::load::{topic_keys, WRITE_KEY};
use weir_tests::Stack;

/// `METHOD /path` pairs named in docs/api.md's ingest section.
fn documented_routes() -> BTreeSet<(String, String)> {
    weir_tests::docs::api_routes("## ingest", &["GET", "POST"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_spec_matches_the_routes_and_the_readme() {
    let stack = Stack::start().await;
    let ingest = stack.stage("ingest", "0", &[]);
    ingest.wait_ready().await;
    let http = reqwest::Client::new();

    let spec: Value = http
        .get(ingest.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .expect("/openapi.json is JSON");
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    weir_tests::docs::assert_openapi_info(&spec, "weir ingest");
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            let codes: BTreeSet<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|c| c.parse().unwrap())
                .collect();
            // Every documented operation is served, and answers with a
            // status its own documentation lists: once without a key, once
            // with a key and an event that lacks its name.
            let attempts: Vec<(Option<&str>, &str)> = if method == "post" {
                vec![(None, "{}"), (Some(WRITE_KEY), "{}")]
            } else {
                vec![(None, "")]
            };
            for (key, body) in attempts {
                let mut req =
                    http.request(method.to_uppercase().parse().unwrap(), ingest.url(path));
                if let Some(k) = key {
                    req = req.bearer_auth(k);
                }
                let status = req
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                assert!(
                    codes.contains(&status),
                    "{method} {path} answered {status}, documented only {codes:?}"
                );
            }
        }
    }
    // The routes docs/api.md documents are exactly the ones in the spec.
    assert_eq!(documented_routes(), documented);
    // A path that is not in the spec is not served either, and says so in JSON.
    let status = http
        .post(ingest.url("/v1/event"))
        .bearer_auth(WRITE_KEY)
        .body("{}")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    weir_tests::docs::assert_unknown_routes_answer_json(&ingest.url("")).await;

    // Swagger UI: the page loads the spec and its two vendored files.
    let page = http.get(ingest.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for needle in [
        "/openapi.json",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
    ] {
        assert!(html.contains(needle), "/docs page lacks {needle}");
    }
    let js = http
        .get(ingest.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.text().await.unwrap().contains("SwaggerUIBundle"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_documented_and_old_events_are_flagged() {
    let stack = Stack::start().await;
    let ingest = stack.stage("ingest", "0", &[]);
    ingest.wait_ready().await;
    let http = reqwest::Client::new();
    let two_days_ago = weir_tests::load::now_ms() - 2 * 24 * 3600 * 1000;
    let batch = json!({"events": [
        {"event_id": "fresh-1", "name": "shop.view"},
        {"event_id": "old-1", "name": "shop.view", "timestamp": two_days_ago},
        {"event_id": "bad-1", "name": "shop.view", "bogus": 1},
        {"event_id": "bad-2"},
    ]});
    let r = http
        .post(ingest.url("/v1/events/batch"))
        .bearer_auth(WRITE_KEY)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["accepted"][0]["event_id"], "fresh-1");
    assert!(v["accepted"][0].get("warnings").is_none());
    assert_eq!(v["accepted"][1]["event_id"], "old-1");
    assert_eq!(v["accepted"][1]["warnings"][0]["field"], "timestamp");
    assert_eq!(v["rejected"].as_array().unwrap().len(), 2);

    let text = ingest.metrics_text().await;
    let metric_docs = weir_tests::docs::metric_names();
    for (name, must_contain) in [
        (
            "weir_ingest_requests_total",
            r#"route="/v1/events/batch",status="202""#,
        ),
        (
            "weir_ingest_request_duration_seconds_bucket",
            r#"route="/v1/events/batch""#,
        ),
        ("weir_ingest_events_published_total", ""),
        (
            "weir_ingest_events_rejected_total",
            r#"reason="unknown_field""#,
        ),
        ("weir_ingest_events_rejected_total", r#"reason="name""#),
        ("weir_ingest_events_flagged_total", r#"field="timestamp""#),
        ("weir_ingest_produce_latency_seconds_bucket", ""),
        ("weir_ingest_producer_queue_events", ""),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l.contains(must_contain));
        assert!(
            line.is_some(),
            "/metrics has no {name} with {must_contain}:\n{text}"
        );
        let base = name.trim_end_matches("_bucket");
        assert!(
            metric_docs.contains(base),
            "docs/operations.md does not document {base}"
        );
    }
    assert_eq!(
        ingest.metric("weir_ingest_events_published_total").await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_requests_and_exits_in_bounded_time() {
    let mut stack = Stack::start().await;
    let mut ingest = stack.stage("ingest", "0", &[("WEIR_SHUTDOWN_TIMEOUT_MS", "4000")]);
    ingest.wait_ready().await;
    let url = ingest.url("/v1/events/batch");

    // Eight clients post batches until the gateway goes away; each keeps
    // the ids the gateway acknowledged.
    let mut clients = vec![];
    for c in 0..8 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut acked = vec![];
            for n in 0.. {
                let ids: Vec<String> = (0..50).map(|i| format!("drain-{c}-{n}-{i}")).collect();
                let events: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"event_id": id, "name": "shop.view"}))
                    .collect();
                let sent = http
                    .post(&url)
                    .bearer_auth(WRITE_KEY)
                    .json(&json!({ "events": events }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => acked.extend(ids),
                    Ok(_) => {}
                    Err(_) => break, // the gateway closed
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let clean = tokio::task::spawn_blocking(move || (ingest.proc.terminate(), ingest))
        .await
        .unwrap();
    let took = started.elapsed();
    let (exited_cleanly, mut ingest) = clean;
    assert!(exited_cleanly, "ingest exits 0 on SIGTERM");
    assert!(took < Duration::from_secs(6), "draining took {took:?}");
    let mut acked = BTreeSet::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "the clients got answers before the signal"
    );
    let in_kafka = topic_keys(&stack.brokers(), "events.raw").unwrap();
    let lost: Vec<_> = acked.difference(&in_kafka).collect();
    assert!(lost.is_empty(), "acknowledged but not in Kafka: {lost:?}");

    // With the broker gone, a request waits for Kafka; SIGTERM still ends
    // the process within shutdown_timeout_ms, and that request gets no 2xx.
    ingest.proc.restart();
    ingest.wait_ready().await;
    stack.kafka.kill9();
    let stuck = tokio::spawn({
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(&url)
                .bearer_auth(WRITE_KEY)
                .json(&json!({"events": [{"event_id": "stuck-1", "name": "shop.view"}]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    tokio::task::spawn_blocking(move || ingest.proc.terminate())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(7),
        "with Kafka away, shutdown took {took:?}; the bound is 4 s"
    );
    assert!(!matches!(stuck.await.unwrap(), Ok(202)));
}

/// Random JSON, biased towards the keys the mappers and the validator read.
fn hostile_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let key = prop_oneof![
        Just("name".to_string()),
        Just("event".to_string()),
        Just("event_name".to_string()),
        Just("events".to_string()),
        Just("type".to_string()),
        Just("timestamp".to_string()),
        Just("sent_at".to_string()),
        Just("event_params".to_string()),
        Just("details".to_string()),
        Just("properties".to_string()),
        Just("items".to_string()),
        Just("context".to_string()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::String),
        Just(json!("cart.add")),
        Just(json!("2024-01-15T10:30:00Z")),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_json_on_every_route_never_gets_a_5xx() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    let stack = Stack::start().await;
    let ingest = stack.stage("ingest", "0", &[]);
    ingest.wait_ready().await;
    let http = reqwest::Client::new();
    let routes = weir_ingest::routes::event_paths();
    assert_eq!(routes.len(), 13, "the event routes: {routes:?}");
    let mut runner = TestRunner::deterministic();
    let strategy = hostile_json();
    let mut statuses = std::collections::BTreeMap::new();
    for n in 0..600 {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        let route = routes[n % routes.len()].as_str();
        let mut body = value.to_string().into_bytes();
        if n % 10 == 9 {
            body.truncate(body.len() / 2); // and some cut short
        }
        let status = http
            .post(ingest.url(route))
            .bearer_auth(WRITE_KEY)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{route} dropped the connection on {value}: {e}"))
            .status()
            .as_u16();
        assert!(status < 500, "{route} answered {status} to {value}");
        *statuses.entry(status).or_insert(0) += 1;
    }
    // Both outcomes were exercised: some random events were valid.
    assert!(
        (statuses.contains_key(&202) || statuses.contains_key(&200)) && statuses.contains_key(&400),
        "{statuses:?}"
    );
    let health = http.get(ingest.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
