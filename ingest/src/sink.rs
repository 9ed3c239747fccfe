//! Where accepted events go: the `EventSink` seam at ingest's I/O edge.
//!
//! `KafkaSink` (in `kafka_sink`) is production's: Avro to `events.raw`,
//! answered once Kafka acknowledged. `MemorySink` keeps events in memory, so
//! the router, the handlers and the fuzz targets run without a broker. Only
//! the real-stack tests prove a feature; the memory sink makes the rest fast.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_core::health::HealthCheck;
use weir_core::Event;

/// A boxed future, as a trait object's async methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("schema registry unavailable: {0}")]
    Registry(String),
    #[error("event could not be encoded: {0}")]
    Encode(String),
    #[error("kafka did not acknowledge: {0}")]
    Kafka(String),
}

/// Takes validated events and says when they are durable.
pub trait EventSink: Send + Sync + 'static {
    /// Completes once every event is durable (Kafka acknowledged): only then
    /// may ingest answer 2xx. `traceparent` goes on every record.
    fn publish<'a>(
        &'a self,
        events: &'a [Event],
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), PublishError>>;

    /// Events handed over that are not durable yet (the high-water mark
    /// applies to it).
    fn in_flight(&self) -> usize;

    /// Waits up to `timeout` for every event in flight: the last step of a
    /// graceful shutdown. False if some were not.
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, bool>;

    /// The dependencies the service shell polls into `/readyz`.
    fn health_checks(self: Arc<Self>) -> Vec<Box<dyn HealthCheck>>;
}

/// Events kept in memory, in the order published: for tests and fuzzing.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<(Event, Option<String>)>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event published so far, with its trace context.
    pub fn events(&self) -> Vec<(Event, Option<String>)> {
        self.events.lock().expect("memory sink lock").clone()
    }

    /// Takes every event published so far, leaving the sink empty.
    pub fn take(&self) -> Vec<(Event, Option<String>)> {
        std::mem::take(&mut *self.events.lock().expect("memory sink lock"))
    }
}

impl EventSink for MemorySink {
    fn publish<'a>(
        &'a self,
        events: &'a [Event],
        traceparent: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        let mut kept = self.events.lock().expect("memory sink lock");
        kept.extend(
            events
                .iter()
                .map(|e| (e.clone(), traceparent.map(str::to_string))),
        );
        Box::pin(async { Ok(()) })
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn health_checks(self: Arc<Self>) -> Vec<Box<dyn HealthCheck>> {
        vec![]
    }
}
