//! The processor's state changelog, `processor.state`: the heart of how a
//! partition's state survives a crash exactly.
//!
//! - `format`: what a partition's state is written as: state keys, values
//!   and the `upto` offset each entry reflects.
//! - `slots`: which of a state key's two changelog keys a new version goes
//!   under, so compaction never removes the last committed version.
//! - `restore`: the state a changelog holds as of a committed offset (pure).
//! - `kafka`: the entries as Kafka records, and reading a partition back.
//!
//! The changelog is written in the same transaction as the outputs and the
//! input offsets, and partitioned like the input: the state of input
//! partition `p` lives in changelog partition `p`.

pub mod format;
pub mod kafka;
pub mod restore;
pub mod slots;

pub use format::{StateRecord, StateValue};
pub use restore::RestoreError;
