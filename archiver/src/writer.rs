//! Writing one range of one partition into the archive, by the protocol of
//! `checkpoint`: pending, part files, dirty markers, done. Every step is
//! safe to redo, so a failed write is simply written again.

use crate::checkpoint::{self, Checkpoint};
use crate::format;
use crate::layout::{self, HourKey};
use crate::record::ArchivedEvent;
use crate::store::ArchiveStore;
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashSet};

/// The records `[first, end)` of one partition, decoded.
#[derive(Debug, Default)]
pub struct Range {
    pub partition: i32,
    pub first: i64,
    pub end: i64,
    pub events: Vec<ArchivedEvent>,
}

/// The part files of a range: one per tenant and hour, each event once.
pub fn group(range: &Range) -> BTreeMap<HourKey, Vec<&ArchivedEvent>> {
    let mut seen = HashSet::new();
    let mut out: BTreeMap<HourKey, Vec<&ArchivedEvent>> = BTreeMap::new();
    for e in &range.events {
        if seen.insert(e.key()) {
            out.entry(e.hour()).or_default().push(e);
        }
    }
    out
}

/// What a written range added, for the metrics.
#[derive(Debug, Default)]
pub struct Written {
    pub files: usize,
    pub bytes: usize,
    pub events: usize,
}

/// Writes `range` of `topic`; on success the partition's checkpoint is `end`.
pub async fn write_range(
    store: &ArchiveStore,
    topic: &str,
    range: &Range,
) -> anyhow::Result<Written> {
    let p = range.partition;
    let groups = group(range);
    if !groups.is_empty() {
        let pending = Checkpoint {
            next: range.first,
            pending_end: Some(range.end),
        };
        checkpoint::save(store, topic, p, pending).await?;
    }
    let name = layout::part_name(p, range.first, range.end, store.format);
    let files: Vec<(HourKey, Vec<u8>, usize)> = groups
        .iter()
        .map(|(key, events)| {
            Ok((
                key.clone(),
                format::encode(store.format, events)?,
                events.len(),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut written = Written::default();
    for (_, bytes, events) in &files {
        written.files += 1;
        written.bytes += bytes.len();
        written.events += events;
    }
    // Parts first, then the markers that send the compactor to their hours.
    futures::stream::iter(files)
        .map(|(key, bytes, _)| {
            let path = key.dir(&store.root).clone().join(name.as_str());
            async move { store.put(&path, bytes).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    futures::stream::iter(groups.keys())
        .map(|key| store.put_marker(key.dirty_marker(&store.root)))
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    let done = Checkpoint {
        next: range.end,
        pending_end: None,
    };
    checkpoint::save(store, topic, p, done).await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::Event;

    fn ev(tenant: &str, id: &str, ts: i64, offset: i64) -> ArchivedEvent {
        ArchivedEvent {
            event: Event::new(tenant, id, "page_view", ts),
            late: false,
            kafka_partition: 2,
            kafka_offset: offset,
        }
    }

    #[test]
    fn a_range_splits_by_tenant_and_hour_and_keeps_each_id_once() {
        let h = layout::HOUR_MS;
        let range = Range {
            partition: 2,
            first: 10,
            end: 16,
            events: vec![
                ev("a", "1", 5, 10),
                ev("a", "2", h + 5, 11),
                ev("b", "3", 5, 12),
                ev("a", "1", 5, 13), // the same event again
                ev("a", "4", h - 1, 14),
            ],
        };
        let g = group(&range);
        let ids = |k: HourKey| {
            g[&k]
                .iter()
                .map(|e| e.event.event_id.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(g.len(), 3);
        assert_eq!(ids(HourKey::of("a", 0)), ["1", "4"]);
        assert_eq!(ids(HourKey::of("a", h)), ["2"]);
        assert_eq!(ids(HourKey::of("b", 0)), ["3"]);
    }
}
