//! The bodies of weir's fuzz targets, as plain functions of a byte slice.
//!
//! `fuzz_targets/*.rs` hand libFuzzer's input to these; the stable-Rust test
//! `tests/tests/fuzz_corpus.rs` includes this file with `#[path]` and replays
//! every file of `fuzz/corpus/<target>/` through them, so a regression of a
//! fixed finding fails `cargo test` without cargo-fuzz or a nightly compiler.
//! It therefore uses only crates `weir-tests` also depends on, and no
//! `crate::` paths.
//!
//! Each target drives weir's real code the way a request or a record does,
//! stopping where I/O would start (Kafka, the schema registry, ClickHouse):
//!
//! * `ingest_body`: a request body, plain and as `Content-Encoding: gzip`,
//!   sent to every event route of ingest's real router (body limits, gunzip,
//!   strict JSON, legacy shapes, validation, admission), built on a
//!   `MemorySink` instead of Kafka: never a 5xx, a 202 names exactly the
//!   events the sink received, and each of them encodes to Avro and back.
//! * `ingest_event`: one JSON event through mapping and validation, and every
//!   accepted event through the Avro encoder and back: what ingest accepts
//!   must encode, and decode to the same event.
//! * `processor_avro`: a Kafka record value in the Confluent wire format,
//!   decoded as the processor decodes `events.raw` (with the writer schema of
//!   a fixed id instead of a registry lookup), then processed by a partition's
//!   state machine, its aggregates encoded, and mapped to the aggregator's
//!   ClickHouse rows; the same bytes decoded as a window aggregate too.
//! * `aggregator_query`: a raw query string sent to each query route of the
//!   aggregator's real router (axum's `Query` extraction, then validation and
//!   SQL building), with a ClickHouse client whose URL cannot be parsed, so a
//!   query that passes validation fails at the first request, without I/O.
//!
//! Invariants are asserted, so a fuzzer reports a broken one as a crash.

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{ResolvedSchema, Schema};
use apache_avro::writer::datum::GenericDatumWriter;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use schema_registry_converter::schema_registry_common::{
    get_bytes_result, get_payload, BytesResult,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;
use weir_core::codec::{AGGREGATE_SCHEMA, EVENT_SCHEMA};
use weir_core::{Event, WindowAggregate};
use weir_ingest::sink::MemorySink;
use weir_ingest::validate::Limits;

/// A target's body: one input, a panic on a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz_targets/<name>.rs` and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("ingest_body", ingest_body),
    ("ingest_event", ingest_event),
    ("processor_avro", processor_avro),
    ("aggregator_query", aggregator_query),
];

/// Server time of every mapped event: fixed, so a run is reproducible.
pub const RECEIVED_AT: i64 = 1_700_000_000_000;
pub const TENANT: &str = "fuzz";

/// The registry ids the fixed writer schemas stand under.
pub const EVENT_SCHEMA_ID: u32 = 1;
pub const AGGREGATE_SCHEMA_ID: u32 = 2;

// ---------------------------------------------------------------- ingest

/// The validation limits of the default configuration.
fn ingest_limits() -> &'static Limits {
    static LIMITS: OnceLock<Limits> = OnceLock::new();
    LIMITS.get_or_init(|| weir_ingest::config::IngestConfig::default().limits())
}

/// ingest's real router with the default configuration (auth off), on a
/// memory sink.
fn ingest_api() -> &'static (axum::Router, Arc<MemorySink>) {
    static API: OnceLock<(axum::Router, Arc<MemorySink>)> = OnceLock::new();
    API.get_or_init(|| {
        let mut cfg = weir_ingest::config::IngestConfig::default();
        cfg.auth.enabled = false;
        let sink = Arc::new(MemorySink::new());
        let gateway = weir_ingest::gateway(&cfg, sink.clone()).expect("the default config builds");
        (weir_ingest::http::router(gateway.http), sink)
    })
}

