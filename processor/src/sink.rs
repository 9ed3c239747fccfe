//! Where the processor's output goes, under one of two commit modes.
//!
//! - `exactly_once`: every batch is one Kafka transaction holding the
//!   outputs, the state changelog and the input offsets
//!   (`send_offsets_to_transaction` with the group metadata, EOS v2).
//! - `ordered`: for brokers without transactions. Outputs are flushed, then
//!   the changelog, then the offsets are committed, so state is never ahead
//!   of what downstream has, and a replay re-emits identical records.

use crate::config::{CommitModeSetting, ProcessorConfig};
use rdkafka::consumer::{CommitMode as KafkaCommit, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;
use std::time::Duration;

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ExactlyOnce,
    Ordered,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::ExactlyOnce => "exactly_once",
            Mode::Ordered => "ordered",
        }
    }
}

/// One record to produce.
pub struct OutRecord {
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    pub headers: OwnedHeaders,
}

impl OutRecord {
    /// The record as rdkafka sends it (no payload: a tombstone).
    pub fn to_future_record(&self) -> FutureRecord<'_, Vec<u8>, Vec<u8>> {
        let mut rec = FutureRecord::to(&self.topic)
            .key(&self.key)
            .headers(self.headers.clone());
        if let Some(p) = &self.payload {
            rec = rec.payload(p);
        }
        if let Some(p) = self.partition {
            rec = rec.partition(p);
        }
        rec
    }
}

pub struct OutputSink {
    producer: FutureProducer,
    mode: Mode,
    in_txn: bool,
    outputs: Vec<rdkafka::producer::DeliveryFuture>,
    deferred_state: Vec<OutRecord>,
}

/// What an `init_transactions` failure says about the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum InitFailure {
    /// Not reachable or not ready yet: try again.
    Transient,
    /// The broker (or its ACLs) will not do transactions.
    Unsupported,
}

pub fn classify_init_error(code: RDKafkaErrorCode, retriable: bool) -> InitFailure {
    use RDKafkaErrorCode::*;
    match code {
        _ if retriable => InitFailure::Transient,
        OperationTimedOut
        | RequestTimedOut
        | BrokerTransportFailure
        | AllBrokersDown
        | CoordinatorNotAvailable
        | NotCoordinator
        | CoordinatorLoadInProgress
        | ConcurrentTransactions => InitFailure::Transient,
        _ => InitFailure::Unsupported,
    }
}

impl OutputSink {
    fn new(producer: FutureProducer, mode: Mode) -> Self {
        Self {
            producer,
            mode,
            in_txn: false,
            outputs: vec![],
            deferred_state: vec![],
        }
    }

