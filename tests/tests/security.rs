//! Keys and what must never leak, on the real pipeline.
//!
//! Every route the served OpenAPI specs list (so a new route cannot be
//! missed) enforces its key: none, a wrong one, or the other kind's key is a
//! 401, in every place a key is accepted; only the documented public routes
//! answer without one; gRPC likewise. With every stage logging at debug (and
//! weir's own crates at trace), no key reaches a log file or `/metrics`,
//! including on the error paths. And SQL-injection strings sent through every
//! parameter of every query route stay inert: no 5xx, no delay, no other
//! tenant's data, no table touched.

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use weir_tests::load::{urlencode, READ_KEY, WRITE_KEY};
use weir_tests::pipeline::eventually_ok;
use weir_tests::{Pipeline, PipelineOptions, Stage};

const WRONG_KEY: &str = "wrong-key-Zq81xT4v";
/// A second tenant's write key: its events are the canary of the injections.
const OTHER_KEY: &str = "other-write-key-9Fh2";
const LOG_LEVEL: &str =
    "debug,librdkafka=warn,rdkafka=warn,weir_core=trace,weir_ingest=trace,weir_processor=trace,weir_aggregator=trace";

/// Routes outside the specs that answer anyone: ops and docs.
const OPS_ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/swagger-ui.css",
];

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// Every string that would give a key away.
fn secrets() -> Vec<String> {
    [WRITE_KEY, READ_KEY, WRONG_KEY, OTHER_KEY]
        .iter()
        .flat_map(|k| {
            let b = basic(k);
            [k.to_string(), b["Basic ".len()..].to_string()]
        })
        .collect()
}

/// A spec's operations: (method, path, protected).
async fn operations(stage: &Stage) -> Vec<(String, String, bool)> {
    let spec: Value = reqwest::get(stage.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ops = vec![];
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            let protected = op["security"].as_array().is_some_and(|s| !s.is_empty());
            ops.push((method.to_uppercase(), path.clone(), protected));
        }
    }
    assert!(!ops.is_empty());
    ops
}

/// A way to send a key: (label, headers, query suffix).
type Placement = (String, Vec<(String, String)>, String);

/// Where a key may be put.
fn placements(key: &str, own_header: &str, own_param: &str) -> Vec<Placement> {
    vec![
        (
            "Bearer".into(),
            vec![("authorization".into(), format!("Bearer {key}"))],
            String::new(),
        ),
        (
            "Basic".into(),
            vec![("authorization".into(), basic(key))],
            String::new(),
        ),
        (
            own_header.into(),
            vec![(own_header.into(), key.into())],
            String::new(),
        ),
        (
            format!("?{own_param}="),
            vec![],
            format!("?{own_param}={}", urlencode(key)),
        ),
    ]
}