/// ingest's event routes, as its spec lists them.
fn ingest_routes() -> &'static [String] {
    static ROUTES: OnceLock<Vec<String>> = OnceLock::new();
    ROUTES.get_or_init(weir_ingest::routes::event_paths)
}

/// A request body, plain and gzip-labelled, posted to every event route.
pub fn ingest_body(data: &[u8]) {
    let (router, sink) = ingest_api();
    for route in ingest_routes() {
        for encoding in [None, Some("gzip")] {
            let mut req = Request::post(route.as_str());
            if let Some(e) = encoding {
                req = req.header(axum::http::header::CONTENT_ENCODING, e);
            }
            let req = req
                .body(Body::from(data.to_vec()))
                .expect("a valid request");
            let resp = runtime()
                .block_on(router.clone().oneshot(req))
                .expect("the router is infallible");
            let status = resp.status();
            let body = runtime()
                .block_on(axum::body::to_bytes(resp.into_body(), usize::MAX))
                .expect("a readable answer");
            let events: Vec<Event> = sink.take().into_iter().map(|(e, _)| e).collect();
            // What ingest accepts must encode to Avro and decode to itself.
            for event in &events {
                let wire = encode_wire(EVENT_SCHEMA_ID, event)
                    .unwrap_or_else(|e| panic!("an accepted event encodes: {e}\n{event:?}"));
                let back: Event = decode_wire(Some(&wire))
                    .unwrap_or_else(|e| panic!("an encoded event decodes: {e}\n{event:?}"));
                assert_eq!(&back, event, "the Avro round trip keeps the event");
            }
            let published: BTreeSet<String> = events.into_iter().map(|e| e.event_id).collect();
            assert!(
                [200, 202, 400, 413, 415].contains(&status.as_u16()),
                "{route}: {status}"
            );
            let answer: Value = serde_json::from_slice(&body).expect("every answer is JSON");
            // The Segment routes answer as Segment does: 200 and `success`.
            if status == StatusCode::OK {
                assert_eq!(answer["success"], true, "{route}: {answer}");
                assert!(!published.is_empty(), "{route}: a success publishes");
                continue;
            }
            if status != StatusCode::ACCEPTED {
                assert!(answer["error"]["code"].is_string(), "{route}: {answer}");
                assert!(published.is_empty(), "{route}: refused, yet published");
                continue;
            }
            let accepted = answer["accepted"].as_array().into_iter().flatten();
            let acknowledged: BTreeSet<String> = [&answer["event_id"], &answer["id"]]
                .into_iter()
                .chain(accepted.map(|a| &a["event_id"]))
                .chain(answer["ids"].as_array().into_iter().flatten())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            assert!(!acknowledged.is_empty(), "{route}: a 202 names its events");
            assert_eq!(acknowledged, published, "{route}: acknowledged = published");
            for id in &published {
                assert!(!id.is_empty() && id.len() <= 128);
            }
        }
    }
}

/// One JSON event, as every ingest route maps it.
pub fn ingest_event(data: &[u8]) {
    if let Ok(v) = weir_ingest::strict_json::json(data) {
        map_event(v, ingest_limits());
    }
}

