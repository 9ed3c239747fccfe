//! A partition's checkpoint: how far into `events.clean` the archive is
//! complete, kept in the archive itself. It, not the Kafka group offset, is
//! where a restarted archiver resumes: the archive and its progress live in
//! one place, so they cannot disagree (the group offset is committed after
//! it, for lag monitoring only).
//!
//! Writing a range `[first, end)` of one partition:
//! 1. the checkpoint becomes `{next: first, pending_end: end}`;
//! 2. its part files are written (names derive from the range);
//! 3. the checkpoint becomes `{next: end}`.
//!
//! A crash anywhere leaves either a finished range or a pending one. A
//! pending range is redone exactly, the same records into the same names,
//! before anything new is read; so a part file is never half of one range
//! and half of another, and no record is in two part files.

use crate::layout;
use crate::store::ArchiveStore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every record before this offset is archived.
    pub next: i64,
    /// A range `[next, pending_end)` whose files may be partly written.
    pub pending_end: Option<i64>,
}

pub async fn load(
    store: &ArchiveStore,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Option<Checkpoint>> {
    let path = layout::checkpoint_path(&store.root, topic, partition);
    match store.get(&path).await? {
        None => Ok(None),
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("checkpoint {path} is unreadable ({e}); delete it to restart the partition from the group offset")
        })?)),
    }
}

pub async fn save(
    store: &ArchiveStore,
    topic: &str,
    partition: i32,
    cp: Checkpoint,
) -> anyhow::Result<()> {
    let path = layout::checkpoint_path(&store.root, topic, partition);
    store.put(&path, serde_json::to_vec(&cp)?).await
}

/// Every partition's checkpoint of `topic`.
pub async fn load_all(
    store: &ArchiveStore,
    topic: &str,
) -> anyhow::Result<std::collections::BTreeMap<i32, Checkpoint>> {
    let dir = layout::checkpoint_dir(&store.root, topic);
    let mut out = std::collections::BTreeMap::new();
    for meta in store.list_dir(&dir).await? {
        let Some(name) = meta.location.filename() else {
            continue;
        };
        let Some(p) = name
            .strip_prefix('p')
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(cp) = load(store, topic, p).await? {
            out.insert(p, cp);
        }
    }
    Ok(out)
}