    /// Picks the commit mode: a transactional producer when the broker accepts
    /// `init_transactions`, else `ordered` (unless `exactly_once` was required).
    /// An unreachable broker is waited for, not taken as a broker without
    /// transactions. A restarted instance's `init_transactions` also aborts the
    /// transaction its previous life left open.
    pub async fn build(cfg: &ProcessorConfig) -> anyhow::Result<Self> {
        let base = [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
        ];
        if cfg.commit_mode != CommitModeSetting::Ordered {
            let txn_id = format!("weir-processor-{}", cfg.instance_id);
            let mut props = base.to_vec();
            props.extend([
                ("transactional.id", txn_id.as_str()),
                ("transaction.timeout.ms", "60000"),
            ]);
            let producer: FutureProducer = cfg.kafka.client_config(&props).create()?;
            let mut attempt = 0;
            let refusal = loop {
                attempt += 1;
                let err = match tokio::task::block_in_place(|| {
                    producer.init_transactions(Duration::from_secs(30))
                }) {
                    Ok(()) => {
                        tracing::info!(mode = "exactly_once", transactional_id = %txn_id, "commit mode chosen: Kafka transactions");
                        return Ok(Self::new(producer, Mode::ExactlyOnce));
                    }
                    Err(e) => e,
                };
                let (code, retriable) = match &err {
                    KafkaError::Transaction(t) => (t.code(), t.is_retriable()),
                    other => (
                        other
                            .rdkafka_error_code()
                            .unwrap_or(RDKafkaErrorCode::Unknown),
                        false,
                    ),
                };
                match classify_init_error(code, retriable) {
                    InitFailure::Transient if attempt < 5 => {
                        tracing::warn!(error = %err, attempt, "initialising transactions failed; retrying");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    InitFailure::Transient => {
                        anyhow::bail!("the broker did not answer init_transactions after {attempt} attempts: {err}")
                    }
                    InitFailure::Unsupported => break err,
                }
            };
            if cfg.commit_mode == CommitModeSetting::ExactlyOnce {
                anyhow::bail!(
                    "commit_mode = exactly_once, but the broker refused transactions ({refusal}); \
                     use commit_mode = ordered or auto with this broker"
                );
            }
            tracing::warn!(error = %refusal, "the broker refused transactions; falling back to ordered commits");
        }
        let producer: FutureProducer = cfg.kafka.client_config(&base).create()?;
        tracing::info!(
            mode = "ordered",
            "commit mode chosen: ordered flushes (outputs, then changelog, then offsets)"
        );
        Ok(Self::new(producer, Mode::Ordered))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Initialises `instance`'s transactional.id once and lets it go: the
    /// broker aborts whatever transaction that id left open.
    pub async fn end_dangling_transaction(
        cfg: &ProcessorConfig,
        instance: &str,
    ) -> anyhow::Result<()> {
        let txn_id = format!("weir-processor-{instance}");
        let producer: FutureProducer = cfg
            .kafka
            .client_config(&[
                ("enable.idempotence", "true"),
                ("transactional.id", txn_id.as_str()),
            ])
            .create()?;
        tokio::task::block_in_place(|| producer.init_transactions(Duration::from_secs(30)))
            .map_err(|e| anyhow::anyhow!("ending the open transaction of {txn_id}: {e}"))
    }

    fn begin(&mut self) -> anyhow::Result<()> {
        if self.mode == Mode::ExactlyOnce && !self.in_txn {
            self.producer.begin_transaction()?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Queues an output record (clean, late, invalid, aggregate).
    pub async fn send_output(&mut self, r: OutRecord) -> anyhow::Result<()> {
        self.begin()?;
        let f = self.enqueue(&r).await?;
        self.outputs.push(f);
        Ok(())
    }

    /// Queues a changelog record. In `ordered` mode it waits until the
    /// outputs of the same batch are acknowledged.
    pub async fn send_state(&mut self, r: OutRecord) -> anyhow::Result<()> {
        self.begin()?;
        match self.mode {
            Mode::ExactlyOnce => {
                self.enqueue(&r).await?;
            }
            Mode::Ordered => self.deferred_state.push(r),
        }
        Ok(())
    }

    async fn enqueue(&self, r: &OutRecord) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
        loop {
            match self.producer.send_result(r.to_future_record()) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Makes the batch durable together with the input `offsets`.
    pub async fn commit<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
        &mut self,
        consumer: &C,
        offsets: &TopicPartitionList,
    ) -> anyhow::Result<()> {
        match self.mode {
            Mode::ExactlyOnce => {
                self.begin()?;
                let meta = consumer
                    .group_metadata()
                    .ok_or_else(|| anyhow::anyhow!("consumer has no group metadata"))?;
                tokio::task::block_in_place(|| {
                    self.producer
                        .send_offsets_to_transaction(offsets, &meta, TXN_TIMEOUT)?;
                    self.producer.commit_transaction(TXN_TIMEOUT)
                })?;
                self.in_txn = false;
                self.outputs.clear();
            }
            Mode::Ordered => {
                for f in self.outputs.drain(..) {
                    f.await?.map_err(|(e, _)| e)?;
                }
                let mut states = vec![];
                for r in std::mem::take(&mut self.deferred_state) {
                    states.push(self.enqueue(&r).await?);
                }
                for f in states {
                    f.await?.map_err(|(e, _)| e)?;
                }
                tokio::task::block_in_place(|| consumer.commit(offsets, KafkaCommit::Sync))?;
            }
        }
        Ok(())
    }

    /// Drops the batch. In `exactly_once` mode its records are aborted.
    pub fn abort(&mut self) -> anyhow::Result<()> {
        self.outputs.clear();
        self.deferred_state.clear();
        if self.in_txn {
            self.in_txn = false;
            tokio::task::block_in_place(|| self.producer.abort_transaction(TXN_TIMEOUT))?;
        }
        Ok(())
    }

    /// The producer's fatal error, if it has one: it cannot be used again.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, msg)| format!("{code}: {msg}"))
    }

    /// Flushes whatever is queued (used at shutdown after a commit).
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_transient_and_refusal_is_unsupported() {
        use RDKafkaErrorCode::*;
        assert_eq!(
            classify_init_error(OperationTimedOut, false),
            InitFailure::Transient
        );
        assert_eq!(
            classify_init_error(CoordinatorNotAvailable, false),
            InitFailure::Transient
        );
        assert_eq!(
            classify_init_error(UnsupportedVersion, true),
            InitFailure::Transient
        );
        assert_eq!(
            classify_init_error(UnsupportedVersion, false),
            InitFailure::Unsupported
        );
        assert_eq!(
            classify_init_error(TransactionalIdAuthorizationFailed, false),
            InitFailure::Unsupported
        );
        assert_eq!(
            classify_init_error(ClusterAuthorizationFailed, false),
            InitFailure::Unsupported
        );
    }
}
