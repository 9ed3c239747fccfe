//! `processor replay-late --from T --to T`: counts dead-lettered events after
//! all, once.
//!
//! A late event's windows are closed, so sending it back to `events.raw`
//! would only dead-letter it again. Instead the command reads the whole of
//! `events.late` and, for every window that a late event with event time in
//! `[from, to)` falls into, emits one correction row per key in a replay lane
//! (`input_partition = REPLAY_LANE`) holding *all* the distinct late events
//! of that window; the query side sums lanes like partitions. The events
//! themselves go to `events.clean`, for the full-history table.
//!
//! Every row is a function of what `events.late` holds, versioned by how far
//! it was read (`emitted_seq`), so a second run, or one over an overlapping
//! range, replaces rows instead of adding to them.

use crate::config::ProcessorConfig;
use crate::window::WindowAssigner;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use weir_core::codec::Codec;
use weir_core::headers::{Header, RecordHeaders};
use weir_core::topic_reader::{read_to_end, Isolation};
use weir_core::{Event, WindowAggregate};

/// The `input_partition` of correction rows: far above any real partition.
pub const REPLAY_LANE: i32 = 1 << 30;

/// The correction rows for the late events in `[from, to)` (event time),
/// each row holding every distinct late event of its window and key. `seq`
/// says how much of `events.late` the rows reflect.
pub fn corrections(
    late: &[Event],
    assigner: &WindowAssigner,
    from: i64,
    to: i64,
    seq: i64,
) -> Vec<WindowAggregate> {
    let affected: BTreeSet<i64> = late
        .iter()
        .filter(|e| (from..to).contains(&e.timestamp))
        .flat_map(|e| assigner.assign(e.timestamp).map(|w| w.start))
        .collect();
    // (window start, tenant, name, channel) → (event ids, users)
    type Key = (i64, String, String, String);
    let mut rows: BTreeMap<Key, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for e in late {
        for w in assigner.assign(e.timestamp) {
            if !affected.contains(&w.start) {
                continue;
            }
            let key = (
                w.start,
                e.tenant.clone(),
                e.name.clone(),
                e.channel.clone().unwrap_or_default(),
            );
            let (ids, users) = rows.entry(key).or_default();
            ids.insert(&e.event_id);
            if let Some(u) = e.user_key() {
                users.insert(u);
            }
        }
    }
    rows.into_iter()
        .map(
            |((start, tenant, name, channel), (ids, users))| WindowAggregate {
                tenant,
                name,
                channel,
                window_start: start,
                window_end: start + assigner.size_ms(),
                input_partition: REPLAY_LANE,
                count: ids.len() as i64,
                users: users.into_iter().map(str::to_string).collect(),
                emitted_seq: seq,
                is_final: true,
            },
        )
        .collect()
}

/// What a replay did, for the operator.
#[derive(Debug)]
pub struct Summary {
    pub late_read: usize,
    pub in_range: usize,
    pub rows: usize,
}

/// Reads `events.late`, writes the corrections and the re-injected events.
pub async fn run(cfg: &ProcessorConfig, from: i64, to: i64) -> anyhow::Result<Summary> {
    cfg.validate()?;
    let codec = Codec::new(
        &cfg.schema_registry_url,
        &cfg.topics.raw,
        &cfg.topics.aggregates,
    )?;
    let kafka = cfg.kafka.clone();
    let topic = cfg.topics.late.clone();
    let (records, seq) = tokio::task::spawn_blocking(move || read_all(&kafka, &topic)).await??;
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
    let rows = corrections(&late, &assigner, from, to, seq);

    let producer: FutureProducer = cfg
        .kafka
        .client_config(&[("enable.idempotence", "true"), ("acks", "all")])
        .create()?;
    let timeout = Duration::from_secs(30);
    let mut in_range = 0;
    for (e, (payload, headers)) in late.iter().zip(&records) {
        if !(from..to).contains(&e.timestamp) {
            continue;
        }
        in_range += 1;
        let start = assigner.assign(e.timestamp).next().map_or(0, |w| w.start);
        let h = RecordHeaders::new()
            .with_some(Header::TraceParent, headers.as_deref())
            .with(Header::WindowStart, start)
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
    for agg in &rows {
        let payload = codec.encode_aggregate(agg).await?;
        let key = agg.kafka_key();
        let record = FutureRecord::to(&cfg.topics.aggregates)
            .key(&key)
            .payload(&payload);
        producer
            .send(record, timeout)
            .await
            .map_err(|(e, _)| anyhow::anyhow!("writing to {}: {e}", cfg.topics.aggregates))?;
    }
    Ok(Summary {
        late_read: late.len(),
        in_range,
        rows: rows.len(),
    })
}

/// A record of the late topic: its payload and trace context.
type LateRecord = (Vec<u8>, Option<String>);

/// Every record of `topic` up to its current end (read_committed), and the
/// sum of the partitions' end offsets: how much of the topic was read.
fn read_all(
    kafka: &weir_core::kafka::KafkaConfig,
    topic: &str,
) -> anyhow::Result<(Vec<LateRecord>, i64)> {
    let mut out = vec![];
    let ends = read_to_end(
        kafka,
        "weir-replay-late",
        topic,
        None,
        Isolation::ReadCommitted,
        |m| {
            if let Some(payload) = m.payload() {
                let tp = Header::TraceParent.read(m.headers()).map(str::to_string);
                out.push((payload.to_vec(), tp));
            }
            Ok(())
        },
    )?;
    Ok((out, ends.values().sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn late(id: &str, ts: i64, user: &str) -> Event {
        Event {
            received_at: ts + 600_000,
            user_id: Some(user.into()),
            channel: Some("web".into()),
            ..Event::new("t", id, "shop.view", ts)
        }
    }

    #[test]
    fn a_window_row_holds_every_late_event_of_the_window_once() {
        let a = WindowAssigner::tumbling(60_000);
        let events = vec![
            late("1", 61_000, "u1"),
            late("1", 61_000, "u1"), // dead-lettered twice: counted once
            late("2", 119_000, "u2"),
            late("3", 125_000, "u3"),
        ];
        // Only 61 s is in range, but its window's row holds 119 s too.
        let rows = corrections(&events, &a, 60_000, 62_000, 7);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].window_start, rows[0].count), (60_000, 2));
        assert_eq!(rows[0].users, ["u1", "u2"]);
        assert_eq!(rows[0].input_partition, REPLAY_LANE);
        // The same input gives the same rows: a second run replaces, never adds.
        assert_eq!(
            rows.iter()
                .map(|r| (r.window_start, r.count))
                .collect::<Vec<_>>(),
            corrections(&events, &a, 60_000, 62_000, 7)
                .iter()
                .map(|r| (r.window_start, r.count))
                .collect::<Vec<_>>()
        );
        // A wider range adds the other window, and the first row is unchanged.
        let wide = corrections(&events, &a, 0, i64::MAX, 8);
        assert_eq!(
            wide.iter()
                .map(|r| (r.window_start, r.count))
                .collect::<Vec<_>>(),
            [(60_000, 2), (120_000, 1)]
        );
    }
}
