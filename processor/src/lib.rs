//! weir processor: deduplicates raw events, assigns them to event-time windows
//! under a watermark, marks late ones for the aggregator's late lane, and
//! emits window aggregates, all inside Kafka transactions (or in the
//! `ordered` fallback).
//!
//! The pure core knows nothing of Kafka: `window`, `watermark`, `dedup`
//! (the rules), `partition` (one partition's state machine), `routing`
//! (where each record goes) and `changelog` (the state's format, slots and
//! restore; its `kafka` module is the one part that reads Kafka). The shell
//! does the I/O: `runtime` (the loop), `assignment` (restore, claim and
//! rewind of partitions), `sink` (commit modes), `spill` (the dedup store's
//! disk half). `replay` is the `replay-late` command.

pub mod assignment;
pub mod changelog;
pub mod config;
pub mod dedup;
pub mod partition;
pub mod replay;
pub mod routing;
pub mod runtime;
pub mod sink;
pub mod spill;
pub mod watermark;
pub mod window;
