//! The aggregator's consume loop: read `events.clean`, `aggregates.1m` and
//! the two dead-letter topics (read_committed), batch by rows or time, insert
//! into ClickHouse (late events through the late lane, see `late`), and only
//! then commit the offsets. While ClickHouse is down the loop retries the
//! same batch with backoff and reads nothing new.

use crate::clickhouse_sink::{AggregateRow, ClickHouseSink, DeadLetterRow, EventRow};
use crate::config::AggregatorConfig;
use crate::late::Admitted;
use crate::store::store_batch;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weir_core::codec::{Codec, CodecError};
use weir_core::headers::Header;
use weir_core::health::Component;
use weir_core::trace_context;

pub struct Aggregator {
    cfg: AggregatorConfig,
    consumer: StreamConsumer,
    codec: Codec,
    sink: ClickHouseSink,
}

#[derive(Default)]
struct Batch {
    events: Vec<EventRow>,
    aggregates: Vec<AggregateRow>,
    dead_letters: Vec<DeadLetterRow>,
    /// One span per traced event, ended once ClickHouse has its row.
    spans: Vec<tracing::Span>,
    /// Next offset per (topic, partition).
    offsets: HashMap<(String, i32), i64>,
}

impl Batch {
    fn len(&self) -> usize {
        self.events.len() + self.aggregates.len() + self.dead_letters.len()
    }
}

impl Aggregator {
    pub async fn build(cfg: AggregatorConfig, sink: ClickHouseSink) -> anyhow::Result<Self> {
        // Counters an alert reads exist from the start, at 0.
        metrics::counter!("weir_aggregator_insert_failures_total").increment(0);
        metrics::counter!("weir_aggregator_query_unauthorized_total").increment(0);
        for outcome in ["counted", "already_counted"] {
            metrics::counter!("weir_aggregator_late_events_total", "outcome" => outcome)
                .increment(0);
        }
        let t = &cfg.topics;
        for topic in [&t.clean, &t.aggregates, &t.late, &t.invalid] {
            metrics::counter!("weir_aggregator_undecodable_total", "topic" => topic.clone())
                .increment(0);
        }
        anyhow::ensure!(!cfg.instance_id.is_empty(), "instance_id must not be empty");
        let session_timeout = cfg.session_timeout_ms.to_string();
        let consumer: StreamConsumer = cfg
            .kafka
            .client_config(&[
                ("group.id", &cfg.group_id),
                ("group.instance.id", &cfg.instance_id),
                ("session.timeout.ms", &session_timeout),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
                // Bigger fetches: the broker's per-fetch overhead bounded the read rate.
                ("max.partition.fetch.bytes", "8388608"),
            ])
            .create()?;
        let codec = Codec::new(
            &cfg.schema_registry_url,
            &cfg.topics.raw,
            &cfg.topics.aggregates,
        )?;
        let t = &cfg.topics;
        consumer.subscribe(&[&t.clean, &t.aggregates, &t.late, &t.invalid])?;
        Ok(Self {
            cfg,
            consumer,
            codec,
            sink,
        })
    }

    /// Runs until `shutdown`; `ready` is this consumer's component of the
    /// stage's health: not ready while its inserts fail.
    pub async fn run(self, ready: Component, shutdown: CancellationToken) -> anyhow::Result<()> {
        ready.ready();
        // While one batch is inserted and committed, the next is read: the
        // two waits overlap. At most two batches are held, so while
        // ClickHouse is down the aggregator stops reading after one more.
        let mut pending: Option<Batch> = None;
        loop {
            let flush = async {
                if let Some(batch) = pending.take() {
                    self.flush(batch, &ready, &shutdown).await;
                }
            };
            let (batch, ()) = tokio::join!(self.read_batch(&shutdown), flush);
            // A batch read by a consumer that failed fatally is not committed:
            // whoever takes the partitions reads it again.
            let batch = batch.inspect_err(|e| ready.not_ready(e.to_string()))?;
            if shutdown.is_cancelled() {
                // What was read is inserted and committed before the exit.
                self.flush(batch, &ready, &shutdown).await;
                break;
            }
            pending = Some(batch);
        }
        ready.not_ready("stopped");
        tracing::info!("aggregator stopped");
        Ok(())
    }

