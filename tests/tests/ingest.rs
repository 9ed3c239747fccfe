//! The gateway on the real broker and registry: write keys, tenants, the
//! rate limit, NDJSON and gzip bodies, and their errors.

use base64::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;
use weir_tests::load::{topic_records, TENANT, WRITE_KEY};
use weir_tests::pipeline::{eventually_ok, eventually_ok_within, eventually_within};
use weir_tests::{Stack, Stage};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post(
    ingest: &Stage,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().post(ingest.url(path)).body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("ingest answers");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_keys_rate_limit_ndjson_and_gzip() {
    let stack = Stack::start().await;
    let ingest = stack.stage(
        "ingest",
        "0",
        &[
            ("WEIR_RATE_LIMIT__EVENTS_PER_SECOND", "1"),
            ("WEIR_RATE_LIMIT__BURST", "20"),
        ],
    );
    ingest.wait_ready().await;
    let event = |id: &str| {
        json!({"event_id": id, "name": "shop.view", "user_id": "u"})
            .to_string()
            .into_bytes()
    };

    // Auth is on by default: no key and a wrong key are told apart, both 401.
    let (s, v, h) = post(&ingest, "/v1/events", None, &[], event("nokey")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    assert_eq!(h["www-authenticate"], "Bearer");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("required"),
        "{v}"
    );
    let (s, v, _) = post(
        &ingest,
        "/v1/events",
        Some("wrong-key-123"),
        &[],
        event("badkey"),
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid"),
        "{v}"
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
    );
    let (s, _, _) = post(
        &ingest,
        "/v1/events",
        None,
        &[("authorization", &basic)],
        event("basic-1"),
    )
    .await;
    assert_eq!(s, 202);
    let (s, _, _) = post(
        &ingest,
        "/v1/events",
        None,
        &[("x-write-key", WRITE_KEY), ("traceparent", TRACEPARENT)],
        event("header-1"),
    )
    .await;
    assert_eq!(s, 202);

    // Browsers: a CORS preflight is answered without a key, allowing the key headers.
    let pre = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, ingest.url("/v1/events"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status().as_u16(), 200);
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("x-write-key"),
        "{allowed}"
    );

    // NDJSON: a bad line is rejected by line number, the good ones land.
    let nd = b"{\"event_id\":\"nd-1\",\"name\":\"shop.view\"}\n{oops\n\n{\"event_id\":\"nd-2\",\"name\":\"shop.view\"}\n".to_vec();
    let (s, v, _) = post(
        &ingest,
        "/v1/events/ndjson",
        Some(WRITE_KEY),
        &[("content-type", "application/x-ndjson")],
        nd,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["accepted"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["rejected"][0]["line"], 2, "{v}");

    // gzip bodies, sendBeacon's text/plain, and an unsupported encoding.
    let body = json!({"events": [{"event_id": "gz-1", "name": "shop.view"}]}).to_string();
    let (s, v, _) = post(
        &ingest,
        "/v1/events/batch",
        Some(WRITE_KEY),
        &[("content-encoding", "gzip")],
        gzip(body.as_bytes()),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let (s, _, _) = post(
        &ingest,
        "/v1/events",
        Some(WRITE_KEY),
        &[("content-type", "text/plain")],
        event("beacon-1"),
    )
    .await;
    assert_eq!(s, 202);
    let (s, v, _) = post(
        &ingest,
        "/v1/events",
        Some(WRITE_KEY),
        &[("content-encoding", "br")],
        event("br-1"),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (415, Some("unsupported_encoding"))
    );
    let bomb = gzip(&vec![b' '; 20 * 1024 * 1024]);
    let (s, v, _) = post(
        &ingest,
        "/v1/events",
        Some(WRITE_KEY),
        &[("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "a gzip bomb is cut off at the body limit"
    );

    // The rate limit (1 event/s, burst 20). How many tokens the steps above
    // left depends on how long they took on this machine, so the first full
    // batch may pass or wait; the one sent right after it cannot pass, because
    // the bucket cannot hold 20 tokens twice within a second.
    let batch = |tag: &str| {
        let events: Vec<Value> = (0..20)
            .map(|i| json!({"event_id": format!("rl-{tag}-{i}"), "name": "shop.view"}))
            .collect();
        json!({ "events": events }).to_string().into_bytes()
    };
    let (first, v, _) = post(
        &ingest,
        "/v1/events/batch",
        Some(WRITE_KEY),
        &[],
        batch("a"),
    )
    .await;
    assert!(first == 202 || first == 429, "{first} {v}");
    let (s, v, h) = post(
        &ingest,
        "/v1/events/batch",
        Some(WRITE_KEY),
        &[],
        batch("b"),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);

    // Every accepted event is in Kafka, stamped with the key's tenant; nothing rejected is.
    let records = topic_records(&stack.brokers(), "events.raw").unwrap();
    let codec = stack.codec();
    for weir_tests::load::Record { key, payload, .. } in &records {
        let e = codec
            .decode_event(Some(payload))
            .await
            .expect("Avro in the Confluent wire format");
        assert_eq!(
            (&e.event_id, e.tenant.as_str()),
            (key, TENANT),
            "stamped with the key's tenant"
        );
    }
    let traced = records
        .iter()
        .find(|r| r.key == "header-1")
        .expect("header-1 in Kafka");
    assert!(
        traced
            .headers
            .contains(&("traceparent".to_string(), TRACEPARENT.to_string())),
        "the caller's trace context rides on the record"
    );
    let keys: std::collections::BTreeSet<String> = records.into_iter().map(|r| r.key).collect();
    let mut expected: std::collections::BTreeSet<String> =
        ["basic-1", "header-1", "nd-1", "nd-2", "gz-1", "beacon-1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    if first == 202 {
        expected.extend((0..20).map(|i| format!("rl-a-{i}")));
    }
    assert_eq!(keys, expected);
    assert!(
        ingest
            .proc
            .log_tail(500)
            .lines()
            .all(|l| !l.contains(WRITE_KEY)),
        "write keys never reach the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_uses_the_default_tenant_and_auth_on_needs_keys() {
    let stack = Stack::start().await;
    let open = stack.stage(
        "ingest",
        "open",
        &[
            ("WEIR_AUTH__ENABLED", "false"),
            ("WEIR_AUTH__WRITE_KEYS", ""),
        ],
    );
    open.wait_ready().await;
    let (s, v, _) = post(
        &open,
        "/v1/events",
        None,
        &[],
        br#"{"name":"shop.view"}"#.to_vec(),
    )
    .await;
    assert_eq!(s, 202, "{v}");

    // Auth on without any key is a configuration error, said at start.
    let mut closed = stack.stage("ingest", "nokeys", &[("WEIR_AUTH__WRITE_KEYS", "")]);
    eventually_ok_within("it says so", Duration::from_secs(30), || async {
        let log = closed.proc.log_tail(50);
        log.contains("no write keys are configured")
            .then_some(())
            .ok_or(log)
    })
    .await;
    closed.proc.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_payload_shapes_land_as_weir_events() {
    let stack = Stack::start().await;
    let ingest = stack.stage("ingest", "0", &[]);
    ingest.wait_ready().await;
    let send = |path: &'static str, v: Value| {
        let ingest = &ingest;
        async move {
            post(
                ingest,
                path,
                Some(WRITE_KEY),
                &[],
                v.to_string().into_bytes(),
            )
            .await
        }
    };

    // event-stream, on its own paths, answering in its own shape.
    let (s, v, _) = send(
        "/events",
        json!({
            "event_id": "es-1", "name": "page_view", "channel_type": "web", "user_pseudo_id": "p-1",
            "event_params": [{"key": "page_title", "string_value": "Home"}],
            "device": {"operating_system": "Windows", "browser_name": "Chrome"}
        }),
    )
    .await;
    assert_eq!((s, v["id"].as_str()), (202, Some("es-1")), "{v}");
    let (s, v, _) = send("/events/batch", json!({"events": [
        {"event_id": "es-2", "name": "page_view", "channel_type": "web", "user_id": "user-123"},
        {"event_id": "es-3", "name": "button_click", "channel_type": "mobile", "user_id": "user-456"}
    ]})).await;
    assert_eq!((s, v["ids"].clone()), (202, json!(["es-2", "es-3"])), "{v}");
    // event-service's write API.
    let (s, v, _) = send("/api/write", json!({
        "event_id": "svc-1", "event_name": "new customer", "description": "account was created", "customer_id": 18
    })).await;
    assert_eq!(
        (
            s,
            v["log"]["event_name"].as_str(),
            v["log"]["customer_id"].as_i64()
        ),
        (202, Some("new_customer"), Some(18)),
        "{v}"
    );
    // The first-party snippet's shape and logeater's shape, on weir's own endpoint.
    // logeater sends epoch seconds.
    let le_secs = weir_tests::load::now_ms() / 1000;
    let (s, _, _) = send("/v1/events", json!({"event_id": "fp-1", "event": "clicked_event", "url": "https://blog/a", "properties": {"id": "buy"}})).await;
    assert_eq!(s, 202);
    let (s, _, _) = send(
        "/v1/events",
        json!({"event_id": "le-1", "timestamp": le_secs, "service": "cart-svc",
        "type": "cart.add", "user_id": "u-9", "details": "{\"sku\":\"X\"}"}),
    )
    .await;
    assert_eq!(s, 202);

    let codec = stack.codec();
    let mut events = std::collections::BTreeMap::new();
    for weir_tests::load::Record { payload, .. } in
        topic_records(&stack.brokers(), "events.raw").unwrap()
    {
        let e = codec.decode_event(Some(&payload)).await.unwrap();
        events.insert(e.event_id.clone(), e);
    }
    assert_eq!(events.len(), 6, "{:?}", events.keys());
    let es = &events["es-1"];
    assert_eq!(
        (es.anonymous_id.as_deref(), es.channel.as_deref()),
        (Some("p-1"), Some("web"))
    );
    assert_eq!(es.properties["page_title"].to_string(), "Home");
    assert_eq!(
        es.context
            .as_ref()
            .unwrap()
            .device
            .as_ref()
            .unwrap()
            .browser
            .as_deref(),
        Some("Chrome")
    );
    assert_eq!(
        events["svc-1"].description.as_deref(),
        Some("account was created")
    );
    assert_eq!(
        events["fp-1"].context.as_ref().unwrap().url.as_deref(),
        Some("https://blog/a")
    );
    let le = &events["le-1"];
    assert_eq!(
        (le.name.as_str(), le.service.as_deref(), le.timestamp),
        ("cart.add", Some("cart-svc"), le_secs * 1000)
    );
    assert_eq!(le.properties["sku"].to_string(), "X");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_kafka_and_the_registry() {
    let mut stack = Stack::start().await;
    let ingest = stack.stage("ingest", "0", &[]);
    ingest.wait_ready().await;
    let ready = || async {
        reqwest::get(ingest.url("/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let wait_for = |want: u16| {
        let ready = &ready;
        async move {
            let what = format!("/readyz answers {want}");
            eventually_within(&what, Duration::from_secs(30), || async {
                (ready().await == want).then_some(())
            })
            .await
        }
    };
    stack.registry.kill9();
    wait_for(503).await;
    assert_eq!(
        reqwest::get(ingest.url("/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "alive, just not ready"
    );
    stack.registry.restart();
    wait_for(200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_gets_503_and_loses_no_acknowledged_event() {
    let mut stack = Stack::start().await;
    let ingest = stack.stage("ingest", "0", &[("WEIR_DELIVERY_TIMEOUT_MS", "3000")]);
    ingest.wait_ready().await;
    let mut acked = std::collections::BTreeSet::new();
    let send = |id: String| {
        let ingest = &ingest;
        async move {
            let body = json!({"event_id": id, "name": "shop.view"})
                .to_string()
                .into_bytes();
            let (s, v, h) = post(ingest, "/v1/events", Some(WRITE_KEY), &[], body).await;
            (id, s, v, h)
        }
    };
    for i in 0..5 {
        let (id, s, _, _) = send(format!("before-{i}")).await;
        assert_eq!(s, 202);
        acked.insert(id);
    }
    stack.kafka.kill9();
    let started = std::time::Instant::now();
    let (_, s, v, h) = send("during-0".into()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    assert!(h.contains_key("retry-after"));
    let took = started.elapsed();
    eprintln!("503 during the outage after {took:?}");
    assert!(
        took < std::time::Duration::from_secs(10),
        "answered within the delivery timeout, took {took:?}\n{}",
        ingest.proc.log_tail(40)
    );

    stack.kafka.restart();
    // The gateway recovers by itself once the broker is back.
    let mut i = 0;
    let id = eventually_ok("ingest recovers", || {
        i += 1;
        let id = format!("after-{i}");
        let send = &send;
        async move {
            let (id, s, v, _) = send(id).await;
            if s == 202 {
                return Ok(id);
            }
            assert_eq!(s, 503, "{v}");
            Err(v.to_string())
        }
    })
    .await;
    acked.insert(id);
    for j in 0..5 {
        let (id, s, _, _) = send(format!("later-{j}")).await;
        assert_eq!(s, 202);
        acked.insert(id);
    }
    let keys = weir_tests::load::topic_keys(&stack.brokers(), "events.raw").unwrap();
    let lost: Vec<_> = acked.difference(&keys).collect();
    assert!(lost.is_empty(), "acknowledged but not in Kafka: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_not_buffered() {
    let mut stack = Stack::start().await;
    let ingest = stack.stage(
        "ingest",
        "0",
        &[
            ("WEIR_DELIVERY_TIMEOUT_MS", "8000"),
            ("WEIR_MAX_IN_FLIGHT_EVENTS", "5"),
            ("WEIR_MAX_CONCURRENT_REQUESTS", "2"),
        ],
    );
    ingest.wait_ready().await;
    stack.kafka.kill9();
    // Five events wait for a broker that is gone: the high-water mark is reached.
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"event_id": format!("hw-{i}"), "name": "shop.view"}))
        .collect();
    let body = json!({ "events": batch }).to_string().into_bytes();
    let stuck = tokio::spawn({
        let url = ingest.url("/v1/events/batch");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(WRITE_KEY)
                .body(body)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let one = json!({"event_id": "hw-x", "name": "shop.view"})
        .to_string()
        .into_bytes();
    let (s, v, h) = post(&ingest, "/v1/events", Some(WRITE_KEY), &[], one).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("overloaded")),
        "{v}"
    );
    assert!(h.contains_key("retry-after"));
    assert_eq!(
        stuck.await.unwrap(),
        503,
        "the waiting batch times out with 503 too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_push_is_logeater_compatible() {
    use weir_ingest::grpc::proto::{event_client::EventClient, EventBatch, EventEntry};
    let stack = Stack::start().await;
    let port = weir_tests::stack::free_port();
    let grpc = format!("127.0.0.1:{port}");
    let ingest = stack.stage("ingest", "0", &[("WEIR_GRPC_LISTEN", grpc.as_str())]);
    ingest.wait_ready().await;
    let mut client = EventClient::connect(format!("http://{grpc}"))
        .await
        .expect("gRPC connects");
    // logeater sends epoch seconds.
    let now_secs = weir_tests::load::now_ms() / 1000;
    let entry = |id: &str, ty: &str| EventEntry {
        timestamp: now_secs,
        service: "cart-svc".into(),
        r#type: ty.into(),
        user_id: Some("u-1".into()),
        details: Some(r#"{"sku":"X1","qty":2}"#.into()),
        event_id: Some(id.into()),
    };
    fn keyed<T>(msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {WRITE_KEY}").parse().unwrap(),
        );
        r
    }

    // Without a key: UNAUTHENTICATED.
    let err = client
        .push(tonic::Request::new(entry("g-0", "cart.add")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // logeater's Push, unchanged: success once Kafka has it.
    let r = client
        .push(keyed(entry("g-1", "cart.add")))
        .await
        .unwrap()
        .into_inner();
    assert!(r.success, "{r:?}");
    assert_eq!(r.event_id, "g-1");
    // The batch RPC answers per event: a bad one is named, the good ones land.
    let batch = EventBatch {
        events: vec![
            entry("g-2", "cart.remove"),
            entry("g-3", ""),
            entry("g-4", "cart.reset"),
        ],
    };
    let r = client.push_batch(keyed(batch)).await.unwrap().into_inner();
    let ok: Vec<bool> = r.results.iter().map(|x| x.success).collect();
    assert_eq!(ok, [true, false, true], "{r:?}");
    // Named as logeater's clients call it.
    assert!(r.results[1].error.starts_with("type: "), "{r:?}");

    let codec = stack.codec();
    let mut got = std::collections::BTreeMap::new();
    for weir_tests::load::Record { payload, .. } in
        topic_records(&stack.brokers(), "events.raw").unwrap()
    {
        let e = codec.decode_event(Some(&payload)).await.unwrap();
        got.insert(e.event_id.clone(), e);
    }
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["g-1", "g-2", "g-4"]
    );
    let e = &got["g-1"];
    assert_eq!(
        (e.name.as_str(), e.service.as_deref(), e.tenant.as_str()),
        ("cart.add", Some("cart-svc"), TENANT)
    );
    assert_eq!(e.timestamp, now_secs * 1000);
    assert_eq!(e.properties["qty"].to_string(), "2");
}
