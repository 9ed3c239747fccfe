//! Writes accepted events to `events.raw`: Avro through the registry, keyed by
//! `event_id`, idempotent producer with acks=all. `publish` returns only once
//! Kafka has acknowledged every event, which is when ingest may answer 2xx.

use futures::future::try_join_all;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::time::Duration;
use weir_core::codec::{Codec, CodecError};
use weir_core::Event;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("schema registry unavailable: {0}")]
    Registry(String),
    #[error("event could not be encoded: {0}")]
    Encode(String),
    #[error("kafka did not acknowledge: {0}")]
    Kafka(String),
}

pub struct EventPublisher {
    producer: FutureProducer,
    codec: Codec,
    topic: String,
    queue_timeout: Duration,
}

impl EventPublisher {
    pub fn new(
        producer: FutureProducer,
        codec: Codec,
        topic: String,
        queue_timeout: Duration,
    ) -> Self {
        Self {
            producer,
            codec,
            topic,
            queue_timeout,
        }
    }

    /// Whether Kafka and the registry both answer: what `/readyz` reports.
    pub async fn dependencies_up(&self) -> bool {
        let producer = self.producer.clone();
        let kafka = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
        });
        let registry = self.codec.registry_reachable().await;
        registry && kafka.await.unwrap_or(false)
    }

    #[tracing::instrument(name = "kafka_publish", skip_all, fields(events = events.len()))]
    pub async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        let mut payloads = Vec::with_capacity(events.len());
        for e in events {
            payloads.push(self.codec.encode_event(e).await.map_err(|err| match err {
                CodecError::Unavailable(m) => PublishError::Registry(m),
                CodecError::Invalid(m) => PublishError::Encode(m),
            })?);
        }
        let sends = events.iter().zip(&payloads).map(|(e, p)| {
            let record = FutureRecord::to(&self.topic)
                .key(e.event_id.as_bytes())
                .payload(p);
            self.producer
                .send(record, Timeout::After(self.queue_timeout))
        });
        try_join_all(sends)
            .await
            .map_err(|(e, _)| PublishError::Kafka(e.to_string()))?;
        metrics::counter!("weir_ingest_events_published_total").increment(events.len() as u64);
        Ok(())
    }
}
