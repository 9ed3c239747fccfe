//! The processor's imperative shell: consume, run the pure core, produce,
//! commit. A record's bytes go in, `routing` says where its copy goes, and
//! the window rows and changelog a commit drains go out; `assignment`
//! restores a partition's state when it is assigned and rewinds on error.
//!
//! One batch is one transaction (`exactly_once`) or one ordered flush. On any
//! failure the batch is aborted, in-memory state dropped, and every assigned
//! partition is re-read from its committed offset and changelog.

use crate::changelog::kafka::state_record;
use crate::config::ProcessorConfig;
use crate::partition::{PartitionState, TimeRules};
use crate::routing::{self, Origin, Output};
use crate::sink::{Mode, OutRecord, OutputSink};
use crate::watermark;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use weir_core::codec::{Codec, CodecError};
use weir_core::headers::Header;
use weir_core::health::Component;
use weir_core::topics::{ensure_topics, TopicSpec};
use weir_core::trace_context;

/// Notes a revocation so the loop drops the batch and the revoked state.
#[derive(Default)]
pub struct RebalanceContext {
    revoked: AtomicBool,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions revoked");
            self.revoked.store(true, Ordering::SeqCst);
        }
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions assigned");
        }
    }
}

/// An assigned partition this instance is processing.
pub(crate) struct Part {
    pub(crate) state: PartitionState,
    /// The next input offset to process.
    pub(crate) next: i64,
    pub(crate) last_input: Instant,
    pub(crate) touched: bool,
}

pub struct Processor {
    pub(crate) cfg: ProcessorConfig,
    pub(crate) rules: TimeRules,
    codec: Codec,
    pub(crate) consumer: StreamConsumer<RebalanceContext>,
    pub(crate) sink: OutputSink,
    /// Writes owner claims to the changelog, outside any transaction.
    pub(crate) claims: FutureProducer,
    /// The output topic of each extra window spec, in order.
    extra_topics: Vec<String>,
    pub(crate) parts: HashMap<i32, Part>,
    pub(crate) batch_len: usize,
}

impl Processor {
    /// Creates topics, registers schemas, picks the commit mode and joins the group.
    pub async fn build(cfg: ProcessorConfig) -> anyhow::Result<Self> {
        // Counters an alert reads exist from the start, at 0.
        metrics::counter!("weir_processor_aborts_total").increment(0);
        cfg.validate()?;
        let t = &cfg.topics;
        let n = cfg.kafka.partitions;
        let outputs =
            [&t.raw, &t.clean, &t.aggregates, &t.late, &t.invalid].map(|name| TopicSpec {
                name,
                partitions: n,
                compacted: false,
            });
        ensure_topics(&cfg.kafka, &outputs).await?;
        let extra: Vec<String> = cfg
            .extra_windows
            .iter()
            .map(|w| cfg.extra_topic(w))
            .collect();
        let extra_specs: Vec<TopicSpec> = extra
            .iter()
            .map(|name| TopicSpec {
                name,
                partitions: n,
                compacted: false,
            })
            .collect();
        ensure_topics(&cfg.kafka, &extra_specs).await?;
        let session_timeout = cfg.session_timeout_ms.to_string();
        let consumer: StreamConsumer<RebalanceContext> = cfg
            .kafka
            .client_config(&[
                // A rebalance moves only the partitions that change owner: an
                // instance that gains partitions keeps the state of those it
                // had. (One that loses some aborts its open batch and restores
                // the rest from their last commit: one commit interval of rework.)
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("session.timeout.ms", &session_timeout),
                ("group.id", &cfg.group_id),
                // Static membership: a restarted instance takes its partitions
                // back at once instead of waiting out the dead member's session.
                ("group.instance.id", &cfg.instance_id),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
            ])
            .create_with_context(RebalanceContext::default())?;
        // The changelog is partitioned like the input: state for input partition p lives in p.
        let raw_partitions = partition_count(&consumer, &t.raw)?;
        let state = [TopicSpec {
            name: &t.state,
            partitions: raw_partitions,
            compacted: true,
        }];
        ensure_topics(&cfg.kafka, &state).await?;
        let state_partitions = partition_count(&consumer, &t.state)?;
        anyhow::ensure!(
            state_partitions >= raw_partitions,
            "{} has {state_partitions} partitions but {} has {raw_partitions}; it needs at least as many",
            t.state,
            t.raw
        );

        let codec = Codec::new(&cfg.schema_registry_url, &t.raw, &t.aggregates)?;
        codec.register().await?;
        let sink = OutputSink::build(&cfg).await?;
        metrics::gauge!("weir_processor_exactly_once").set(if sink.mode() == Mode::ExactlyOnce {
            1.0
        } else {
            0.0
        });
        consumer.subscribe(&[&t.raw])?;
        let rules = cfg.time_rules();
        let claims = cfg
            .kafka
            .client_config(&[("enable.idempotence", "true"), ("acks", "all")])
            .create()?;
        let extra_topics: Vec<String> = cfg
            .extra_windows
            .iter()
            .map(|w| cfg.extra_topic(w))
            .collect();
        Ok(Self {
            cfg,
            rules,
            codec,
            consumer,
            sink,
            claims,
            extra_topics,
            parts: HashMap::new(),
            batch_len: 0,
        })
    }

