//! What a partition's state is written as in the changelog: one entry per
//! state key, its value in postcard, and `upto`, the last input offset the
//! entry reflects (the `weir-upto` header).
//!
//! | state key | value |
//! |---|---|
//! | `meta` | the largest event time seen |
//! | `win/<start>`, `win<spec>/<start>` | an open window of the primary or an extra spec |
//! | `dedup/<first offset>` | the ids first seen in one batch, with their event times |
//! | `owner` | the instance that claimed the partition last |

use crate::window::WindowState;
use serde::{Deserialize, Serialize};

/// A changelog entry for the compacted state topic. `value: None` is a
/// tombstone. `upto` is the last input offset the entry reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub upto: i64,
}

/// The values written under the state keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StateValue {
    Meta {
        max_event_time: Option<i64>,
    },
    Dedup {
        max_event_time: i64,
        entries: Vec<(u128, i64)>,
    },
    Window(WindowState),
    /// The instance that claimed the partition last (kept last in the enum:
    /// postcard numbers variants by position).
    Owner {
        instance: String,
    },
}

impl StateValue {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("state serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

impl StateRecord {
    /// The entry writing `value` (or, with `None`, deleting) `key` as of `upto`.
    pub fn new(key: String, value: Option<&StateValue>, upto: i64) -> Self {
        Self {
            key,
            value: value.map(StateValue::encode),
            upto,
        }
    }
}

pub const META_KEY: &str = "meta";
pub const OWNER_KEY: &str = "owner";
const DEDUP_PREFIX: &str = "dedup/";

/// `win/<start>` for the primary windows (as before there were more specs),
/// `win<spec>/<start>` for the others.
pub fn window_key(spec: usize, start: i64) -> String {
    if spec == 0 {
        format!("win/{start}")
    } else {
        format!("win{spec}/{start}")
    }
}

/// The spec of a window key, if `key` is one.
pub fn window_spec(key: &str) -> Option<usize> {
    let (head, _) = key.split_once('/')?;
    match head.strip_prefix("win")? {
        "" => Some(0),
        n => n.parse().ok().filter(|&n| n > 0),
    }
}

/// The key of the dedup segment whose first id was at input offset `from`.
pub fn dedup_segment_key(from: i64) -> String {
    format!("{DEDUP_PREFIX}{from}")
}

/// The first offset of a dedup segment key.
pub fn dedup_segment_from(key: &str) -> Option<i64> {
    key.strip_prefix(DEDUP_PREFIX)?.parse().ok()
}

/// The changelog entry that claims a partition for `instance`.
pub fn owner_record(instance: &str, upto: i64) -> StateRecord {
    let value = StateValue::Owner {
        instance: instance.to_string(),
    };
    StateRecord::new(OWNER_KEY.to_string(), Some(&value), upto)
}

/// The instance that last claimed the partition, whatever was committed:
/// claims are written before processing, outside transactions.
pub fn last_owner(records: &[StateRecord]) -> Option<String> {
    records
        .iter()
        .rev()
        .find(|r| r.key == OWNER_KEY)
        .and_then(|r| StateValue::decode(r.value.as_deref()?).ok())
        .and_then(|v| match v {
            StateValue::Owner { instance } => Some(instance),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_kind() {
        assert_eq!(window_spec(&window_key(0, 60_000)), Some(0));
        assert_eq!(window_spec(&window_key(2, -60_000)), Some(2));
        assert_eq!(window_spec("win0/5"), None);
        assert_eq!(window_spec(META_KEY), None);
        assert_eq!(dedup_segment_from(&dedup_segment_key(17)), Some(17));
        assert_eq!(dedup_segment_from("win/17"), None);
    }

    #[test]
    fn the_last_claim_names_the_owner() {
        let records = vec![owner_record("a", 3), owner_record("b", 9)];
        assert_eq!(last_owner(&records).as_deref(), Some("b"));
        assert_eq!(last_owner(&[]), None);
    }
}