/// Legacy shape to native, validation, and for an accepted event the Avro
/// round trip it takes to the processor.
fn map_event(v: Value, limits: &Limits) -> Option<Event> {
    let native = weir_ingest::compat::to_native(v);
    let event = match weir_ingest::validate::to_event(&native, RECEIVED_AT, TENANT, limits) {
        Ok(e) => e,
        Err(errors) => {
            assert!(!errors.is_empty(), "a rejection names a field");
            return None;
        }
    };
    assert!(!event.name.is_empty() && event.name.len() <= 256);
    assert!(!event.event_id.is_empty() && event.event_id.len() <= 128);
    assert!(event.timestamp > 0);
    assert!(event.timestamp <= RECEIVED_AT.saturating_add(limits.max_future_skew_ms));
    assert!(RECEIVED_AT.saturating_sub(event.timestamp) <= limits.max_event_age_ms);
    assert_eq!(event.tenant, TENANT);
    assert!(event.items.len() <= limits.max_items);
    assert!(event.properties.len() <= limits.max_properties);
    let _ = limits.warnings(&event, RECEIVED_AT);
    let wire = encode_wire(EVENT_SCHEMA_ID, &event)
        .unwrap_or_else(|e| panic!("an accepted event encodes: {e}\n{event:?}"));
    let back: Event = decode_wire(Some(&wire))
        .unwrap_or_else(|e| panic!("an encoded event decodes: {e}\n{event:?}"));
    assert_eq!(back, event, "the Avro round trip keeps the event");
    Some(event)
}

// ---------------------------------------------------------------- Avro

/// A writer schema and its resolved names, leaked for `'static` as
/// `schema_registry_converter` does with every schema it fetches.
type Resolved = (&'static Schema, ResolvedSchema<'static>);

fn schema(id: u32) -> Option<&'static Resolved> {
    fn resolve(text: &str) -> Resolved {
        let schema: &'static Schema = Box::leak(Box::new(
            Schema::parse_str(text).expect("weir's schema parses"),
        ));
        let resolved = ResolvedSchema::try_from(schema).expect("weir's schema resolves");
        (schema, resolved)
    }
    static EVENT: OnceLock<Resolved> = OnceLock::new();
    static AGGREGATE: OnceLock<Resolved> = OnceLock::new();
    match id {
        EVENT_SCHEMA_ID => Some(EVENT.get_or_init(|| resolve(EVENT_SCHEMA))),
        AGGREGATE_SCHEMA_ID => Some(AGGREGATE.get_or_init(|| resolve(AGGREGATE_SCHEMA))),
        _ => None,
    }
}

/// `Codec::encode_event` / `encode_aggregate` without the registry: what
/// `AvroEncoder::encode_struct` does once it has the schema and its id.
pub fn encode_wire<T: serde::Serialize>(id: u32, item: &T) -> Result<Vec<u8>, String> {
    let (schema, resolved) = schema(id).ok_or_else(|| format!("no schema {id}"))?;
    GenericDatumWriter::builder(schema)
        .resolved_schemata(resolved.clone())
        .build()
        .and_then(|w| w.write_ser_to_vec(item))
        .map(|bytes| get_payload(id, bytes))
        .map_err(|e| e.to_string())
}

/// `Codec::decode_event` / `decode_aggregate` without the registry: the
/// checks of `Codec::decode`, then what `AvroDecoder::decode` does once the
/// id's writer schema is known (an id without one is the registry's 404).
pub fn decode_wire<T: serde::de::DeserializeOwned>(bytes: Option<&[u8]>) -> Result<T, String> {
    // Set by `Codec::new` at start-up, before a stage decodes anything.
    weir_core::codec::limit_decode_allocations();
    if bytes.is_none_or(|b| b.is_empty()) {
        return Err("empty payload".into());
    }
    let (id, body) = match get_bytes_result(bytes) {
        BytesResult::Valid(id, body) => (id, body),
        BytesResult::Null | BytesResult::Invalid(_) => return Err("not the wire format".into()),
    };
    let (schema, resolved) = schema(id).ok_or_else(|| format!("schema {id} not found"))?;
    let value = GenericDatumReader::builder(schema)
        .resolved_writer_schemata(resolved.clone())
        .build()
        .and_then(|r| r.read_value(&mut std::io::Cursor::new(body)))
        .map_err(|e| format!("Could not transform bytes using schema: {e}"))?;
    apache_avro::from_value(&value)
        .map_err(|e| format!("payload does not match the expected record: {e}"))
}

// ---------------------------------------------------------------- processor

