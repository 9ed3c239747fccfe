//! An hour's manifest, and the rule that says which of its files a reader
//! reads. Pure: the reader, the compactor and docs/archive.md share it.
//!
//! The rule: a data file in an hour's directory is live when
//! - it is a part file (`part-*`) not listed in `replaced`, or
//! - it is a compacted file (`c-*`) listed in `compacted`.
//!
//! A compaction writes its files first, where the rule hides them, and then
//! the manifest, in one atomic put that shows them and hides the files they
//! replace: a reader sees each event once, before or after, never both and
//! never neither. The replaced files are deleted a grace period later. A
//! reader must read the manifest before it lists the directory (the other
//! order can miss a compaction's files between the two reads), and finish
//! reading within the grace period.

use crate::layout::{self, FileKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The live compacted files.
    pub compacted: Vec<String>,
    /// Files no reader reads any more, and when they were replaced (epoch
    /// ms); deleted after the grace period, then dropped from here.
    pub replaced: Vec<Replaced>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    pub file: String,
    pub at: i64,
}

impl Manifest {
    /// Whether the data file `name` is live.
    pub fn is_live(&self, name: &str) -> bool {
        match layout::file_kind(name) {
            None => false,
            Some(_) if self.replaced.iter().any(|r| r.file == name) => false,
            Some(FileKind::Part { .. }) => true,
            Some(FileKind::Compacted) => self.compacted.iter().any(|c| c == name),
        }
    }

    /// The live files among `names`, in name order.
    pub fn live<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let mut live: Vec<&str> = names.into_iter().filter(|n| self.is_live(n)).collect();
        live.sort_unstable();
        live.dedup();
        live
    }

    /// The manifest after a compaction that wrote `outputs` from `inputs`
    /// at `now`.
    pub fn compacted(&self, inputs: &[String], outputs: Vec<String>, now: i64) -> Self {
        let mut replaced = self.replaced.clone();
        let known: BTreeSet<&str> = replaced.iter().map(|r| r.file.as_str()).collect();
        let new: Vec<Replaced> = inputs
            .iter()
            .filter(|f| !known.contains(f.as_str()))
            .map(|f| Replaced {
                file: f.clone(),
                at: now,
            })
            .collect();
        replaced.extend(new);
        Self {
            compacted: outputs,
            replaced,
        }
    }

    /// The replaced files whose grace period is over at `now`.
    pub fn collectable(&self, now: i64, grace_ms: i64) -> Vec<String> {
        self.replaced
            .iter()
            .filter(|r| now - r.at >= grace_ms)
            .map(|r| r.file.clone())
            .collect()
    }

    /// The manifest once `deleted` files are gone.
    pub fn without(&self, deleted: &[String]) -> Self {
        Self {
            compacted: self.compacted.clone(),
            replaced: self
                .replaced
                .iter()
                .filter(|r| !deleted.contains(&r.file))
                .cloned()
                .collect(),
        }
    }
}

/// The manifest's columns, for a table function that reads manifests.
pub const MANIFEST_STRUCTURE: &str =
    "compacted Array(String), replaced Array(Tuple(file String, at Int64))";

