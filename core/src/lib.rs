//! What weir's three stages share: the event contract (model, Avro schemas,
//! Confluent wire codec, topic names, the Kafka headers between stages) and the service shell every long-running
//! binary uses (config loading, telemetry, ops endpoints, shutdown).
//!
//! Keep this crate small: logic that belongs to one stage lives in that stage.

pub mod aggregate;
pub mod api_docs;
pub mod api_keys;
pub mod codec;
pub mod config;
pub mod event;
pub mod group_lag;
pub mod headers;
pub mod health;
pub mod kafka;
pub mod ops;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod topic_reader;
pub mod topics;
pub mod trace_context;

pub use aggregate::WindowAggregate;
pub use codec::{Codec, CodecError};
pub use event::Event;
