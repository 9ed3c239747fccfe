//! weir processor: deduplicates raw events, assigns them to event-time windows
//! under a watermark, dead-letters late ones, and emits window aggregates, all
//! inside Kafka transactions (or in the `ordered` fallback).
//!
//! The pure core (`window`, `watermark`, `dedup`, `partition`, `changelog`,
//! `slots`)
//! knows nothing of Kafka; the shell (`runtime`, `sink`, `restore`) does the
//! I/O. `replay` is the `replay-late` command.

pub mod changelog;
pub mod config;
pub mod dedup;
pub mod partition;
pub mod replay;
pub mod restore;
pub mod runtime;
pub mod sink;
pub mod slots;
pub mod spill;
pub mod watermark;
pub mod window;
