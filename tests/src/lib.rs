//! The end-to-end test harness: starts the real local stack (nisshi,
//! rivven-schema, ClickHouse on chdb) on free loopback ports through
//! `deploy/local/part.sh`, runs weir's three binaries against it, and kills
//! everything when dropped. `Pipeline` is the whole of it, ready, for an
//! end-to-end test (see docs/testing.md); `Stack` the parts alone. Logs stay
//! in the stack's temp dir and are printed when a test fails.

pub mod archive;
pub mod broker_contract;
pub mod docs;
pub mod group_member;
pub mod group_rejoin;
pub mod group_restart;
pub mod load;
pub mod monitoring;
pub mod pipeline;
pub mod stack;

pub use pipeline::{eventually, Pipeline, PipelineOptions};
pub use stack::{repo_root, Stack, Stage};

/// The chaos run lives beside the tests it serves (`tests/chaos/`).
#[path = "../chaos/mod.rs"]
pub mod chaos;

/// The soak profile (`src/bin/soak.rs`).
pub mod soak;

/// The hostile-traffic cases (`tests/tests/hostile_ingest.rs`).
pub mod hostile;
