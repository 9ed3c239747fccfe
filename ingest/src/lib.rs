//! weir ingest: the HTTP gateway. It validates client events, stamps server
//! time, encodes them as Avro in the Confluent wire format and writes them to
//! `events.raw`, answering 2xx only once Kafka has them.

pub mod acked_producer;
pub mod body;
pub mod compat;
pub mod config;
pub mod grpc;
pub mod http;
pub mod publisher;
pub mod routes;
pub mod strict_json;
pub mod validate;
pub mod wire;

use config::IngestConfig;
use std::sync::Arc;
use std::time::Duration;
use weir_core::api_keys::KeyKind;
use weir_core::codec::Codec;
use weir_core::topics::{ensure_topics, TopicSpec};

/// Connects to Kafka and the registry and returns the API state.
pub async fn build(cfg: &IngestConfig) -> anyhow::Result<Arc<http::ApiState>> {
    // Counters an alert reads exist from the start, at 0.
    metrics::counter!("weir_ingest_producer_rebuilds_total").increment(0);
    // Configuration mistakes fail before any network wait.
    let write_keys = cfg.auth.keys(KeyKind::Write)?;
    match &write_keys {
        Some(keys) => tracing::info!(keys = keys.len(), "write-key auth on"),
        None => {
            tracing::warn!(tenant = %cfg.tenant, "write-key auth is off; every event is stamped with the default tenant")
        }
    }
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
    let producer_config = producer_config(cfg);
    let publisher = http::ApiState {
        publisher: publisher::EventPublisher::new(
            producer_config,
            codec,
            cfg.topics.raw.clone(),
            Duration::from_millis(cfg.delivery_timeout_ms),
        )?,
        limits: validate::Limits {
            max_future_skew_ms: cfg.max_future_skew_ms,
            max_string_bytes: cfg.max_string_bytes,
            max_properties: cfg.max_properties,
            flag_older_than_ms: cfg.flag_older_than_ms,
            ..Default::default()
        },
        write_keys,
        default_tenant: cfg.tenant.clone(),
        rate_limit: http::rate_limiter(cfg.rate_limit.events_per_second, cfg.rate_limit.burst),
        max_body_bytes: cfg.max_body_bytes,
        body_read_timeout: cfg.http.body_read_timeout(),
        max_batch_events: cfg.max_batch_events,
        max_in_flight_events: cfg.max_in_flight_events,
        requests: Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent_requests)),
        cors: http::cors(&cfg.cors_allowed_origins)?,
    };
    Ok(Arc::new(publisher))
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