    pub fn mode(&self) -> Mode {
        self.sink.mode()
    }

    /// Runs until `shutdown`; commits the batch in hand before returning.
    pub async fn run(
        mut self,
        ready: Component,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        ready.ready();
        let interval = Duration::from_millis(self.cfg.commit_interval_ms);
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match self.one_batch(interval, &shutdown).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) if e.is::<weir_core::kafka::FatalConsumerError>() => {
                    // Rewinding cannot help a consumer that reads nothing
                    // more; the open transaction dies with the producer.
                    ready.not_ready(format!("{e:#}"));
                    tracing::error!(error = %format!("{e:#}"), "stopping");
                    return Err(e);
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "batch failed; aborting and rewinding to the last commit");
                    metrics::counter!("weir_processor_aborts_total").increment(1);
                    ready.not_ready(
                        "rewinding to the last commit after a failed batch (see the log)",
                    );
                    if let Err(e) = self.rewind().await {
                        tracing::error!(error = %format!("{e:#}"), "rewind failed");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    ready.ready();
                }
            }
        }
        ready.not_ready("stopped");
        self.sink.flush();
        tracing::info!("processor stopped");
        Ok(())
    }

    /// Reads until the commit interval ends, the batch is full or a rebalance
    /// happens, then commits what was processed.
    async fn one_batch(
        &mut self,
        interval: Duration,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + interval;
        while self.batch_len < self.cfg.max_batch {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = tokio::time::timeout_at(deadline, self.consumer.recv()) => match r {
                    Err(_) => break,
                    // Detached so the borrow of the consumer ends before we use it again.
                    Ok(m) => m.map(|m| m.detach()),
                },
            };
            self.drop_if_revoked()?;
            match msg {
                Ok(m) => self.handle(&m).await?,
                Err(e) => weir_core::kafka::consumer_error(e)?,
            }
        }
        self.drop_if_revoked()?;
        self.commit().await
    }

    /// After a revocation the batch may hold records of partitions this
    /// instance no longer owns: drop it and all state; what is still ours is
    /// restored again from the committed offsets.
    fn drop_if_revoked(&mut self) -> anyhow::Result<()> {
        if self
            .consumer
            .context()
            .revoked
            .swap(false, Ordering::SeqCst)
        {
            self.sink.abort()?;
            self.parts.clear();
            self.batch_len = 0;
        }
        Ok(())
    }

    async fn handle(&mut self, msg: &OwnedMessage) -> anyhow::Result<()> {
        let p = msg.partition();
        let offset = msg.offset();
        if !self.parts.contains_key(&p) {
            let part = self.restore(p).await?;
            let next = part.next;
            self.parts.insert(p, part);
            if offset != next {
                tracing::info!(
                    partition = p,
                    at = offset,
                    committed = next,
                    "seeking to the committed offset"
                );
                let timeout = Duration::from_secs(10);
                self.consumer
                    .seek(&self.cfg.topics.raw, p, Offset::Offset(next), timeout)?;
                return Ok(());
            }
        }
        let part = self.parts.get_mut(&p).expect("restored above");
        if offset < part.next {
            return Ok(()); // already processed before a rewind
        }
        part.last_input = Instant::now();
        let topics = &self.cfg.topics;
        let source = format!("{}/{p}/{offset}", topics.raw);
        // With traces exported, the record gets a span in its caller's trace
        // and its copies carry that span onward; otherwise every copy keeps
        // the caller's context unchanged.
        let incoming = Header::TraceParent.read(msg.headers());
        let span = match incoming {
            Some(_) if weir_core::telemetry::traces_exported() => {
                let span = tracing::info_span!(
                    "process_event",
                    partition = p,
                    offset,
                    verdict = tracing::field::Empty
                );
                trace_context::join(&span, incoming);
                span
            }
            _ => tracing::Span::none(),
        };
        let traceparent = trace_context::outgoing(&span, incoming);
        let decoded = match self.codec.decode_event(msg.payload()).await {
            Ok(event) => Ok(event),
            Err(CodecError::Invalid(reason)) => {
                tracing::warn!(partition = p, offset, %reason, "poison record sent to the invalid topic");
                Err(reason)
            }
            Err(e @ CodecError::Unavailable(_)) => return Err(e.into()),
        };
        let origin = Origin {
            source: &source,
            traceparent: traceparent.as_deref(),
        };
        let routed = routing::route(
            &mut part.state,
            offset,
            decoded.as_ref().map_err(String::as_str),
            origin,
        );
        part.next = offset + 1;
        part.touched = true;
        span.record("verdict", routed.verdict);
        metrics::counter!("weir_processor_events_total", "verdict" => routed.verdict).increment(1);
        for route in routed.routes {
            let topic = match route.to {
                Output::Clean => &topics.clean,
                Output::Late => &topics.late,
                Output::Invalid => &topics.invalid,
            };
            let key = route
                .key
                .unwrap_or_else(|| msg.key().map(<[u8]>::to_vec).unwrap_or_default());
            let out = OutRecord {
                topic: topic.clone(),
                partition: None,
                key,
                payload: msg.payload().map(<[u8]>::to_vec),
                headers: route.headers.to_kafka(),
            };
            self.sink.send_output(out).await?;
        }
        self.batch_len += 1;
        Ok(())
    }

    #[tracing::instrument(name = "commit_batch", skip_all, fields(records = self.batch_len, mode = self.sink.mode().as_str()))]
    async fn commit(&mut self) -> anyhow::Result<()> {
        if self.batch_len == 0 && !self.parts.values().any(|p| p.touched) {
            self.export_gauges();
            return Ok(());
        }
        let started = Instant::now();
        let mut offsets = TopicPartitionList::new();
        let topics = self.cfg.topics.clone();
        let mut aggregates = vec![];
        let mut state = vec![];
        for (&p, part) in &self.parts {
            if let Some(e) = part.state.dedup_failure() {
                anyhow::bail!("partition {p}: {e}");
            }
        }
        for (&p, part) in self.parts.iter_mut().filter(|(_, part)| part.touched) {
            part.touched = false;
            offsets.add_partition_offset(&topics.raw, p, Offset::Offset(part.next))?;
            let drained = part.state.drain();
            aggregates.extend(
                drained
                    .aggregates
                    .into_iter()
                    .map(|a| (topics.aggregates.clone(), a)),
            );
            aggregates.extend(
                drained
                    .extra_aggregates
                    .into_iter()
                    .map(|(spec, a)| (self.extra_topics[spec - 1].clone(), a)),
            );
            state.extend(drained.changelog.into_iter().map(|r| (p, r)));
        }
        for (topic, agg) in aggregates {
            let payload = self.codec.encode_aggregate_to(&topic, &agg).await?;
            self.sink
                .send_output(OutRecord {
                    topic,
                    partition: None,
                    key: agg.kafka_key(),
                    payload: Some(payload),
                    headers: OwnedHeaders::new(),
                })
                .await?;
        }
        for (p, r) in state {
            self.sink
                .send_state(state_record(&topics.state, p, r))
                .await?;
        }
        self.sink.commit(&self.consumer, &offsets).await?;
        for part in self.parts.values_mut() {
            part.state.changelog_committed();
        }
        self.batch_len = 0;
        metrics::counter!("weir_processor_commits_total").increment(1);
        metrics::histogram!("weir_processor_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        self.export_gauges();
        Ok(())
    }

    fn export_gauges(&self) {
        let now = Instant::now();
        let idle = Duration::from_millis(self.cfg.idle_partition_timeout_ms);
        if let Some(wm) = watermark::combined(
            self.parts
                .values()
                .map(|p| (p.state.watermark(), p.last_input)),
            now,
            idle,
        ) {
            metrics::gauge!("weir_processor_watermark_ms").set(wm as f64);
        }
        let keys: usize = self.parts.values().map(|p| p.state.dedup_len()).sum();
        let bytes: usize = self
            .parts
            .values()
            .map(|p| p.state.dedup_heap_bytes())
            .sum();
        let windows: usize = self.parts.values().map(|p| p.state.open_windows()).sum();
        let spilled: usize = self.parts.values().map(|p| p.state.dedup_spilled()).sum();
        metrics::gauge!("weir_processor_dedup_keys").set(keys as f64);
        metrics::gauge!("weir_processor_dedup_spilled_keys").set(spilled as f64);
        metrics::gauge!("weir_processor_dedup_bytes").set(bytes as f64);
        metrics::gauge!("weir_processor_open_windows").set(windows as f64);
        let mut lag = 0;
        for (&p, part) in &self.parts {
            let end = weir_core::kafka::cached_end_offset(
                self.consumer.client(),
                &self.cfg.topics.raw,
                p,
            );
            if let Some(high) = end {
                lag += (high - part.next).max(0);
            }
        }
        metrics::gauge!("weir_processor_consumer_lag").set(lag as f64);
    }
}

fn partition_count<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
) -> anyhow::Result<i32> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let n = md.topics().first().map_or(0, |t| t.partitions().len());
    anyhow::ensure!(n > 0, "topic {topic} has no partitions");
    Ok(n as i32)
}
