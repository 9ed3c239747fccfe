//! The dedup store's cold half on disk: a redb file per partition.
//!
//! It is a cache of what the changelog already holds, not a source of
//! truth: a restore rebuilds it from the changelog, so it starts empty and
//! writes without waiting for fsync. An I/O error is remembered and reported
//! through `failure`; the runtime then aborts the batch and restores the
//! partition into a fresh file, so a wrong answer never gets committed.

use crate::dedup::ColdStore;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};

/// key → event time (s)
const KEYS: TableDefinition<u128, u32> = TableDefinition::new("keys");
/// (event time (s), key), to forget old keys with one range scan.
const BY_TIME: TableDefinition<(u32, u128), ()> = TableDefinition::new("by_time");

pub struct RedbColdStore {
    db: Database,
    path: PathBuf,
    len: usize,
    failure: Option<String>,
}

impl RedbColdStore {
    /// A new, empty store for `partition` under `dir` (an old file is removed).
    pub fn create(dir: &Path, partition: i32) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("dedup spill dir {}: {e}", dir.display()))?;
        let path = dir.join(format!("dedup-{partition}.redb"));
        let _ = std::fs::remove_file(&path);
        let db = Database::create(&path)
            .map_err(|e| anyhow::anyhow!("dedup spill file {}: {e}", path.display()))?;
        Ok(Self {
            db,
            path,
            len: 0,
            failure: None,
        })
    }

    fn fail(&mut self, e: impl std::fmt::Display) {
        if self.failure.is_none() {
            let message = format!("dedup spill file {}: {e}", self.path.display());
            tracing::error!(error = %message, "dedup spill store failed");
            self.failure = Some(message);
        }
    }

    fn read(&self, key: u128) -> Result<Option<u32>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(KEYS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(key)?.map(|v| v.value()))
    }

    fn write(&mut self, entries: &[(u128, u32)]) -> Result<usize, redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let mut added = 0;
        {
            let mut keys = txn.open_table(KEYS)?;
            let mut by_time = txn.open_table(BY_TIME)?;
            for &(k, t) in entries {
                let old = keys.get(k)?.map(|v| v.value());
                match old {
                    Some(old) if old >= t => continue,
                    Some(old) => {
                        by_time.remove((old, k))?;
                    }
                    None => added += 1,
                }
                keys.insert(k, t)?;
                by_time.insert((t, k), ())?;
            }
        }
        txn.commit()?;
        Ok(added)
    }

    fn evict(&mut self, cutoff: u32) -> Result<usize, redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let mut removed = 0;
        {
            let mut keys = txn.open_table(KEYS)?;
            let mut by_time = txn.open_table(BY_TIME)?;
            let old: Vec<(u32, u128)> = by_time
                .range(..(cutoff, 0u128))?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for (t, k) in old {
                by_time.remove((t, k))?;
                keys.remove(k)?;
                removed += 1;
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}

impl ColdStore for RedbColdStore {
    fn contains(&self, key: u128) -> bool {
        self.get(key).is_some()
    }

    fn get(&self, key: u128) -> Option<u32> {
        // A read error is reported by `failure` on the next check; the
        // batch that asked is then aborted, whatever this answers.
        self.read(key).unwrap_or_else(|e| {
            tracing::error!(error = %e, path = %self.path.display(), "dedup spill read failed");
            None
        })
    }

    fn put_all(&mut self, entries: &[(u128, u32)]) {
        match self.write(entries) {
            Ok(added) => self.len += added,
            Err(e) => self.fail(e),
        }
    }

    fn evict_before(&mut self, cutoff: u32) -> usize {
        if self.len == 0 {
            return 0;
        }
        match self.evict(cutoff) {
            Ok(n) => {
                self.len -= n;
                n
            }
            Err(e) => {
                self.fail(e);
                0
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }
}

impl Drop for RedbColdStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::{dedup_key, DedupStore};

    #[test]
    fn a_spilling_store_on_disk_answers_like_one_in_memory() {
        let dir = std::env::temp_dir().join(format!("weir-spill-test-{}", std::process::id()));
        let cold = RedbColdStore::create(&dir, 7).unwrap();
        let mut spilled = DedupStore::spilling(Box::new(cold), 100);
        let mut plain = DedupStore::new();
        for i in 0..2_000i64 {
            let k = dedup_key("t", &(i % 1_500).to_string());
            let t = 1_000_000 + i * 1_000;
            assert_eq!(plain.insert(k, t), spilled.insert(k, t), "insert {i}");
        }
        assert!(spilled.cold_len() > 1_000, "most keys went to disk");
        assert_eq!(plain.len(), spilled.len());
        assert_eq!(
            plain.evict_before(1_600_000),
            spilled.evict_before(1_600_000)
        );
        assert_eq!(plain.len(), spilled.len());
        for i in 0..1_500 {
            let k = dedup_key("t", &i.to_string());
            assert_eq!(plain.contains(k), spilled.contains(k), "key {i}");
        }
        assert!(spilled.failure().is_none());
        drop(spilled);
        assert!(
            !dir.join("dedup-7.redb").exists(),
            "the file goes with the store"
        );
    }
}
