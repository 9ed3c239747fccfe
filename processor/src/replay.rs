//! `processor replay-late --from T --to T`: puts the events of `events.late`
//! whose event time is in `[from, to)` back on `events.clean`, marked late,
//! so that the aggregator counts any it has not counted yet.
//!
//! Late events are counted without an operator since the late lane (see
//! `aggregator/src/late.rs`); this is the repair tool for what it could not
//! have seen: events dead-lettered by releases before it, or a late lane
//! rebuilt after a ClickHouse table was lost. It is safe over any range and
//! any number of times, and beside the automatic path: the aggregator counts
//! a late copy only when its `(tenant, event_id)` is not stored yet.

use crate::config::ProcessorConfig;
use crate::window::WindowAssigner;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeSet;
use std::time::Duration;
use weir_core::codec::Codec;
use weir_core::headers::{Header, RecordHeaders};
use weir_core::topic_reader::{read_to_end, Isolation};

/// What a replay did, for the operator.
#[derive(Debug)]
pub struct Summary {
    /// Distinct events read from `events.late`.
    pub late_read: usize,
    /// Of those, the ones in range, put back on `events.clean`.
    pub in_range: usize,
}

/// Reads `events.late` and puts the events in range back, marked late.
pub async fn run(cfg: &ProcessorConfig, from: i64, to: i64) -> anyhow::Result<Summary> {
    cfg.validate()?;
    let codec = Codec::new(
        &cfg.schema_registry_url,
        &cfg.topics.raw,
        &cfg.topics.aggregates,
    )?;
    let kafka = cfg.kafka.clone();
    let topic = cfg.topics.late.clone();
    let records = tokio::task::spawn_blocking(move || read_all(&kafka, &topic)).await??;
    // A late event can be in the topic twice (a batch aborted after writing
    // it stays visible on some brokers); each id is taken once.
    let mut seen = BTreeSet::new();
    let mut late = Vec::with_capacity(records.len());
    let mut kept = Vec::with_capacity(records.len());
    for record in records {
        match codec.decode_event(Some(&record.0)).await {
            Ok(e) => {
                if seen.insert((e.tenant.clone(), e.event_id.clone())) {
                    late.push(e);
                    kept.push(record);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "skipping an undecodable record in the late topic")
            }
        }
    }
    let records = kept;
    let assigner = WindowAssigner::hopping(cfg.window_size_ms, cfg.window_advance_ms);

    let producer: FutureProducer = cfg
        .kafka
        .client_config(&[("enable.idempotence", "true"), ("acks", "all")])
        .create()?;
    let timeout = Duration::from_secs(30);
    let mut in_range = 0;
    for (e, (payload, headers, watermark)) in late.iter().zip(&records) {
        if !(from..to).contains(&e.timestamp) {
            continue;
        }
        in_range += 1;
        let start = assigner.assign(e.timestamp).next().map_or(0, |w| w.start);
        let h = RecordHeaders::new()
            .with_some(Header::TraceParent, headers.as_deref())
            .with(Header::WindowStart, start)
            .with(Header::Late, watermark.as_deref().unwrap_or("0"))
            .with(Header::Replayed, "late");
        let record = FutureRecord::to(&cfg.topics.clean)
            .key(e.event_id.as_bytes())
            .payload(payload)
            .headers(h.to_kafka());
        producer
            .send(record, timeout)
            .await
            .map_err(|(e, _)| anyhow::anyhow!("writing to {}: {e}", cfg.topics.clean))?;
    }
    Ok(Summary {
        late_read: late.len(),
        in_range,
    })
}

/// A record of the late topic: its payload, trace context and the watermark
/// it was late against.
type LateRecord = (Vec<u8>, Option<String>, Option<String>);

/// Every record of `topic` up to its current end (read_committed).
fn read_all(kafka: &weir_core::kafka::KafkaConfig, topic: &str) -> anyhow::Result<Vec<LateRecord>> {
    let mut out = vec![];
    read_to_end(
        kafka,
        "weir-replay-late",
        topic,
        None,
        Isolation::ReadCommitted,
        |m| {
            if let Some(payload) = m.payload() {
                let tp = Header::TraceParent.read(m.headers()).map(str::to_string);
                let wm = Header::Watermark.read(m.headers()).map(str::to_string);
                out.push((payload.to_vec(), tp, wm));
            }
            Ok(())
        },
    )?;
    Ok(out)
}
