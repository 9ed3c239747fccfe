//! weir ingest: the HTTP and gRPC gateway. It validates client events,
//! stamps server time, encodes them as Avro in the Confluent wire format and
//! writes them to `events.raw`, answering 2xx only once Kafka has them.
//!
//! The transports (`http` with `routes` and `handlers`, `grpc`) read
//! requests and write answers (`answers`); `admission` decides, the same for
//! both; an `EventSink` (`kafka_sink`, or `sink::MemorySink` in tests) takes
//! what was admitted. `gateway` assembles them on any sink.

pub mod acked_producer;
pub mod admission;
pub mod answers;
pub mod body;
pub mod client_names;
pub mod compat;
pub mod config;
pub mod grpc;
pub mod handlers;
pub mod http;
pub mod kafka_sink;
pub mod routes;
pub mod segment;
pub mod segment_routes;
pub mod sink;
pub mod strict_json;
pub mod validate;
pub mod wire;

use admission::Admission;
use config::IngestConfig;
use handlers::HttpState;
use sink::EventSink;
use std::sync::Arc;
use std::time::Duration;
use weir_core::api_keys::KeyKind;
use weir_core::codec::Codec;
use weir_core::topics::{ensure_topics, TopicSpec};

/// The running gateway's parts: its sink, the admission core both APIs
/// call, and the HTTP side's state.
pub struct Gateway {
    pub sink: Arc<dyn EventSink>,
    pub admission: Arc<Admission>,
    pub http: Arc<HttpState>,
}

/// Connects to Kafka and the registry and builds the gateway on a `KafkaSink`.
pub async fn build(cfg: &IngestConfig) -> anyhow::Result<Gateway> {
    // Counters an alert reads exist from the start, at 0.
    metrics::counter!("weir_ingest_producer_rebuilds_total").increment(0);
    // Configuration mistakes fail before any network wait.
    check_config(cfg)?;
    let raw = [TopicSpec {
        name: &cfg.topics.raw,
        partitions: cfg.kafka.partitions,
        compacted: false,
    }];
    ensure_topics(&cfg.kafka, &raw).await?;
    let codec = Codec::new(
        &cfg.schema_registry_url,
        &cfg.topics.raw,
        &cfg.topics.aggregates,
    )?;
    codec.register().await?;
    let sink = kafka_sink::KafkaSink::new(
        producer_config(cfg),
        codec,
        cfg.topics.raw.clone(),
        Duration::from_millis(cfg.delivery_timeout_ms),
    )?;
    gateway(cfg, Arc::new(sink))
}

/// The gateway on any sink: `build` gives it Kafka, tests and the fuzz
/// targets a `sink::MemorySink`.
pub fn gateway(cfg: &IngestConfig, sink: Arc<dyn EventSink>) -> anyhow::Result<Gateway> {
    let write_keys = check_config(cfg)?;
    match &write_keys {
        Some(keys) => tracing::info!(keys = keys.len(), "write-key auth on"),
        None => {
            tracing::warn!(tenant = %cfg.tenant, "write-key auth is off; every event is stamped with the default tenant")
        }
    }
    let admission = Arc::new(Admission {
        sink: sink.clone(),
        limits: cfg.limits(),
        write_keys,
        default_tenant: cfg.tenant.clone(),
        rate_limit: admission::rate_limiter(cfg.rate_limit.events_per_second, cfg.rate_limit.burst),
        max_batch_events: cfg.max_batch_events,
        max_in_flight_events: cfg.max_in_flight_events,
    });
    let http = Arc::new(HttpState {
        admission: admission.clone(),
        max_body_bytes: cfg.max_body_bytes,
        body_read_timeout: cfg.http.body_read_timeout(),
        requests: Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent_requests)),
        cors: http::cors(&cfg.cors_allowed_origins)?,
    });
    Ok(Gateway {
        sink,
        admission,
        http,
    })
}

/// The write keys, or `None` with auth off.
fn check_config(cfg: &IngestConfig) -> anyhow::Result<Option<weir_core::api_keys::ApiKeys>> {
    cfg.auth.keys(KeyKind::Write)
}

/// The producer settings of `events.raw`: idempotent, acks=all, and a
/// delivery timeout that bounds how long a request waits for Kafka.
pub fn producer_config(cfg: &IngestConfig) -> rdkafka::ClientConfig {
    let timeout = cfg.delivery_timeout_ms.to_string();
    // Room for one more full batch past the high-water mark, so admission
    // control answers 503 before librdkafka's own queue ever fills.
    let queue_limit = (cfg.max_in_flight_events + cfg.max_batch_events).to_string();
    cfg.kafka.client_config(&[
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "5"),
        ("compression.type", "lz4"),
        ("message.timeout.ms", &timeout),
        ("queue.buffering.max.messages", &queue_limit),
    ])
}
