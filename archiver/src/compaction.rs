//! The compactor: merges an hour's part files into one compacted file (a
//! few past `max_file_bytes`), commits the swap with the hour's manifest,
//! and deletes replaced files after the grace period (see `manifest`).
//!
//! Which hours: the writer leaves a dirty marker for every hour it adds a
//! part to. A run deletes an hour's marker *before* it lists the hour, and
//! puts it back if anything is left to do; the writer puts the marker
//! *after* the part. So a part written during a run is either listed by it
//! or marked again: never left behind.
//!
//! Which parts: only those of finished ranges (the range's end is at or
//! below its partition's checkpoint). A pending range may be redone, and
//! its parts rewritten, after a crash; compacting them first would count
//! them twice.
//!
//! One compactor runs at a time: the archiver that holds partition 0 of the
//! input topic (`Leader`).

use crate::checkpoint::{self, Checkpoint};
use crate::config::CompactionConfig;
use crate::format;
use crate::layout::{self, FileKind};
use crate::reader::{self, HourListing};
use crate::record::ArchivedEvent;
use crate::store::ArchiveStore;
use object_store::path::Path;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Whether this archiver compacts: set while it holds partition 0.
#[derive(Clone, Default)]
pub struct Leader(Arc<AtomicBool>);

impl Leader {
    pub fn set(&self, leads: bool) {
        self.0.store(leads, Ordering::SeqCst)
    }

    pub fn leads(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct Compactor {
    pub store: ArchiveStore,
    pub cfg: CompactionConfig,
    /// The input topic, whose checkpoints say which ranges are finished.
    pub topic: String,
}

/// What one hour's compaction did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HourOutcome {
    pub inputs: usize,
    pub outputs: usize,
    pub collected: usize,
    /// Something is left for a later run (young hour, pending ranges, grace).
    pub left: bool,
}

impl Compactor {
    /// Runs every `interval_ms` while this archiver leads, until shutdown.
    pub async fn run(self, leader: Leader, shutdown: CancellationToken) {
        let every = Duration::from_millis(self.cfg.interval_ms.max(100));
        // Exported from the start, so a dashboard tells "none yet" from "absent".
        for outcome in ["ok", "failed"] {
            metrics::counter!("weir_archiver_compaction_runs_total", "outcome" => outcome)
                .increment(0);
        }
        metrics::counter!("weir_archiver_files_compacted_total").increment(0);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            if !leader.leads() {
                continue;
            }
            let started = std::time::Instant::now();
            match self.run_once(weir_core::event::now_ms()).await {
                Ok(hours) => {
                    metrics::counter!("weir_archiver_compaction_runs_total", "outcome" => "ok")
                        .increment(1);
                    let files: usize = hours.iter().map(|h| h.inputs).sum();
                    tracing::info!(
                        hours = hours.len(),
                        files,
                        ms = started.elapsed().as_millis() as u64,
                        "compaction run"
                    );
                }
                Err(e) => {
                    metrics::counter!("weir_archiver_compaction_runs_total", "outcome" => "failed")
                        .increment(1);
                    tracing::warn!(error = %format!("{e:#}"), "compaction run failed; the next run retries");
                }
            }
        }
    }

    /// One pass over every dirty hour.
    pub async fn run_once(&self, now: i64) -> anyhow::Result<Vec<HourOutcome>> {
        let checkpoints = checkpoint::load_all(&self.store, &self.topic).await?;
        let marker_root = layout::dirty_dir(&self.store.root);
        let mut out = Vec::new();
        for marker in self.store.list(&marker_root).await? {
            let rel: Vec<_> = marker
                .location
                .prefix_match(&marker_root)
                .map(|parts| parts.collect())
                .unwrap_or_default();
            let dir = rel
                .into_iter()
                .fold(self.store.root.clone(), |p, part| p.clone().join(part));
            let Some(hour_ms) = reader::hour_of(&dir) else {
                tracing::warn!(marker = %marker.location, "ignoring a dirty marker that names no hour");
                continue;
            };
            self.store.delete(&marker.location).await?;
            let outcome = match self.compact_hour(&dir, hour_ms, &checkpoints, now).await {
                Ok(o) => o,
                Err(e) => {
                    self.store.put_marker(marker.location.clone()).await?;
                    return Err(e.context(format!("compacting {dir}")));
                }
            };
            if outcome.left {
                self.store.put_marker(marker.location.clone()).await?;
            }
            out.push(outcome);
        }
        Ok(out)
    }