async fn call(
    http: &reqwest::Client,
    stage: &Stage,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    query: &str,
    body: &str,
) -> (u16, String) {
    let path = path.replace(['{', '}'], ""); // path parameters, if any
    let mut req = http.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        stage.url(&format!("{path}{query}")),
    );
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if method == "POST" {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let r = req.send().await.expect("the stage answers");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Checks every operation of `stage`'s spec. `own` is the key that opens it
/// (with its header and query parameter, the latter accepted only where
/// `query_accepted`), `others` keys that must not.
#[allow(clippy::too_many_arguments)]
async fn enforce(
    http: &reqwest::Client,
    stage: &Stage,
    name: &str,
    own: (&str, &str, &str),
    query_accepted: bool,
    others: &[&str],
    public: &[(&str, &str)],
    denied_ids: &mut usize,
) -> usize {
    let (own_key, own_header, own_param) = own;
    let mut checked = 0;
    let ops = operations(stage).await;
    let open: BTreeSet<(String, String)> = ops
        .iter()
        .filter(|o| !o.2)
        .map(|o| (o.0.clone(), o.1.clone()))
        .collect();
    let allowed: BTreeSet<(String, String)> = public
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(open, allowed, "{name}: the spec's routes without a key");
    for (method, path, protected) in &ops {
        if !protected {
            let (s, _) = call(http, stage, method, path, &[], "", "").await;
            assert_eq!(s, 200, "{name}: public {method} {path}");
            continue;
        }
        // A body that would be accepted, so that only the key decides; its
        // event must never land when the key is refused.
        let mut body = || {
            *denied_ids += 1;
            json!({"event_id": format!("denied-{denied_ids}"), "name": "shop.view"}).to_string()
        };
        // (label, headers, query, whether the key opens the route)
        let mut attempts: Vec<(Placement, bool)> =
            vec![(("no key".into(), vec![], String::new()), false)];
        for key in [WRONG_KEY].iter().chain(others) {
            for (label, headers, query) in placements(key, own_header, own_param) {
                attempts.push(((format!("{key} as {label}"), headers, query), false));
            }
        }
        for (label, headers, query) in placements(own_key, own_header, own_param) {
            let works = query_accepted || query.is_empty();
            attempts.push(((format!("its own key as {label}"), headers, query), works));
        }
        // A key with no scheme, in the other kind's header, or empty.
        let other_header = if own_header == "x-write-key" {
            "x-read-key"
        } else {
            "x-write-key"
        };
        for headers in [
            vec![("authorization".to_string(), own_key.to_string())],
            vec![(other_header.to_string(), own_key.to_string())],
            vec![("authorization".to_string(), "Bearer ".to_string())],
        ] {
            attempts.push(((format!("{headers:?}"), headers, String::new()), false));
        }
        for ((label, headers, query), works) in attempts {
            let body = if works {
                json!({"name": "shop.view"}).to_string()
            } else {
                body()
            };
            let (s, text) = call(http, stage, method, path, &headers, &query, &body).await;
            if works {
                assert!(
                    s != 401 && s < 500,
                    "{name}: {method} {path} with {label}: {s} {text}"
                );
            } else {
                assert_eq!(s, 401, "{name}: {method} {path} with {label}: {text}");
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                assert!(v["error"].is_object(), "{name}: a JSON error: {text}");
            }
            checked += 1;
        }
    }
    for path in OPS_ROUTES {
        let (s, _) = call(http, stage, "GET", path, &[], "", "").await;
        assert_eq!(s, 200, "{name}: {path} answers without a key");
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_enforced_everywhere_never_logged_and_injections_stay_inert() {
    use weir_ingest::grpc::proto::{event_client::EventClient, EventBatch, EventEntry};
    let grpc = format!("127.0.0.1:{}", weir_tests::stack::free_port());
    let write_keys = format!("{WRITE_KEY}:test,{OTHER_KEY}:other");
    let options = PipelineOptions::default()
        .env("*", "RUST_LOG", LOG_LEVEL)
        .env("ingest", "WEIR_GRPC_LISTEN", &grpc)
        .env("ingest", "WEIR_AUTH__WRITE_KEYS", &write_keys)
        .env("ingest", "WEIR_DELIVERY_TIMEOUT_MS", "3000");
    let Pipeline {
        mut stack,
        ingest,
        processors,
        aggregator,
    } = Pipeline::start_with(options).await;
    let processor = &processors[0];
    for s in [&ingest, processor, &aggregator] {
        // Unknown routes answer 404 in JSON, before and whatever the key.
        weir_tests::docs::assert_unknown_routes_answer_json(&s.url("")).await;
    }
    let http = reqwest::Client::new();

    // 1. Every route of both specs, every key in every place.
    let mut denied = 0;
    let ingest_checks = enforce(
        &http,
        &ingest,
        "ingest",
        (WRITE_KEY, "x-write-key", "write_key"),
        true,
        &[READ_KEY],
        // The browser snippet is a static file pages load with <script>.
        &[("GET", "/v1/weir.js")],
        &mut denied,
    )
    .await;
    let query_checks = enforce(
        &http,
        &aggregator,
        "aggregator",
        (READ_KEY, "x-read-key", "read_key"),
        false, // the query API takes keys in headers only
        &[WRITE_KEY, OTHER_KEY],
        &[],
        &mut denied,
    )
    .await;
    println!("{ingest_checks} ingest and {query_checks} query API requests checked");

    // gRPC: the same rule, in metadata.
    let mut client = EventClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let entry = |id: &str| EventEntry {
        timestamp: 0,
        service: "svc".into(),
        r#type: "cart.add".into(),
        user_id: None,
        details: None,
        event_id: Some(id.into()),
    };
    let with = |meta: Option<(&'static str, String)>, id: &str| {
        let mut r = tonic::Request::new(entry(id));
        if let Some((k, v)) = meta {
            r.metadata_mut().insert(k, v.parse().unwrap());
        }
        r
    };
    let refused = [
        None,
        Some(("authorization", format!("Bearer {WRONG_KEY}"))),
        Some(("authorization", format!("Bearer {READ_KEY}"))),
        Some(("x-write-key", READ_KEY.to_string())),
        Some(("authorization", basic(WRONG_KEY))),
    ];
    for (i, meta) in refused.into_iter().enumerate() {
        let id = format!("denied-grpc-{i}");
        let err = client.push(with(meta.clone(), &id)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{meta:?}");
        let mut batch = tonic::Request::new(EventBatch {
            events: vec![entry(&format!("{id}-b"))],
        });
        if let Some((k, v)) = meta.clone() {
            batch.metadata_mut().insert(k, v.parse().unwrap());
        }
        let err = client.push_batch(batch).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{meta:?}");
    }
    for meta in [
        ("authorization", format!("Bearer {WRITE_KEY}")),
        ("authorization", basic(WRITE_KEY)),
        ("x-write-key", WRITE_KEY.to_string()),
    ] {
        let r = client.push(with(Some(meta.clone()), "grpc-ok")).await;
        assert!(r.unwrap().into_inner().success, "{meta:?}");
    }

    // 2. SQL injection through every query parameter of every query route,
    // with another tenant's events in the table as the canary.
    let post = |key: &'static str, events: Vec<Value>| {
        let http = http.clone();
        let url = ingest.url("/v1/events/batch");
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({ "events": events }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    };
    let ts = weir_tests::load::now_ms() - 30_000;
    post(
        WRITE_KEY,
        (0..10)
            .map(|i| json!({"event_id": format!("mine-{i}"), "name": "cart.add", "user_id": "u1", "timestamp": ts + i}))
            .collect(),
    )
    .await;
    post(
        OTHER_KEY,
        (0..10)
            .map(|i| json!({"event_id": format!("zz-leak-{i}"), "name": "leak.secret_x", "user_id": "leak-user", "timestamp": ts + i}))
            .collect(),
    )
    .await;
    let landed = "SELECT countIf(event_id LIKE 'mine-%'), countIf(tenant = 'other'), \
                  countIf(event_id LIKE 'denied-%'), count() FROM events FINAL";
    // Every event sent with a good key lands, none sent without one.
    let total = eventually_ok("the events reach ClickHouse", || async {
        let counts = stack.clickhouse_query(landed).await.unwrap_or_default();
        counts
            .strip_prefix("10\t10\t0\t")
            .map(str::to_string)
            .ok_or(counts)
    })
    .await;
    let tables = stack.clickhouse_query("SHOW TABLES").await.unwrap();
    let spec: Value = reqwest::get(aggregator.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let injections = [
        "' OR '1'='1",
        "x' OR 1=1 --",
        "'); DROP TABLE events; --",
        "1; DROP TABLE events",
        "cart.add' UNION ALL SELECT * FROM events --",
        "' OR tenant='other",
        "other",
        "leak.*",
        "' OR sleep(3) OR '",
        "1 OR sleep(3)",
        "\\' OR 1=1 --",
        "\" OR \"\"=\"",
        "%27%20OR%201%3D1",
        "*",
        "cart.%",
        "-1e400",
        "\u{0}'",
        "ü' OR 'x'='x",
    ];
    let mut sent = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let op = &item["get"];
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(!params.is_empty(), "{path} has parameters");
        for param in &params {
            for bad in injections {
                let query = format!("{path}?{param}={}", urlencode(bad));
                let started = Instant::now();
                let (status, text) = call(
                    &http,
                    &aggregator,
                    "GET",
                    &query,
                    &[("x-read-key".into(), READ_KEY.into())],
                    "",
                    "",
                )
                .await;
                let took = started.elapsed();
                assert!(
                    matches!(status, 200 | 400 | 403),
                    "{query}: {status} {text}"
                );
                assert!(
                    ["zz-leak-", "leak.secret_x", "leak-user"]
                        .iter()
                        .all(|canary| !text.contains(canary)),
                    "{query} read another tenant's data: {text}"
                );
                assert!(took < Duration::from_millis(2_500), "{query} took {took:?}");
                sent += 1;
            }
        }
    }
    println!("{sent} injection requests were inert");
    assert_eq!(stack.clickhouse_query("SHOW TABLES").await.unwrap(), tables);
    let after = stack.clickhouse_query(landed).await.unwrap();
    assert_eq!(
        after,
        format!("10\t10\t0\t{total}"),
        "the events table is untouched"
    );

    // 3. The error paths log too: with Kafka gone, a beacon's key in the query
    // must not ride on the failed request's log lines.
    stack.kafka.kill9();
    for path in ["/v1/events", "/v1/events/batch", "/v1/events/ndjson"] {
        let body = if path.ends_with("batch") {
            json!({"events": [{"name": "shop.view"}]}).to_string()
        } else {
            json!({"name": "shop.view"}).to_string()
        };
        let (s, text) = call(
            &http,
            &ingest,
            "POST",
            path,
            &[],
            &format!("?write_key={WRITE_KEY}"),
            &body,
        )
        .await;
        assert_eq!(s, 503, "{path}: {text}");
    }

    // No key in any log file or on /metrics, though the logs are verbose.
    for stage in [&ingest, &aggregator] {
        let metrics = stage.metrics_text().await;
        for secret in secrets() {
            assert!(
                !metrics.contains(&secret),
                "{secret} is on {}'s /metrics",
                stage.proc.name
            );
        }
    }
    for stage in [&ingest, processor, &aggregator] {
        let log = stage.proc.log_tail(usize::MAX);
        let debug_lines = log
            .lines()
            .filter(|l| l.contains("DEBUG") || l.contains("TRACE"))
            .count();
        assert!(
            debug_lines > 10,
            "{} logged at debug: {debug_lines} lines",
            stage.proc.name
        );
        for secret in secrets() {
            let leaks: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(&secret))
                .take(3)
                .collect();
            assert!(
                leaks.is_empty(),
                "{} logged {secret}: {leaks:#?}",
                stage.proc.name
            );
        }
    }
    assert!(denied > 100, "{denied} refused events were sent");
}
