//! `KafkaSink`, the production `EventSink`: writes accepted events to
//! `events.raw`, Avro through the registry, keyed by `event_id`, idempotent
//! producer with acks=all. `publish` returns only once Kafka has acknowledged
//! every event, which is when ingest may answer 2xx.
//!
//! An idempotent producer can be left unusable by a broker that lost its
//! producer state (a restart, a failover): every send then fails the same
//! way. The publisher replaces such a producer with a fresh one, at most
//! every few seconds. The events of the failed requests were answered 503,
//! so their clients resend them with the same ids and nothing is lost.

use crate::acked_producer::{AckedProducer, SendError};
use crate::sink::{BoxFuture, EventSink, PublishError};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use std::time::Instant;
use weir_core::codec::{Codec, CodecError};
use weir_core::headers::{Header, RecordHeaders};
use weir_core::health::HealthCheck;
use weir_core::Event;

pub struct KafkaSink {
    config: ClientConfig,
    producer: RwLock<Arc<AckedProducer>>,
    last_rebuild: Mutex<Instant>,
    codec: Codec,
    topic: String,
    queue_timeout: Duration,
}

/// The shortest time between two producer rebuilds.
const REBUILD_EVERY: Duration = Duration::from_secs(5);

impl KafkaSink {
    pub fn new(
        config: ClientConfig,
        codec: Codec,
        topic: String,
        queue_timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            producer: RwLock::new(Arc::new(AckedProducer::new(&config)?)),
            config,
            last_rebuild: Mutex::new(Instant::now()),
            codec,
            topic,
            queue_timeout,
        })
    }

    fn producer(&self) -> Arc<AckedProducer> {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces the producer after an error a fresh one would not repeat:
    /// a fatal idempotence error, or an error the broker returned (not a
    /// timeout, which only says the broker is still away).
    fn recover_from(&self, e: &SendError) {
        let fatal = self.producer().is_fatal();
        let broker_said = match e {
            SendError::Kafka(k) => !matches!(
                k.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::MessageTimedOut
                        | RDKafkaErrorCode::OperationTimedOut
                        | RDKafkaErrorCode::QueueFull
                )
            ),
            SendError::TimedOut(_) | SendError::Closed => false,
        };
        if !(fatal || broker_said) {
            return;
        }
        let mut last = self.last_rebuild.lock().expect("rebuild lock");
        if last.elapsed() < REBUILD_EVERY {
            return;
        }
        match AckedProducer::new(&self.config) {
            Ok(p) => {
                *self.producer.write().expect("producer lock") = Arc::new(p);
                *last = Instant::now();
                metrics::counter!("weir_ingest_producer_rebuilds_total").increment(1);
                tracing::warn!(error = %e, fatal, "replaced the Kafka producer after a broker error");
            }
            Err(err) => tracing::error!(error = %err, "cannot create a new Kafka producer"),
        }
    }

    #[tracing::instrument(name = "kafka_publish", skip_all, fields(events = events.len()))]
    async fn publish_events(
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
        let started = Instant::now();
        let headers = traceparent.map(|tp| {
            RecordHeaders::new()
                .with(Header::TraceParent, tp)
                .to_kafka()
        });
        let records = events
            .iter()
            .zip(&payloads)
            .map(|(e, p)| (e.event_id.as_bytes(), p.as_slice()));
        let sent = self
            .producer()
            .send_all(&self.topic, records, headers.as_ref(), self.queue_timeout)
            .await;
        metrics::histogram!("weir_ingest_produce_latency_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = sent {
            self.recover_from(&e);
            return Err(PublishError::Kafka(e.to_string()));
        }
        metrics::counter!("weir_ingest_events_published_total").increment(events.len() as u64);
        Ok(())
    }
}

impl EventSink for KafkaSink {
    fn publish<'a>(
        &'a self,
        events: &'a [Event],
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(self.publish_events(events, traceparent))
    }

    fn in_flight(&self) -> usize {
        self.producer().in_flight()
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, bool> {
        let producer = self.producer();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || producer.flush(timeout))
                .await
                .unwrap_or(false)
        })
    }

    fn health_checks(self: Arc<Self>) -> Vec<Box<dyn HealthCheck>> {
        vec![
            Box::new(KafkaHealth(self.clone())),
            Box::new(RegistryHealth(self)),
        ]
    }
}

/// The broker answers the producer; also refreshes the queue gauge.
struct KafkaHealth(Arc<KafkaSink>);

impl HealthCheck for KafkaHealth {
    fn name(&self) -> String {
        "kafka".into()
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        let producer = self.0.producer();
        Box::pin(async move {
            metrics::gauge!("weir_ingest_producer_queue_events").set(producer.in_flight() as f64);
            let answers = tokio::task::spawn_blocking(move || {
                producer.broker_answers(Duration::from_secs(2))
            })
            .await
            .unwrap_or(false);
            answers
                .then_some(())
                .ok_or_else(|| "no broker answers".to_string())
        })
    }
}

/// The Schema Registry answers: events cannot be encoded without it.
struct RegistryHealth(Arc<KafkaSink>);

impl HealthCheck for RegistryHealth {
    fn name(&self) -> String {
        "schema_registry".into()
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.0
                .codec
                .registry_reachable()
                .await
                .then_some(())
                .ok_or_else(|| "the schema registry does not answer".to_string())
        })
    }
}