/// The rule as one ClickHouse query over the archive in place: the live
/// rows of `files`, a table function over data files (`file('<root>/tenant=
/// */date=*/hour=*/*.parquet', Parquet)`, or `s3(...)`), given `manifests`,
/// the same function over the same hours' `_manifest.json` with
/// `MANIFEST_STRUCTURE`. docs/archive.md shows it filled in. An hour with
/// no manifest reads its parts; a glob that matches no manifest is empty.
/// Parts not compacted yet may hold a second copy of an event (a resend
/// days later, past the processor's dedup horizon, which the aggregator
/// finds counted): the first copy, as in ClickHouse, is the one kept.
pub fn clickhouse_live(files: &str, manifests: &str) -> String {
    format!(
        "SELECT f.* FROM {files} AS f \
         LEFT JOIN (SELECT replaceRegexpOne(_path, '/[^/]*$', '') AS dir, compacted, \
                           replaced.file AS replaced FROM {manifests}) AS m \
         ON m.dir = replaceRegexpOne(f._path, '/[^/]*$', '') \
         WHERE NOT has(m.replaced, f._file) \
           AND (startsWith(f._file, 'part-') OR has(m.compacted, f._file)) \
         ORDER BY f.kafka_partition, f.kafka_offset \
         LIMIT 1 BY f.tenant, f.event_id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{compacted_name, part_name, Format};
    use proptest::prelude::*;

    /// An hour's directory, as the compactor changes it step by step.
    #[derive(Debug, Clone)]
    struct Dir {
        files: BTreeSet<String>,
        manifest: Manifest,
    }

    /// Which events a reader sees: each part file `i` holds event `i`, each
    /// compacted file holds what its inputs held.
    fn seen(
        dir_manifest: &Manifest,
        files: &BTreeSet<String>,
        holds: &dyn Fn(&str) -> Vec<usize>,
    ) -> Vec<usize> {
        let mut v: Vec<usize> = dir_manifest
            .live(files.iter().map(String::as_str))
            .into_iter()
            .flat_map(holds)
            .collect();
        v.sort_unstable();
        v
    }

    proptest! {
        /// Compactions of any of the live parts, in any number, with the
        /// reader reading the manifest and then listing at any step: every
        /// event seen exactly once.
        #[test]
        fn a_reader_sees_each_event_once_at_every_step(
            parts in 1usize..12,
            rounds in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 12), 1..4),
        ) {
            let part = |i: usize| part_name(0, i as i64, i as i64 + 1, Format::Parquet);
            let mut dir = Dir { files: (0..parts).map(part).collect(), manifest: Manifest::default() };
            let mut contents: std::collections::BTreeMap<String, Vec<usize>> =
                (0..parts).map(|i| (part(i), vec![i])).collect();
            let all: Vec<usize> = (0..parts).collect();
            let mut snapshots = vec![dir.clone()];
            for (gen, pick) in rounds.iter().enumerate() {
                let live: Vec<String> = dir.manifest.live(dir.files.iter().map(String::as_str)).into_iter().map(String::from).collect();
                // Every live compacted file, and a chosen subset of live parts.
                let inputs: Vec<String> = live.iter().enumerate()
                    .filter(|(k, f)| f.starts_with("c-") || pick[k % pick.len()])
                    .map(|(_, f)| f.clone()).collect();
                if inputs.is_empty() { continue; }
                let out = compacted_name(gen as i64, 0, Format::Parquet);
                let held: Vec<usize> = inputs.iter().flat_map(|f| contents[f].clone()).collect();
                contents.insert(out.clone(), held);
                // Step 1: the output appears; step 2: the manifest; step 3: collection.
                dir.files.insert(out.clone());
                snapshots.push(dir.clone());
                dir.manifest = dir.manifest.compacted(&inputs, vec![out], gen as i64);
                snapshots.push(dir.clone());
                let gone = dir.manifest.collectable(gen as i64, 0);
                for f in &gone { dir.files.remove(f); }
                dir.manifest = dir.manifest.without(&gone);
                snapshots.push(dir.clone());
            }
            let holds = |f: &str| contents[f].clone();
            // The reader reads the manifest at step m and lists at step m or
            // the next (collection waits out the grace period, so no reader
            // spans more than one step).
            for m in 0..snapshots.len() {
                for l in m..(m + 2).min(snapshots.len()) {
                    prop_assert_eq!(seen(&snapshots[m].manifest, &snapshots[l].files, &holds), all.clone());
                }
            }
        }
    }

    #[test]
    fn the_rule_reads_parts_and_committed_compactions_only() {
        let m = Manifest {
            compacted: vec!["c-00000000000000000001-000.parquet".into()],
            replaced: vec![Replaced {
                file: "part-p0000-00000000000000000000-00000000000000000005.parquet".into(),
                at: 0,
            }],
        };
        let names = [
            "part-p0000-00000000000000000000-00000000000000000005.parquet",
            "part-p0000-00000000000000000005-00000000000000000009.parquet",
            "c-00000000000000000001-000.parquet",
            "c-00000000000000000002-000.parquet", // a compaction not committed
            "_manifest.json",
            "part-p0000-00000000000000000009-00000000000000000012.parquet#1", // a staged write
        ];
        assert_eq!(
            m.live(names),
            [
                "c-00000000000000000001-000.parquet",
                "part-p0000-00000000000000000005-00000000000000000009.parquet"
            ]
        );
    }
}