    async fn compact_hour(
        &self,
        dir: &Path,
        hour_ms: i64,
        checkpoints: &BTreeMap<i32, Checkpoint>,
        now: i64,
    ) -> anyhow::Result<HourOutcome> {
        let mut outcome = HourOutcome::default();
        let listing = HourListing::read(&self.store, dir).await?;
        let mut manifest = listing.manifest.clone();

        // Collect what the grace period has passed, and compactions that
        // crashed before their manifest (files no manifest mentions).
        let grace = self.cfg.grace_ms as i64;
        let mut gone = manifest.collectable(now, grace);
        for o in &listing.objects {
            let Some(name) = o.location.filename() else {
                continue;
            };
            let orphan = layout::file_kind(name) == Some(FileKind::Compacted)
                && !manifest.is_live(name)
                && !manifest.replaced.iter().any(|r| r.file == name);
            if orphan && now - o.last_modified.timestamp_millis() >= grace {
                gone.push(name.to_string());
            }
        }
        for name in &gone {
            self.store.delete(&dir.clone().join(name.as_str())).await?;
        }
        outcome.collected = gone.len();
        let collected = manifest.without(&gone);
        let manifest_changed = collected != manifest;
        manifest = collected;

        // The parts of finished ranges, and the compacted files they join.
        let live = listing.live();
        let finished = |p: i32, end: i64| checkpoints.get(&p).is_some_and(|cp| end <= cp.next);
        let mut inputs = Vec::new();
        let mut parts = 0;
        for o in &live {
            let name = o.location.filename().unwrap_or_default();
            match layout::file_kind(name) {
                Some(FileKind::Part { partition, end, .. }) if finished(partition, end) => {
                    parts += 1;
                    inputs.push(*o)
                }
                Some(FileKind::Part { .. }) => outcome.left = true,
                Some(FileKind::Compacted) => inputs.push(*o),
                None => {}
            }
        }
        let old_enough = now - (hour_ms + layout::HOUR_MS) >= self.cfg.min_hour_age_ms;
        if parts == 0 || !old_enough {
            outcome.left |= parts > 0 || !manifest.replaced.is_empty();
            if manifest_changed {
                self.put_manifest(dir, &manifest).await?;
            }
            return Ok(outcome);
        }

        let mut events: Vec<ArchivedEvent> = Vec::new();
        let mut input_bytes = 0u64;
        for o in &inputs {
            events.extend(reader::read_file(&self.store, &o.location).await?);
            input_bytes += o.size;
        }
        let mut events = reader::dedup(events);
        events.sort_by(|a, b| {
            (a.event.timestamp, &a.event.event_id).cmp(&(b.event.timestamp, &b.event.event_id))
        });
        let chunks = input_bytes.div_ceil(self.cfg.max_file_bytes.max(1)).max(1) as usize;
        let per_chunk = events.len().div_ceil(chunks).max(1);
        let mut outputs = Vec::new();
        for (k, chunk) in events.chunks(per_chunk).enumerate() {
            let name = layout::compacted_name(now, k, self.store.format);
            let refs: Vec<&ArchivedEvent> = chunk.iter().collect();
            let bytes = format::encode(self.store.format, &refs)?;
            metrics::counter!("weir_archiver_files_written_total", "kind" => "compacted")
                .increment(1);
            metrics::counter!("weir_archiver_bytes_written_total", "kind" => "compacted")
                .increment(bytes.len() as u64);
            self.store
                .put(&dir.clone().join(name.as_str()), bytes)
                .await?;
            outputs.push(name);
        }
        let input_names: Vec<String> = inputs
            .iter()
            .filter_map(|o| o.location.filename().map(String::from))
            .collect();
        // The commit: one put shows the outputs and hides the inputs.
        let committed = manifest.compacted(&input_names, outputs, now);
        self.put_manifest(dir, &committed).await?;
        metrics::counter!("weir_archiver_files_compacted_total")
            .increment(input_names.len() as u64);
        outcome.inputs = input_names.len();
        outcome.outputs = committed.compacted.len();
        outcome.left = true; // the inputs wait for collection
        Ok(outcome)
    }

    async fn put_manifest(&self, dir: &Path, m: &crate::manifest::Manifest) -> anyhow::Result<()> {
        self.store
            .put(
                &dir.clone().join(layout::MANIFEST),
                serde_json::to_vec_pretty(m)?,
            )
            .await
    }
}
