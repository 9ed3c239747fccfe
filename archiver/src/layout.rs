//! Where everything lives in the archive: the Hive-style partition of each
//! event, the names of data files, and the archiver's own records. Pure
//! naming, no I/O; see docs/archive.md for the layout as readers see it.
//!
//! ```text
//! <root>/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/part-p<P>-<first>-<end>.parquet
//! <root>/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/c-<generation>-<k>.parquet
//! <root>/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>/_manifest.json
//! <root>/_weir/checkpoints/<topic>/p<P>.json
//! <root>/_weir/dirty/tenant=<t>/date=<YYYY-MM-DD>/hour=<HH>
//! ```
//!
//! A part file's name is the offset range `[first, end)` of one input
//! partition it holds: the same records always give the same name, so a
//! redo after a crash overwrites, never adds (see `checkpoint`).

use object_store::path::{Path, PathPart};
use serde::{Deserialize, Serialize};

pub const HOUR_MS: i64 = 3_600_000;
pub const MANIFEST: &str = "_manifest.json";
/// The archiver's own records, apart from the data.
const SYSTEM_DIR: &str = "_weir";

/// The file format of data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Parquet, zstd-compressed, typed columns (the default).
    Parquet,
    /// Newline-delimited JSON, gzip-compressed (the first-party seed's format).
    NdjsonGz,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::NdjsonGz => "ndjson.gz",
        }
    }

    /// The format of a data file's name, if it is one.
    pub fn of_name(name: &str) -> Option<Self> {
        [Format::Parquet, Format::NdjsonGz]
            .into_iter()
            .find(|f| name.ends_with(&format!(".{}", f.extension())))
    }
}

/// One partition of the archive: a tenant's hour of event time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HourKey {
    pub tenant: String,
    /// The hour's start, epoch ms.
    pub hour_ms: i64,
}

impl HourKey {
    /// The hour an event of `tenant` at `timestamp` (epoch ms) is archived under.
    pub fn of(tenant: &str, timestamp: i64) -> Self {
        Self {
            tenant: tenant.to_string(),
            hour_ms: timestamp.div_euclid(HOUR_MS) * HOUR_MS,
        }
    }

    /// `tenant=<t>`, `date=<YYYY-MM-DD>`, `hour=<HH>`. The tenant is
    /// percent-encoded by the store's own rules where it has characters a
    /// key must not (`/`, `%`, ...).
    fn parts(&self) -> [PathPart<'static>; 3] {
        let (date, hour) = date_and_hour(self.hour_ms);
        [
            PathPart::from(format!("tenant={}", self.tenant)),
            PathPart::from(format!("date={date}")),
            PathPart::from(format!("hour={hour:02}")),
        ]
    }

    /// The hour's directory under `root`.
    pub fn dir(&self, root: &Path) -> Path {
        self.parts()
            .into_iter()
            .fold(root.clone(), |p, part| p.clone().join(part))
    }

    /// The marker that says this hour has files to compact or collect.
    pub fn dirty_marker(&self, root: &Path) -> Path {
        self.parts().into_iter().fold(
            root.clone().join(SYSTEM_DIR).clone().join("dirty"),
            |p, part| p.clone().join(part),
        )
    }
}

/// Where the dirty markers are listed from.
pub fn dirty_dir(root: &Path) -> Path {
    root.clone().join(SYSTEM_DIR).clone().join("dirty")
}

/// Where a topic's checkpoints are (see `checkpoint`).
pub fn checkpoint_dir(root: &Path, topic: &str) -> Path {
    root.clone()
        .join(SYSTEM_DIR)
        .clone()
        .join("checkpoints")
        .clone()
        .join(topic)
}

/// A partition's checkpoint.
pub fn checkpoint_path(root: &Path, topic: &str, partition: i32) -> Path {
    checkpoint_dir(root, topic)
        .clone()
        .join(format!("p{partition}.json"))
}

/// The probe object the health check reads.
pub fn health_probe(root: &Path) -> Path {
    root.clone().join(SYSTEM_DIR).clone().join("health")
}

/// `YYYY-MM-DD` and the hour of day (UTC) of an epoch-ms instant.
pub fn date_and_hour(ms: i64) -> (String, u8) {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (
        format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        t.hour(),
    )
}

/// What a data file in an hour's directory is, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Written by the consumer: records `[first, end)` of one input partition.
    Part {
        partition: i32,
        first: i64,
        end: i64,
    },
    /// Written by a compaction.
    Compacted,
}

/// The name of a part file.
pub fn part_name(partition: i32, first: i64, end: i64, format: Format) -> String {
    format!(
        "part-p{partition:04}-{first:020}-{end:020}.{}",
        format.extension()
    )
}

/// The name of the `k`th file of a compaction started at `generation` (ms).
pub fn compacted_name(generation: i64, k: usize, format: Format) -> String {
    format!("c-{generation:020}-{k:03}.{}", format.extension())
}

/// Classifies a file name; `None` for anything that is not a data file.
pub fn file_kind(name: &str) -> Option<FileKind> {
    let format = Format::of_name(name)?;
    let stem = name.strip_suffix(&format!(".{}", format.extension()))?;
    if stem.starts_with("c-") {
        return Some(FileKind::Compacted);
    }
    let mut it = stem.strip_prefix("part-p")?.split('-');
    let partition = it.next()?.parse().ok()?;
    let first = it.next()?.parse().ok()?;
    let end = it.next()?.parse().ok()?;
    it.next().is_none().then_some(FileKind::Part {
        partition,
        first,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_lands_in_its_tenants_hive_partition() {
        let root = Path::from("archive");
        // 2025-12-05T13:45:00Z
        let key = HourKey::of("acme", 1_764_942_300_000);
        assert_eq!(key.hour_ms, 1_764_939_600_000);
        assert_eq!(
            key.dir(&root).as_ref(),
            "archive/tenant=acme/date=2025-12-05/hour=13"
        );
        let odd = HourKey::of("a/b%c", 0);
        assert_eq!(
            odd.dir(&root).as_ref(),
            "archive/tenant=a%2Fb%25c/date=1970-01-01/hour=00"
        );
        assert_eq!(
            key.dirty_marker(&root).as_ref(),
            "archive/_weir/dirty/tenant=acme/date=2025-12-05/hour=13"
        );
        assert_eq!(HourKey::of("t", -1).hour_ms, -HOUR_MS);
    }

    #[test]
    fn file_names_round_trip() {
        let name = part_name(3, 1_200, 1_450, Format::Parquet);
        assert_eq!(
            name,
            "part-p0003-00000000000000001200-00000000000000001450.parquet"
        );
        assert_eq!(
            file_kind(&name),
            Some(FileKind::Part {
                partition: 3,
                first: 1_200,
                end: 1_450
            })
        );
        let c = compacted_name(1_764_942_300_000, 1, Format::NdjsonGz);
        assert_eq!(file_kind(&c), Some(FileKind::Compacted));
        assert_eq!(file_kind(MANIFEST), None);
        assert_eq!(file_kind("part-p1-2.parquet"), None);
        assert_eq!(file_kind("part-p0001-1-2.parquet#3"), None);
    }
}