    /// Reads until the batch is full, its interval is up, or shutdown; fails
    /// only when the consumer can read nothing more.
    async fn read_batch(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Batch, weir_core::kafka::FatalConsumerError> {
        let mut batch = Batch::default();
        let interval = Duration::from_millis(self.cfg.clickhouse.batch_interval_ms);
        let deadline = tokio::time::Instant::now() + interval;
        while batch.len() < self.cfg.clickhouse.batch_rows {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = tokio::time::timeout_at(deadline, self.consumer.recv()) => match r {
                    Err(_) => break,
                    Ok(Err(e)) => { weir_core::kafka::consumer_error(e)?; continue; }
                    Ok(Ok(m)) => m.detach(),
                },
            };
            self.add(&mut batch, msg, shutdown).await;
        }
        Ok(batch)
    }

    async fn add(&self, batch: &mut Batch, msg: OwnedMessage, shutdown: &CancellationToken) {
        let topic = msg.topic().to_string();
        batch
            .offsets
            .insert((topic.clone(), msg.partition()), msg.offset() + 1);
        if topic == self.cfg.topics.late || topic == self.cfg.topics.invalid {
            let row = self.dead_letter(&msg, topic == self.cfg.topics.late).await;
            batch.dead_letters.push(row);
            return;
        }
        if topic == self.cfg.topics.clean && weir_core::telemetry::traces_exported() {
            if let Some(tp) = Header::TraceParent.read(msg.headers()) {
                let span = tracing::info_span!(
                    "store_event",
                    partition = msg.partition(),
                    offset = msg.offset()
                );
                trace_context::join(&span, Some(tp));
                batch.spans.push(span);
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = if topic == self.cfg.topics.clean {
                self.codec.decode_event(msg.payload()).await.map(|e| {
                    let mut row = EventRow::new(e, msg.partition(), msg.offset());
                    row.late = Header::Late.read(msg.headers()).is_some() as u8;
                    batch.events.push(row)
                })
            } else {
                self.codec
                    .decode_aggregate(msg.payload())
                    .await
                    .map(|a| batch.aggregates.push(a.into()))
            };
            match result {
                Ok(()) => return,
                Err(CodecError::Invalid(reason)) => {
                    // The processor wrote these; an undecodable one is a bug, not data to retry forever.
                    metrics::counter!("weir_aggregator_undecodable_total", "topic" => topic.clone()).increment(1);
                    tracing::error!(%topic, partition = msg.partition(), offset = msg.offset(), %reason, "skipping undecodable record");
                    return;
                }
                Err(e @ CodecError::Unavailable(_)) => {
                    tracing::warn!(error = %e, "retrying decode");
                    if shutdown.is_cancelled() {
                        batch.offsets.remove(&(topic, msg.partition()));
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Records behind the end of the assigned partitions, from the broker's
    /// end offsets as of the last fetch (no request is made).
    fn export_lag(&self) {
        let (Ok(assigned), Ok(positions)) = (self.consumer.assignment(), self.consumer.position())
        else {
            return;
        };
        let mut lag = 0;
        for e in assigned.elements() {
            let at = positions
                .find_partition(e.topic(), e.partition())
                .and_then(|p| p.offset().to_raw());
            let end = weir_core::kafka::cached_end_offset(
                self.consumer.client(),
                e.topic(),
                e.partition(),
            );
            if let (Some(at), Some(high)) = (at.filter(|o| *o >= 0), end) {
                lag += (high - at).max(0);
            }
        }
        metrics::gauge!("weir_aggregator_consumer_lag", "consumer" => self.cfg.instance_id.clone())
            .set(lag as f64);
    }

    /// A dead-lettered record as a row. Its reason is the processor's header;
    /// a late record's payload is the original event, decoded for its name.
    async fn dead_letter(&self, msg: &OwnedMessage, late: bool) -> DeadLetterRow {
        let header = if late { Header::Reason } else { Header::Error };
        let name = if late {
            match self.codec.decode_event(msg.payload()).await {
                Ok(e) => e.name,
                Err(_) => String::new(),
            }
        } else {
            String::new()
        };
        DeadLetterRow {
            kind: if late { "late" } else { "invalid" },
            reason: header.read(msg.headers()).unwrap_or_default().to_string(),
            kafka_partition: msg.partition() as u32,
            kafka_offset: msg.offset() as u64,
            dead_lettered_at: msg
                .timestamp()
                .to_millis()
                .unwrap_or_else(weir_core::event::now_ms),
            event_id: msg
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            name,
        }
    }

    /// Inserts the batch, retrying until ClickHouse takes it, then commits.
    #[tracing::instrument(name = "clickhouse_insert", skip_all, fields(events = batch.events.len(), aggregates = batch.aggregates.len()))]
    async fn flush(&self, batch: Batch, ready: &Component, shutdown: &CancellationToken) {
        if batch.offsets.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            let started = std::time::Instant::now();
            let result = async {
                let admitted = store_batch(&self.sink, &batch.events, &batch.aggregates).await?;
                self.sink.insert_dead_letters(&batch.dead_letters).await?;
                anyhow::Ok(admitted)
            }
            .await;
            match result {
                Ok(admitted) => {
                    metrics::histogram!("weir_aggregator_insert_seconds")
                        .record(started.elapsed().as_secs_f64());
                    record_late(&admitted);
                    metrics::counter!("weir_aggregator_rows_inserted_total", "table" => "events")
                        .increment(admitted.store.len() as u64);
                    metrics::counter!("weir_aggregator_rows_inserted_total", "table" => "event_counts_1m").increment(batch.aggregates.len() as u64);
                    metrics::counter!("weir_aggregator_rows_inserted_total", "table" => "dead_letters").increment(batch.dead_letters.len() as u64);
                    ready.ready();
                    break;
                }
                Err(e) => {
                    metrics::counter!("weir_aggregator_insert_failures_total").increment(1);
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "ClickHouse insert failed; holding the batch");
                    ready.not_ready("ClickHouse inserts fail (see the log)");
                    if shutdown.is_cancelled() {
                        // Not committed, so the next start reads these records again.
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), next) in &batch.offsets {
            if let Err(e) = tpl.add_partition_offset(topic, *p, Offset::Offset(*next)) {
                tracing::warn!(error = %e, "bad offset");
            }
        }
        self.export_lag();
        // A failed commit (say, during a rebalance) is safe: the rows are re-read and replace themselves.
        if let Err(e) = tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync))
        {
            tracing::warn!(error = %e, "offset commit failed; the batch will be re-read and re-inserted idempotently");
        }
    }
}

/// The late lane's metrics for a stored batch: how many late events it
/// counted or found counted, and each counted one's correction lag, from
/// ingest's acknowledgement (`received_at`) until now, when ClickHouse
/// counts it.
fn record_late(admitted: &Admitted<'_>) {
    metrics::counter!("weir_aggregator_late_events_total", "outcome" => "counted")
        .increment(admitted.counted_late.len() as u64);
    metrics::counter!("weir_aggregator_late_events_total", "outcome" => "already_counted")
        .increment(admitted.already_counted as u64);
    let now = weir_core::event::now_ms();
    for row in &admitted.counted_late {
        let lag_ms = now.saturating_sub(row.received_at).max(0);
        metrics::histogram!("weir_aggregator_late_correction_lag_seconds")
            .record(lag_ms as f64 / 1000.0);
    }
}
