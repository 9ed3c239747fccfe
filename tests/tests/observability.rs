//! What operators see of the running pipeline. One event's trace: the three
//! stages export spans over OTLP/HTTP to a receiver inside this test (the one
//! place a test receiver stands in for a real one), and the spans of one
//! event, sent with a client's `traceparent`, must form one trace: ingest's
//! request spans under the client's, the processor's span as their child
//! (through the Kafka record's header), and the aggregator's span as the
//! processor's child. And every metric docs/operations.md documents for a stage is on
//! that stage's `/metrics`.

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_tests::load::WRITE_KEY;
use weir_tests::pipeline::poll_until;
use weir_tests::stack::free_port;
use weir_tests::{Pipeline, PipelineOptions, Stage};

/// A span as the receiver saw it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
}

/// The fields of one protobuf message: (number, varint or bytes).
fn fields(mut buf: &[u8]) -> Vec<(u64, Result<u64, &[u8]>)> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut out = vec![];
    while let Some(key) = varint(&mut buf) {
        let value = match key & 7 {
            0 => Ok(varint(&mut buf).unwrap_or_default()),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                let (v, rest) = buf.split_at(n.min(buf.len()));
                buf = rest;
                Err(v)
            }
            2 => {
                let n = varint(&mut buf).unwrap_or_default() as usize;
                let (v, rest) = buf.split_at(n.min(buf.len()));
                buf = rest;
                Err(v)
            }
            _ => break,
        };
        out.push((key >> 3, value));
    }
    out
}

