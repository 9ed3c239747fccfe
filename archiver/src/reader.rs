//! Reading the archive as a reader should: per hour, the manifest first,
//! then the listing, then the live files (see `manifest`). The compactor,
//! `backfill` and the tests read through here.

use crate::format;
use crate::layout::{self, Format, HOUR_MS};
use crate::manifest::Manifest;
use crate::record::ArchivedEvent;
use crate::store::ArchiveStore;
use object_store::path::Path;
use object_store::ObjectMeta;
use std::collections::HashSet;

/// An hour's manifest (empty when it has none yet).
pub async fn manifest(store: &ArchiveStore, dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.clone().join(layout::MANIFEST);
    match store.get(&path).await? {
        None => Ok(Manifest::default()),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| anyhow::anyhow!("manifest {path} is unreadable: {e}")),
    }
}

/// An hour's directory as a reader sees it at one moment.
pub struct HourListing {
    pub manifest: Manifest,
    /// Every object in the directory.
    pub objects: Vec<ObjectMeta>,
}

impl HourListing {
    pub async fn read(store: &ArchiveStore, dir: &Path) -> anyhow::Result<Self> {
        // The manifest before the listing: see `manifest`.
        let manifest = manifest(store, dir).await?;
        let objects = store.list_dir(dir).await?;
        Ok(Self { manifest, objects })
    }

    /// The live data files.
    pub fn live(&self) -> Vec<&ObjectMeta> {
        let names: Vec<&str> = self
            .objects
            .iter()
            .filter_map(|o| o.location.filename())
            .collect();
        let live: HashSet<&str> = self.manifest.live(names).into_iter().collect();
        let mut out: Vec<&ObjectMeta> = self
            .objects
            .iter()
            .filter(|o| o.location.filename().is_some_and(|n| live.contains(n)))
            .collect();
        out.sort_by(|a, b| a.location.cmp(&b.location));
        out
    }
}

/// The events of one data file.
pub async fn read_file(store: &ArchiveStore, path: &Path) -> anyhow::Result<Vec<ArchivedEvent>> {
    let format = path
        .filename()
        .and_then(Format::of_name)
        .ok_or_else(|| anyhow::anyhow!("{path} is not a data file"))?;
    let Some(bytes) = store.get(path).await? else {
        anyhow::bail!(
            "{path} disappeared while it was read (a reader slower than compaction.grace_ms?)"
        );
    };
    format::decode(format, bytes).map_err(|e| anyhow::anyhow!("{path}: {e:#}"))
}

/// The tenants that have an archive (from the `tenant=` directories).
pub async fn tenant_dirs(store: &ArchiveStore) -> anyhow::Result<Vec<Path>> {
    Ok(store
        .list_prefixes(&store.root)
        .await?
        .into_iter()
        .filter(|p| p.filename().is_some_and(|n| n.starts_with("tenant=")))
        .collect())
}

/// The end of year 9999, epoch ms.
const LAST_MS: i64 = 253_402_300_800_000;

