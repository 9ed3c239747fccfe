//! The archiver's consume loop: read `events.clean` (read_committed), keep
//! each partition's records since its checkpoint, and write them as part
//! files once `roll.max_events` are buffered or the oldest has waited
//! `roll.max_interval_ms` (see `writer` and `checkpoint`). While the store
//! fails, the same ranges are retried with backoff and nothing new is
//! read. The group offset is committed after each write, for the lag.

use crate::checkpoint::{self, Checkpoint};
use crate::compaction::Leader;
use crate::config::ArchiverConfig;
use crate::record::ArchivedEvent;
use crate::store::ArchiveStore;
use crate::writer::{self, Range};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use weir_core::codec::{Codec, CodecError};
use weir_core::headers::Header;
use weir_core::health::Component;

/// A change of this consumer's partitions, seen by the loop after a `recv`.
#[derive(Debug)]
enum Change {
    Revoked(Vec<i32>),
    Assigned(Vec<i32>),
}

/// Hears rebalances: the loop drops what it buffered for partitions that
/// move, and the compactor runs where partition 0 is.
struct ArchiverContext {
    topic: String,
    changes: Arc<Mutex<Vec<Change>>>,
    leader: Leader,
}

impl ArchiverContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for ArchiverContext {}

impl ConsumerContext for ArchiverContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let ps = self.partitions(tpl);
            if ps.contains(&0) {
                self.leader.set(false);
            }
            tracing::info!(partitions = ?ps, "partitions revoked");
            self.changes
                .lock()
                .expect("changes")
                .push(Change::Revoked(ps));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let ps = self.partitions(tpl);
            if ps.contains(&0) {
                self.leader.set(true);
            }
            tracing::info!(partitions = ?ps, "partitions assigned");
            self.changes
                .lock()
                .expect("changes")
                .push(Change::Assigned(ps));
        }
    }
}

/// What is buffered for one partition: records `[first, end)`.
#[derive(Debug)]
struct Buffer {
    first: i64,
    end: i64,
    /// A pending range to redo exactly: `[first, redo_end)`.
    redo_end: Option<i64>,
    events: Vec<ArchivedEvent>,
}

pub struct Archiver {
    cfg: ArchiverConfig,
    consumer: StreamConsumer<ArchiverContext>,
    codec: Codec,
    store: ArchiveStore,
    changes: Arc<Mutex<Vec<Change>>>,
    buffers: BTreeMap<i32, Buffer>,
    /// When the oldest buffered record arrived.
    opened: Option<Instant>,
    buffered: usize,
}

impl Archiver {
    pub fn build(cfg: ArchiverConfig, store: ArchiveStore, leader: Leader) -> anyhow::Result<Self> {
        for name in [
            "weir_archiver_write_failures_total",
            "weir_archiver_undecodable_total",
            "weir_archiver_ranges_redone_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        anyhow::ensure!(!cfg.instance_id.is_empty(), "instance_id must not be empty");
        anyhow::ensure!(
            cfg.roll.max_events >= 1,
            "roll.max_events must be at least 1"
        );
        let changes = Arc::new(Mutex::new(Vec::new()));
        let context = ArchiverContext {
            topic: cfg.topics.clean.clone(),
            changes: changes.clone(),
            leader,
        };
        let session_timeout = cfg.session_timeout_ms.to_string();
        let consumer: StreamConsumer<ArchiverContext> = cfg
            .kafka
            .client_config(&[
                ("group.id", &cfg.group_id),
                ("group.instance.id", &cfg.instance_id),
                ("session.timeout.ms", &session_timeout),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
                ("max.partition.fetch.bytes", "8388608"),
            ])
            .create_with_context(context)?;
        consumer.subscribe(&[&cfg.topics.clean])?;
        let codec = Codec::new(
            &cfg.schema_registry_url,
            &cfg.topics.raw,
            &cfg.topics.aggregates,
        )?;
        Ok(Self {
            cfg,
            consumer,
            codec,
            store,
            changes,
            buffers: BTreeMap::new(),
            opened: None,
            buffered: 0,
        })
    }

    /// Runs until `shutdown`, then writes what it holds.
    pub async fn run(
        mut self,
        ready: Component,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        ready.ready();
        let interval = Duration::from_millis(self.cfg.roll.max_interval_ms);
        loop {
            let deadline = self
                .opened
                .map(|t| tokio::time::Instant::from_std(t + interval))
                .unwrap_or_else(|| tokio::time::Instant::now() + interval);
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = tokio::time::timeout_at(deadline, self.consumer.recv()) => r.map(|m| m.map(|m| m.detach())),
            };
            self.apply_changes();
            match msg {
                Err(_) => {} // the interval is up
                // Nothing read since the last checkpoint is lost: it is read
                // again by whoever takes the partitions.
                Ok(Err(e)) => weir_core::kafka::consumer_error(e)?,
                Ok(Ok(m)) => self.add(&m, &ready, &shutdown).await,
            }
            let due = self.opened.is_some_and(|t| t.elapsed() >= interval);
            if self.buffered >= self.cfg.roll.max_events || due {
                self.flush_all(&ready, &shutdown).await;
            }
            self.export_lag();
        }
        self.flush_all(&ready, &shutdown).await;
        ready.not_ready("stopped");
        tracing::info!("archiver stopped");
        Ok(())
    }