fn bytes(msg: &[u8], field: u64) -> impl Iterator<Item = &[u8]> {
    fields(msg)
        .into_iter()
        .filter(move |(f, _)| *f == field)
        .filter_map(|(_, v)| v.err())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of an `ExportTraceServiceRequest`.
fn decode(request: &[u8]) -> Vec<Span> {
    let mut out = vec![];
    for resource_spans in bytes(request, 1) {
        let service = bytes(resource_spans, 1)
            .flat_map(|resource| bytes(resource, 1))
            .find(|kv| bytes(kv, 1).next() == Some(b"service.name"))
            .and_then(|kv| bytes(kv, 2).next())
            .and_then(|any| bytes(any, 1).next())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default();
        for scope_spans in bytes(resource_spans, 2) {
            for span in bytes(scope_spans, 2) {
                let one = |f| bytes(span, f).next().map(hex).unwrap_or_default();
                out.push(Span {
                    service: service.clone(),
                    name: bytes(span, 5)
                        .next()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .unwrap_or_default(),
                    trace_id: one(1),
                    span_id: one(2),
                    parent: one(4),
                });
            }
        }
    }
    out
}

/// A minimal OTLP/HTTP endpoint: takes each POST's protobuf body, answers 200.
async fn receiver(port: u16, spans: Arc<Mutex<Vec<Span>>>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let spans = spans.clone();
        tokio::spawn(async move {
            let mut buf = vec![];
            let mut chunk = [0u8; 8192];
            loop {
                // One request per read loop; keep-alive connections send more.
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
                spans.lock().unwrap().extend(decode(&body));
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                if conn.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_one_trace_across_ingest_processor_and_aggregator() {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let port = free_port();
    tokio::spawn(receiver(port, spans.clone()));
    let endpoint = format!("http://127.0.0.1:{port}/v1/traces");
    let options = PipelineOptions::default().env("*", "WEIR_TELEMETRY__OTLP_ENDPOINT", &endpoint);
    let p = Pipeline::start_with(options).await;
    let (ingest, processor, aggregator) = (&p.ingest, p.processor(), &p.aggregator);

    // The client starts the trace; every stage must join it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .post(ingest.url("/v1/events"))
        .bearer_auth(WRITE_KEY)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"event_id": "traced-1", "name": "page_view", "user_id": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let traced = || -> Vec<Span> {
        let spans = spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    };
    let services = |trace: &[Span]| -> usize {
        let names: std::collections::BTreeSet<&str> =
            trace.iter().map(|s| s.service.as_str()).collect();
        names.len()
    };
    // All three stages' spans, or (after a minute) what came, for the asserts to show.
    poll_until(Duration::from_secs(60), || async {
        (services(&traced()) == 3).then_some(())
    })
    .await;
    let trace = traced();
    let by_id: BTreeMap<&str, &Span> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let find = |service: &str, name: &str| {
        trace
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {service} span {name:?} in the trace: {trace:#?}"))
    };
    let stored = find("weir-aggregator", "store_event");
    let processed = find("weir-processor", "process_event");
    assert_eq!(
        stored.parent, processed.span_id,
        "the aggregator's span is the processor's child"
    );
    // Up from the processor's parent, through ingest's spans, to the client.
    let mut at = processed.parent.as_str();
    let mut hops = vec![];
    while let Some(span) = by_id.get(at) {
        assert_eq!(
            span.service, "weir-ingest",
            "the processor's ancestors are ingest's: {trace:#?}"
        );
        hops.push(span.name.as_str());
        at = span.parent.as_str();
    }
    assert!(
        !hops.is_empty(),
        "the processor's parent is in the trace: {trace:#?}"
    );
    assert_eq!(
        at, "00f067aa0ba902b7",
        "ingest's spans hang off the client's ({hops:?})"
    );

    // The archiver on a directory, rolling and compacting at once, so its
    // write and compaction metrics exist by the time they are read.
    let dir = p.stack.dir.path().join("archive");
    std::fs::create_dir_all(&dir).unwrap();
    let store = weir_archiver::config::StoreConfig {
        url: format!("file://{}", dir.display()),
        ..Default::default()
    };
    let archiver = weir_tests::archive::start_archiver(
        &p.stack,
        "obs",
        &store,
        &[
            ("WEIR_ROLL__MAX_INTERVAL_MS", "500"),
            ("WEIR_COMPACTION__INTERVAL_MS", "500"),
            ("WEIR_COMPACTION__MIN_HOUR_AGE_MS", "-3600000"),
        ],
    )
    .await;

    documented_metrics_are_exported(ingest, processor, aggregator, &archiver).await;
}

async fn documented_metrics_are_exported(
    ingest: &Stage,
    processor: &Stage,
    aggregator: &Stage,
    archiver: &Stage,
) {
    // Traffic that makes the labelled counters appear: a rejected event, old
    // ones (flagged, and late once on-time events set every partition's
    // watermark), a Segment message, a malformed request, an unauthorized
    // query.
    let http = reqwest::Client::new();
    let now = weir_tests::load::now_ms();
    let day_ago = now - 2 * 86_400_000;
    let fresh: Vec<_> = (0..20)
        .map(|i| json!({"event_id": format!("now-{i}"), "name": "page_view", "user_id": "u1", "timestamp": now}))
        .collect();
    let r = http
        .post(ingest.url("/v1/events/batch"))
        .bearer_auth(WRITE_KEY)
        .json(&json!({ "events": fresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut batch: Vec<_> = (1..=8)
        .map(|i| json!({"event_id": format!("old-{i}"), "name": "page_view", "user_id": "u1", "timestamp": day_ago}))
        .collect();
    batch.push(json!({"event_id": "bad-1", "name": 7}));
    let r = http
        .post(ingest.url("/v1/events/batch"))
        .bearer_auth(WRITE_KEY)
        .json(&json!({ "events": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The late lane's lag exists once it has counted a late event.
    let counted = poll_until(Duration::from_secs(120), || async {
        let n = aggregator
            .metric("weir_aggregator_late_events_total{outcome=\"counted\"}")
            .await;
        (n >= 1.0).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "the late lane counted none of the old events"
    );
    // A Segment message: counted by its shape.
    let r = http
        .post(ingest.url("/v1/track"))
        .bearer_auth(WRITE_KEY)
        .json(&json!({"userId": "u1", "event": "Page View", "messageId": "seg-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(ingest.url("/v1/events"))
        .bearer_auth(WRITE_KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(aggregator.url("/v1/metrics?name=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The archiver has written and compacted what came.
    let compacted = poll_until(Duration::from_secs(120), || async {
        let n = archiver.metric("weir_archiver_files_compacted_total").await;
        (n >= 1.0).then_some(())
    })
    .await;
    assert!(compacted.is_some(), "the archiver compacted nothing");
    let documented = weir_tests::docs::metrics();
    // One page per stage, read after the traffic above.
    let mut pages = BTreeMap::new();
    for (stage, at) in [
        ("ingest", ingest),
        ("processor", processor),
        ("aggregator", aggregator),
        ("archiver", archiver),
    ] {
        pages.insert(stage, at.metrics_text().await);
    }
    for (stage, name) in &documented {
        let text = pages
            .get(stage.as_str())
            .unwrap_or_else(|| panic!("{name}: unknown stage {stage:?} in docs/operations.md"));
        let exported = text.lines().any(|l| {
            l.strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with([' ', '{', '_']))
        });
        assert!(
            exported,
            "{stage} does not export {name}, which docs/operations.md documents"
        );
    }
    // And the other way: every weir_ metric a stage exports is documented
    // for that stage (a histogram's _bucket, _sum and _count under its name).
    for (stage, text) in &pages {
        let exported: BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("weir_"))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        for name in exported {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| documented.contains(&(stage.to_string(), b.to_string())));
            let known =
                base.is_some() || documented.contains(&(stage.to_string(), name.to_string()));
            assert!(
                known,
                "{stage} exports {name}, which docs/operations.md does not document for it"
            );
        }
    }
}