fn time_rules() -> weir_processor::partition::TimeRules {
    use weir_processor::window::WindowAssigner;
    let cfg = weir_processor::config::ProcessorConfig::default();
    weir_processor::partition::TimeRules {
        assigner: WindowAssigner::hopping(cfg.window_size_ms, cfg.window_advance_ms),
        // One hopping spec besides the default tumbling minute.
        extra: vec![WindowAssigner::hopping(3_600_000, 300_000)],
        out_of_orderness_ms: cfg.out_of_orderness_ms,
        allowed_lateness_ms: cfg.allowed_lateness_ms,
        dedup_horizon_ms: cfg.dedup_horizon_ms,
    }
}

/// A record value of `events.raw` (and of `aggregates.1m`).
pub fn processor_avro(data: &[u8]) {
    use weir_processor::partition::{PartitionState, Verdict};
    if let Ok(event) = decode_wire::<Event>(Some(data)) {
        // The processor: the record at offset 0 of a fresh partition, then
        // its redelivery.
        let mut state = PartitionState::new(0, time_rules());
        let verdict = state.process(0, &event);
        if let Verdict::Accepted { window_start } = verdict {
            assert!(window_start <= event.timestamp);
        }
        assert_eq!(state.process(1, &event), Verdict::Duplicate);
        let drained = state.drain();
        let rows = drained
            .aggregates
            .into_iter()
            .chain(drained.extra_aggregates.into_iter().map(|(_, a)| a));
        for agg in rows {
            assert!(agg.window_start <= event.timestamp && event.timestamp < agg.window_end);
            let wire = encode_wire(AGGREGATE_SCHEMA_ID, &agg)
                .unwrap_or_else(|e| panic!("an aggregate encodes: {e}\n{agg:?}"));
            let back: WindowAggregate = decode_wire(Some(&wire)).expect("an aggregate decodes");
            assert_eq!(back, agg);
            let _ = weir_aggregator::clickhouse_sink::AggregateRow::from(agg);
        }
        // The aggregator, reading the record's copy in `events.clean`.
        let _ = weir_aggregator::clickhouse_sink::EventRow::new(event, 0, 0);
    }
    // The aggregator, reading `aggregates.1m`.
    if let Ok(agg) = decode_wire::<WindowAggregate>(Some(data)) {
        let _ = weir_aggregator::clickhouse_sink::AggregateRow::from(agg);
    }
}

// ---------------------------------------------------------------- aggregator

/// One current-thread runtime for the async entry points (`body::read`
/// times out and drains with tokio's timers; the router is a tower service).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

fn query_api() -> &'static axum::Router {
    static API: OnceLock<axum::Router> = OnceLock::new();
    API.get_or_init(|| {
        weir_aggregator::api::router(weir_aggregator::query::ApiState {
            // An unparsable URL: a query fails before any connection.
            client: clickhouse::Client::default().with_url(""),
            read_keys: None,
        })
    })
}

pub const QUERY_ROUTES: &[&str] = &[
    "/v1/events",
    "/v1/metrics",
    "/v1/metrics/rolling",
    "/v1/metrics/active-users",
];

/// The input as a URI query: bytes a URI cannot hold are percent-encoded
/// (an HTTP server never sees them raw); `%`, `+`, `&` and `=` stay as sent.
fn query_string(data: &[u8]) -> String {
    let mut q = String::with_capacity(data.len());
    for &b in data {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    q
}

/// A query string, sent to every query route.
pub fn aggregator_query(data: &[u8]) {
    let router = query_api();
    let q = query_string(data);
    for route in QUERY_ROUTES {
        let uri = format!("{route}?{q}");
        let req = Request::get(&uri)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{uri:?} is a valid URI: {e}"));
        let resp = runtime()
            .block_on(router.clone().oneshot(req))
            .expect("the router is infallible");
        // 400 for what validation refuses, 503 for what reaches ClickHouse.
        let status = resp.status();
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::SERVICE_UNAVAILABLE,
            "{uri}: {status}"
        );
    }
}
