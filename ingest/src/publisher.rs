//! Writes accepted events to `events.raw`: Avro through the registry, keyed by
//! `event_id`, idempotent producer with acks=all. `publish` returns only once
//! Kafka has acknowledged every event, which is when ingest may answer 2xx.
//!
//! An idempotent producer can be left unusable by a broker that lost its
//! producer state (a restart, a failover): every send then fails the same
//! way. The publisher replaces such a producer with a fresh one, at most
//! every few seconds. The events of the failed requests were answered 503,
//! so their clients resend them with the same ids and nothing is lost.

use futures::future::try_join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use std::time::Instant;
use weir_core::codec::{Codec, CodecError};
use weir_core::trace_context;
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
    config: ClientConfig,
    producer: RwLock<FutureProducer>,
    last_rebuild: Mutex<Instant>,
    codec: Codec,
    topic: String,
    queue_timeout: Duration,
}

/// The shortest time between two producer rebuilds.
const REBUILD_EVERY: Duration = Duration::from_secs(5);

impl EventPublisher {
    pub fn new(
        config: ClientConfig,
        codec: Codec,
        topic: String,
        queue_timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            producer: RwLock::new(config.create()?),
            config,
            last_rebuild: Mutex::new(Instant::now()),
            codec,
            topic,
            queue_timeout,
        })
    }

    fn producer(&self) -> FutureProducer {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces the producer after an error a fresh one would not repeat:
    /// a fatal idempotence error, or an error the broker returned (not a
    /// timeout, which only says the broker is still away).
    fn recover_from(&self, e: &KafkaError) {
        let fatal = self.producer().client().fatal_error().is_some();
        let broker_said = !matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::MessageTimedOut
                    | RDKafkaErrorCode::OperationTimedOut
                    | RDKafkaErrorCode::QueueFull
            )
        );
        if !(fatal || broker_said) {
            return;
        }
        let mut last = self.last_rebuild.lock().expect("rebuild lock");
        if last.elapsed() < REBUILD_EVERY {
            return;
        }
        match self.config.create::<FutureProducer>() {
            Ok(p) => {
                *self.producer.write().expect("producer lock") = p;
                *last = Instant::now();
                metrics::counter!("weir_ingest_producer_rebuilds_total").increment(1);
                tracing::warn!(error = %e, fatal, "replaced the Kafka producer after a broker error");
            }
            Err(err) => tracing::error!(error = %err, "cannot create a new Kafka producer"),
        }
    }

    /// Events handed to the producer that Kafka has not acknowledged yet.
    pub fn in_flight(&self) -> usize {
        self.producer().in_flight_count().max(0) as usize
    }

    /// Whether Kafka and the registry both answer: what `/readyz` reports.
    pub async fn dependencies_up(&self) -> bool {
        let producer = self.producer();
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
    pub async fn publish(
        &self,
        events: &[Event],
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let mut payloads = Vec::with_capacity(events.len());
        for e in events {
            payloads.push(self.codec.encode_event(e).await.map_err(|err| match err {
                CodecError::Unavailable(m) => PublishError::Registry(m),
                CodecError::Invalid(m) => PublishError::Encode(m),
            })?);
        }
        let producer = self.producer();
        let sends = events.iter().zip(&payloads).map(|(e, p)| {
            let mut record = FutureRecord::to(&self.topic)
                .key(e.event_id.as_bytes())
                .payload(p);
            if let Some(tp) = traceparent {
                let header = Header {
                    key: trace_context::HEADER,
                    value: Some(tp),
                };
                record = record.headers(OwnedHeaders::new().insert(header));
            }
            producer.send(record, Timeout::After(self.queue_timeout))
        });
        // librdkafka may hold a message past message.timeout.ms while a dead
        // broker's requests drain; the client is answered on time regardless.
        // A message acknowledged after that is resent by the client under the
        // same id, and dedup absorbs it.
        match tokio::time::timeout(self.queue_timeout, try_join_all(sends)).await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                self.recover_from(&e);
                return Err(PublishError::Kafka(e.to_string()));
            }
            Err(_) => {
                return Err(PublishError::Kafka(format!(
                    "no acknowledgement within {} ms",
                    self.queue_timeout.as_millis()
                )))
            }
        }
        metrics::counter!("weir_ingest_events_published_total").increment(events.len() as u64);
        Ok(())
    }
}
