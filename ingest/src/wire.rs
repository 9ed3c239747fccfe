//! The JSON shapes of the event API: request bodies and answers, typed so
//! the OpenAPI spec at `/openapi.json` is generated from the same structs
//! the handlers answer with.
//!
//! A request's event is parsed by `validate`, field by field so it can name
//! every fault. Its nested objects parse into the event model's own types
//! (`Context`, `Device`, `App`, `Item`, `PropertyValue`), whose schemas the
//! spec shows; the fields `validate` accepts at each level are read from
//! those schemas and from `EventIn`'s, so the spec and the parser cannot
//! disagree on which fields exist.

use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use weir_core::event::{Context, Item, PropertyValue};

/// What is wrong with one field, named by its path (`properties.sku`, `items[2].price`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// One event as a client sends it. Only `name` is required.
#[derive(ToSchema)]
#[allow(dead_code)] // describes the body for the spec; `validate` parses it
pub struct EventIn {
    /// Unique per event, at most 128 bytes; retries must reuse it. Generated (UUIDv7) when absent.
    pub event_id: Option<String>,
    /// Dotted lower-case name, `namespace.action` (for example `cart.add`).
    pub name: String,
    /// Event time: RFC 3339 text or epoch milliseconds. Defaults to the time ingest received it.
    pub timestamp: Option<Timestamp>,
    /// The client's clock when it sent the request; corrects `timestamp` for clock skew.
    pub sent_at: Option<Timestamp>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub session_id: Option<String>,
    pub customer_id: Option<String>,
    /// One of web, mobile, desktop, tv, console, server, other.
    pub channel: Option<String>,
    /// The service that emitted the event.
    pub service: Option<String>,
    /// Flat key/value properties: strings, integers, floats or booleans.
    pub properties: Option<BTreeMap<String, PropertyValue>>,
    pub user_properties: Option<BTreeMap<String, PropertyValue>>,
    pub context: Option<Context>,
    pub items: Option<Vec<Item>>,
    pub description: Option<String>,
}

/// RFC 3339 text or epoch milliseconds.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum Timestamp {
    Rfc3339(String),
    EpochMillis(i64),
}

/// A batch: `{"events": [...]}` (a bare JSON array is accepted too).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchIn {
    pub events: Vec<EventIn>,
}

/// The answer to one accepted event.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub event_id: String,
    /// Accepted, but worth a look (for example an event older than the dedup horizon).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<FieldError>,
}

/// The answer to a batch: every event is either accepted or rejected.
/// A batch with at least one valid event is 202, whatever the others.
#[derive(Serialize, ToSchema)]
pub struct BatchAnswer {
    pub accepted: Vec<AcceptedEntry>,
    pub rejected: Vec<RejectedEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct AcceptedEntry {
    /// Position in the batch, from 0.
    pub index: usize,
    pub event_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<FieldError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedEntry {
    /// Position in the batch, from 0.
    pub index: usize,
    /// Line number, from 1, for NDJSON bodies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// All field errors in one sentence.
    pub message: String,
    pub fields: Vec<FieldError>,
}

/// event-stream's answer to one event.
#[derive(Serialize, ToSchema)]
pub struct EventStreamAccepted {
    pub id: String,
}

/// event-stream's answer to a batch.
#[derive(Serialize, ToSchema)]
pub struct EventStreamBatchAnswer {
    pub ids: Vec<String>,
    pub rejected: Vec<RejectedEntry>,
}

/// event-service's answer: the event id and the log entry as it stored it.
#[derive(Serialize, ToSchema)]
pub struct EventServiceAnswer {
    pub event_id: String,
    pub log: EventServiceLog,
}

#[derive(Serialize, ToSchema)]
pub struct EventServiceLog {
    pub event_name: String,
    pub description: Option<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// A number when it is an integer, as event-service answered.
    #[schema(value_type = Option<i64>)]
    pub customer_id: Option<serde_json::Value>,
}

/// Every error answer: `{"error": {...}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorAnswer {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `unauthorized`, `body_too_large`, `body_timeout`,
    /// `body_unreadable`, `malformed_json`, `invalid_utf8`, `duplicate_key`, `too_deep`,
    /// `invalid_event`, `invalid_batch`, `batch_too_large`, `rate_limited`, `overloaded`,
    /// `unavailable`, `invalid_encoding`, `unsupported_encoding`, `unsupported_media_type`.
    pub code: String,
    pub message: String,
    /// For `duplicate_key`: the key's path, such as `properties.plan`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// For `malformed_json`, `invalid_utf8`, `duplicate_key` and `too_deep`:
    /// where the parser stopped, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// For `invalid_event`: every field error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldError>>,
    /// For `invalid_batch` when no event is valid: why each was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Vec<RejectedEntry>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::api_docs::object_fields;
    use weir_core::event::{App, Device};

    /// The fields `validate` reads at each level, written out: a field added
    /// to a schema type but not to the parser (or the reverse) fails here.
    #[test]
    fn the_documented_fields_are_the_ones_validate_reads() {
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let words = |w: &str| sorted(w.split_whitespace().map(String::from).collect());
        assert_eq!(
            sorted(object_fields::<EventIn>()),
            words(
                "event_id name timestamp sent_at user_id anonymous_id session_id customer_id \
                 channel service properties user_properties context items description"
            )
        );
        assert_eq!(
            sorted(object_fields::<Context>()),
            words("url referrer ip user_agent locale device app")
        );
        assert_eq!(
            sorted(object_fields::<Device>()),
            words("category brand model os os_version browser browser_version")
        );
        assert_eq!(sorted(object_fields::<App>()), words("id version"));
        assert_eq!(
            sorted(object_fields::<Item>()),
            words("id name brand variant price quantity revenue currency")
        );
    }
}
