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

/// Every archived event with a timestamp in `[from_ms, to_ms)`, each once:
/// the live files of every tenant's hours of the range, deduplicated by
/// (tenant, event id), first copy by position kept.
pub async fn read_range(
    store: &ArchiveStore,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<Vec<ArchivedEvent>> {
    let mut out = Vec::new();
    for tenant_dir in tenant_dirs(store).await? {
        let mut hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
        while hour < to_ms {
            let (date, h) = layout::date_and_hour(hour);
            let dir = tenant_dir
                .clone()
                .join(format!("date={date}"))
                .clone()
                .join(format!("hour={h:02}"));
            let listing = HourListing::read(store, &dir).await?;
            for file in listing.live() {
                out.extend(
                    read_file(store, &file.location)
                        .await?
                        .into_iter()
                        .filter(|e| (from_ms..to_ms).contains(&e.event.timestamp)),
                );
            }
            hour += HOUR_MS;
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