/// Every archived event with a timestamp in `[from_ms, to_ms)`, each once:
/// the live files of every tenant's hours of the range, deduplicated by
/// (tenant, event id), first copy by position kept.
pub async fn read_range(
    store: &ArchiveStore,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<Vec<ArchivedEvent>> {
    // Past year 9999 a date has no four-digit name; nothing is stored there.
    let to_ms = to_ms.min(LAST_MS);
    let mut out = Vec::new();
    if from_ms >= to_ms {
        return Ok(out);
    }
    // The store's listing says which dates and hours exist, so a range of
    // years costs what the archive holds, not one request per hour. ISO
    // dates order as strings do.
    let (first_date, _) = layout::date_and_hour(from_ms);
    let (last_date, _) = layout::date_and_hour(to_ms - 1);
    for tenant_dir in tenant_dirs(store).await? {
        for date_dir in store.list_prefixes(&tenant_dir).await? {
            let date = date_dir.filename().and_then(|n| n.strip_prefix("date="));
            if !date.is_some_and(|d| (first_date.as_str()..=last_date.as_str()).contains(&d)) {
                continue;
            }
            for dir in store.list_prefixes(&date_dir).await? {
                if !hour_of(&dir).is_some_and(|h| h + HOUR_MS > from_ms && h < to_ms) {
                    continue;
                }
                let listing = HourListing::read(store, &dir).await?;
                for file in listing.live() {
                    out.extend(
                        read_file(store, &file.location)
                            .await?
                            .into_iter()
                            .filter(|e| (from_ms..to_ms).contains(&e.event.timestamp)),
                    );
                }
            }
        }
    }
    Ok(dedup(out))
}

/// Keeps the first copy of each (tenant, event id), in (partition, offset)
/// order: a broker that shows aborted records to `read_committed` readers,
/// or a late resend of a counted event, can put an id in the archive twice.
pub fn dedup(mut events: Vec<ArchivedEvent>) -> Vec<ArchivedEvent> {
    events.sort_by_key(|e| (e.kafka_partition, e.kafka_offset));
    let mut seen = HashSet::new();
    events.retain(|e| seen.insert((e.event.tenant.clone(), e.event.event_id.clone())));
    events
}

/// The hour of an hour directory's `date=`/`hour=` parts, epoch ms.
pub fn hour_of(dir: &Path) -> Option<i64> {
    let parts: Vec<String> = dir.parts().map(|p| p.as_ref().to_string()).collect();
    let date = parts.iter().rev().find_map(|p| p.strip_prefix("date="))?;
    let hour: i64 = parts
        .iter()
        .rev()
        .find_map(|p| p.strip_prefix("hour="))?
        .parse()
        .ok()?;
    let mut ymd = date.split('-').map(|n| n.parse::<i32>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let month = time::Month::try_from(u8::try_from(m).ok()?).ok()?;
    let day = time::Date::from_calendar_date(y, month, u8::try_from(d).ok()?).ok()?;
    Some(day.midnight().assume_utc().unix_timestamp() * 1000 + hour * HOUR_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::layout::HourKey;

    const DAY: i64 = 24 * HOUR_MS;

    /// Three events in each of three hours, on two days two years apart.
    async fn archive() -> (ArchiveStore, [i64; 3]) {
        let store = ArchiveStore::build(&StoreConfig {
            url: "memory:///".into(),
            ..Default::default()
        })
        .unwrap();
        let hours = [
            20_000 * DAY + 5 * HOUR_MS,
            20_000 * DAY + 6 * HOUR_MS,
            20_730 * DAY,
        ];
        for (k, hour) in hours.iter().enumerate() {
            let mut events = crate::format::tests::sample(3);
            for (i, e) in events.iter_mut().enumerate() {
                e.event.event_id = format!("h{k}-{i}");
                e.event.timestamp = hour + i as i64 * 1_000;
            }
            let refs: Vec<&ArchivedEvent> = events.iter().collect();
            let name = layout::part_name(0, k as i64 * 3, k as i64 * 3 + 3, Format::Parquet);
            let dir = HourKey::of("acme", *hour).dir(&store.root);
            store
                .put(
                    &dir.join(name),
                    crate::format::encode(Format::Parquet, &refs).unwrap(),
                )
                .await
                .unwrap();
        }
        (store, hours)
    }

    fn ids(events: &[ArchivedEvent]) -> Vec<&str> {
        let mut ids: Vec<&str> = events.iter().map(|e| e.event.event_id.as_str()).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn a_range_reads_the_events_of_its_hours_only() {
        let (store, [h0, h1, _]) = archive().await;
        let one_hour = read_range(&store, h1, h1 + HOUR_MS).await.unwrap();
        assert_eq!(ids(&one_hour), ["h1-0", "h1-1", "h1-2"]);
        // Mid-hour bounds cut by event time.
        let cut = read_range(&store, h0 + 1_000, h1 + 1_000).await.unwrap();
        assert_eq!(ids(&cut), ["h0-1", "h0-2", "h1-0"]);
        assert!(read_range(&store, h1, h1).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_range_of_millennia_reads_what_the_archive_holds() {
        let (store, _) = archive().await;
        let all = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            read_range(&store, i64::MIN / 2, i64::MAX / 2),
        )
        .await
        .expect("a wide range costs listings, not one request per hour")
        .unwrap();
        assert_eq!(all.len(), 9);
    }
}
