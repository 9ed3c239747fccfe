//! A Kafka producer whose sends complete per request, not per record: one
//! `send_all` queues a request's records and resolves when Kafka has
//! acknowledged the last of them.
//!
//! librdkafka calls back once per record; an `Acks` tracker counts those
//! callbacks down and the last one answers the request. Under load the
//! usual future-per-record costs more CPU than parsing the JSON did.

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Kafka(KafkaError),
    #[error("no acknowledgement within {} ms", .0.as_millis())]
    TimedOut(Duration),
    #[error("the producer was closed before Kafka answered")]
    Closed,
}

/// The acknowledgements one request waits for.
struct Acks {
    remaining: AtomicUsize,
    first_error: Mutex<Option<KafkaError>>,
    done: Mutex<Option<oneshot::Sender<Result<(), KafkaError>>>>,
}

impl Acks {
    fn new(records: usize) -> (Arc<Self>, oneshot::Receiver<Result<(), KafkaError>>) {
        let (tx, rx) = oneshot::channel();
        let acks = Arc::new(Self {
            remaining: AtomicUsize::new(records),
            first_error: Mutex::new(None),
            done: Mutex::new(Some(tx)),
        });
        (acks, rx)
    }

    /// Counts one record as settled; the last one answers.
    fn settle(&self, outcome: Result<(), KafkaError>) {
        if let Err(e) = outcome {
            self.first_error.lock().expect("acks lock").get_or_insert(e);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let result = match self.first_error.lock().expect("acks lock").take() {
                Some(e) => Err(e),
                None => Ok(()),
            };
            if let Some(tx) = self.done.lock().expect("acks lock").take() {
                let _ = tx.send(result);
            }
        }
    }
}

/// Routes librdkafka's delivery reports to the request that sent the record.
struct DeliveryRouter;

impl ClientContext for DeliveryRouter {}

impl ProducerContext for DeliveryRouter {
    type DeliveryOpaque = Arc<Acks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<Acks>) {
        acks.settle(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

pub struct AckedProducer {
    producer: ThreadedProducer<DeliveryRouter>,
}

impl AckedProducer {
    pub fn new(config: &ClientConfig) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: config.create_with_context(DeliveryRouter)?,
        })
    }

    /// Queues `records` (key, payload) to `topic` and waits, at most
    /// `timeout`, until Kafka acknowledged all of them. On error some may
    /// still have been written; callers resend all under the same keys.
    pub async fn send_all(
        &self,
        topic: &str,
        records: impl ExactSizeIterator<Item = (&[u8], &[u8])>,
        headers: Option<&OwnedHeaders>,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let count = records.len();
        if count == 0 {
            return Ok(());
        }
        let (acks, answered) = Acks::new(count);
        for (i, (key, payload)) in records.enumerate() {
            let mut record = BaseRecord::with_opaque_to(topic, acks.clone())
                .key(key)
                .payload(payload);
            if let Some(h) = headers {
                record = record.headers(h.clone());
            }
            if let Err((e, _)) = self.producer.send(record) {
                // Settle the records never queued so the tracker completes.
                for _ in i..count {
                    acks.settle(Err(e.clone()));
                }
                break;
            }
        }
        drop(acks);
        // librdkafka may hold a message past message.timeout.ms while a dead
        // broker's requests drain; the caller is answered on time regardless.
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(SendError::Kafka(e)),
            Ok(Err(_)) => Err(SendError::Closed),
            Err(_) => Err(SendError::TimedOut(timeout)),
        }
    }

    /// Records queued that Kafka has not acknowledged yet.
    pub fn in_flight(&self) -> usize {
        self.producer.in_flight_count().max(0) as usize
    }

    /// Whether the producer hit an error no retry fixes (idempotence broken).
    pub fn is_fatal(&self) -> bool {
        self.producer.client().fatal_error().is_some()
    }

    /// Whether a broker answers a metadata request within `timeout`. Blocks.
    pub fn broker_answers(&self, timeout: Duration) -> bool {
        self.producer.client().fetch_metadata(None, timeout).is_ok()
    }

    /// Waits up to `timeout` for every queued record. Blocks.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.producer.flush(timeout).is_ok()
    }
}
