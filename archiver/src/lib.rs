//! weir archiver: keeps every counted event in object storage (Parquet or
//! `ndjson.gz`, Hive-partitioned by tenant and hour), compacts each hour,
//! and rebuilds ClickHouse ranges from it (`backfill`). docs/archive.md
//! has the layout and the guarantees.
//!
//! A record's way: `runtime` (consume) → `writer` (a range into part files,
//! under `checkpoint`'s protocol) → `compaction` (parts into one file per
//! hour, committed by `manifest`) → `reader` (what a reader sees) →
//! `backfill`.

pub mod backfill;
pub mod checkpoint;
pub mod compaction;
pub mod config;
pub mod format;
pub mod layout;
pub mod manifest;
pub mod reader;
pub mod record;
pub mod runtime;
pub mod store;
pub mod writer;