    /// Drops the buffers of partitions that moved: their records are read
    /// again, from the checkpoint, by whoever holds them now.
    fn apply_changes(&mut self) {
        let changes = std::mem::take(&mut *self.changes.lock().expect("changes"));
        for c in changes {
            let (Change::Revoked(ps) | Change::Assigned(ps)) = c;
            for p in ps {
                if let Some(b) = self.buffers.remove(&p) {
                    self.buffered -= b.events.len();
                }
            }
        }
        if self.buffers.values().all(|b| b.events.is_empty()) {
            self.opened = None;
        }
    }

    async fn add(&mut self, m: &OwnedMessage, ready: &Component, shutdown: &CancellationToken) {
        let (p, offset) = (m.partition(), m.offset());
        if !self.buffers.contains_key(&p) {
            let Some(cp) = self.load_checkpoint(p, ready, shutdown).await else {
                return;
            };
            let start = cp.map_or(offset, |c| c.next);
            self.buffers.insert(
                p,
                Buffer {
                    first: start,
                    end: start,
                    redo_end: cp.and_then(|c| c.pending_end),
                    events: Vec::new(),
                },
            );
            if let Some(end) = cp.and_then(|c| c.pending_end) {
                metrics::counter!("weir_archiver_ranges_redone_total").increment(1);
                tracing::info!(
                    partition = p,
                    first = start,
                    end,
                    "redoing a range a crash left pending"
                );
            }
            if offset < start {
                // The group offset is behind the archive's checkpoint (a crash
                // between the two): jump to where the archive is.
                if let Err(e) = self.consumer.seek(
                    &self.cfg.topics.clean,
                    p,
                    Offset::Offset(start),
                    Duration::from_secs(5),
                ) {
                    tracing::debug!(error = %e, partition = p, "seek failed; skipping to the checkpoint instead");
                }
                return;
            }
        }
        let buf = self.buffers.get_mut(&p).expect("initialised above");
        if offset < buf.end {
            return; // read before a seek, or archived already
        }
        if buf.redo_end.is_some_and(|end| offset >= end) {
            // The pending range is complete (its last records may be gone).
            self.flush_redo(p, ready, shutdown).await;
        }
        let event = loop {
            match self.codec.decode_event(m.payload()).await {
                Ok(e) => break Some(e),
                Err(CodecError::Invalid(reason)) => {
                    metrics::counter!("weir_archiver_undecodable_total").increment(1);
                    tracing::error!(partition = p, offset, %reason, "skipping an undecodable record");
                    break None;
                }
                Err(e @ CodecError::Unavailable(_)) => {
                    tracing::warn!(error = %e, "retrying decode");
                    if shutdown.is_cancelled() {
                        return; // the range ends before this record
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let buf = self.buffers.get_mut(&p).expect("initialised above");
        buf.end = offset + 1;
        if let Some(event) = event {
            buf.events.push(ArchivedEvent {
                event,
                late: Header::Late.read(m.headers()).is_some(),
                kafka_partition: p,
                kafka_offset: offset,
            });
            self.buffered += 1;
            self.opened.get_or_insert_with(Instant::now);
        }
        if buf.redo_end == Some(buf.end) {
            self.flush_redo(p, ready, shutdown).await;
        }
    }

    /// The partition's checkpoint, retried while the store fails; `None`
    /// on shutdown.
    async fn load_checkpoint(
        &self,
        p: i32,
        ready: &Component,
        shutdown: &CancellationToken,
    ) -> Option<Option<Checkpoint>> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match checkpoint::load(&self.store, &self.cfg.topics.clean, p).await {
                Ok(cp) => return Some(cp),
                Err(e) => {
                    ready.not_ready(format!("the object store fails: {e:#}"));
                    tracing::warn!(error = %format!("{e:#}"), partition = p, "cannot read the checkpoint; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    async fn flush_redo(&mut self, p: i32, ready: &Component, shutdown: &CancellationToken) {
        let Some(buf) = self.buffers.get_mut(&p) else {
            return;
        };
        let Some(end) = buf.redo_end.take() else {
            return;
        };
        buf.end = buf.end.max(end);
        let range = take_range(p, buf);
        self.buffered -= range.events.len();
        let end = range.end;
        if !self.write(range, ready, shutdown).await {
            // Shutdown before it was written: it stays pending for the next start.
            return;
        }
        self.commit(&[(p, end)]);
    }

    /// Writes every partition's buffer, then commits the group offsets.
    async fn flush_all(&mut self, ready: &Component, shutdown: &CancellationToken) {
        let ps: Vec<i32> = self.buffers.keys().copied().collect();
        let mut done = Vec::new();
        for p in ps {
            let buf = self.buffers.get_mut(&p).expect("listed");
            if buf.end == buf.first || buf.redo_end.is_some() {
                continue; // nothing new, or a redo still reading its range
            }
            let range = take_range(p, buf);
            self.buffered -= range.events.len();
            let end = range.end;
            if self.write(range, ready, shutdown).await {
                done.push((p, end));
            }
        }
        self.opened = None;
        self.commit(&done);
    }

    /// Writes a range, retrying while the store fails; false on shutdown
    /// before it was written.
    async fn write(&self, range: Range, ready: &Component, shutdown: &CancellationToken) -> bool {
        let mut backoff = Duration::from_millis(200);
        loop {
            let started = Instant::now();
            match writer::write_range(&self.store, &self.cfg.topics.clean, &range).await {
                Ok(w) => {
                    metrics::histogram!("weir_archiver_write_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!("weir_archiver_files_written_total", "kind" => "part")
                        .increment(w.files as u64);
                    metrics::counter!("weir_archiver_bytes_written_total", "kind" => "part")
                        .increment(w.bytes as u64);
                    metrics::counter!("weir_archiver_events_archived_total")
                        .increment(w.events as u64);
                    ready.ready();
                    return true;
                }
                Err(e) => {
                    metrics::counter!("weir_archiver_write_failures_total").increment(1);
                    ready.not_ready(format!("the object store fails: {e:#}"));
                    tracing::warn!(error = %format!("{e:#}"), partition = range.partition, first = range.first, end = range.end, retry_in_ms = backoff.as_millis() as u64, "archive write failed; holding the range");
                }
            }
            if shutdown.is_cancelled() {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// The group offsets: for lag monitoring, never read back (the
    /// checkpoint is where a restart resumes).
    fn commit(&self, done: &[(i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for (p, end) in done {
            let _ = tpl.add_partition_offset(&self.cfg.topics.clean, *p, Offset::Offset(*end));
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "group offset commit failed (lag only)");
            }
        }
    }

    /// Records of the held partitions not archived yet, from the broker's
    /// end offsets as of the last fetch.
    fn export_lag(&self) {
        let mut lag = 0;
        for (p, buf) in &self.buffers {
            if let Some(high) = weir_core::kafka::cached_end_offset(
                self.consumer.client(),
                &self.cfg.topics.clean,
                *p,
            ) {
                lag += (high - buf.first).max(0);
            }
        }
        metrics::gauge!("weir_archiver_consumer_lag", "consumer" => self.cfg.instance_id.clone())
            .set(lag as f64);
    }
}

/// Takes the buffered range out of `buf`, which then starts where it ended.
fn take_range(p: i32, buf: &mut Buffer) -> Range {
    let range = Range {
        partition: p,
        first: buf.first,
        end: buf.end,
        events: std::mem::take(&mut buf.events),
    };
    buf.first = buf.end;
    range
}
