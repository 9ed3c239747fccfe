//! The JSON shapes of the event API: request bodies and answers, typed so
//! the OpenAPI spec at `/openapi.json` is generated from the same structs
//! the handlers answer with.
//!
//! Request bodies are parsed as JSON values by `validate`, which answers per
//! field; the request types here describe them for the spec, and a test
//! keeps their field lists equal to the ones `validate` accepts.

use crate::validate::FieldError;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

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
    pub properties: Option<BTreeMap<String, PropertyIn>>,
    pub user_properties: Option<BTreeMap<String, PropertyIn>>,
    pub context: Option<ContextIn>,
    pub items: Option<Vec<ItemIn>>,
    pub description: Option<String>,
}

/// RFC 3339 text or epoch milliseconds.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum Timestamp {
    Rfc3339(String),
    EpochMillis(i64),
}

/// A property value.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum PropertyIn {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ContextIn {
    pub url: Option<String>,
    pub referrer: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub locale: Option<String>,
    pub device: Option<DeviceIn>,
    pub app: Option<AppIn>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeviceIn {
    pub category: Option<String>,
    pub brand: Option<String>,
    pub model: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub browser: Option<String>,
    pub browser_version: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AppIn {
    pub id: Option<String>,
    pub version: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ItemIn {
    pub id: Option<String>,
    pub name: Option<String>,
    pub brand: Option<String>,
    pub variant: Option<String>,
    pub price: Option<f64>,
    pub quantity: Option<i64>,
    pub revenue: Option<f64>,
    pub currency: Option<String>,
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
    pub customer_id: Option<String>,
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
    use utoipa::openapi::{RefOr, Schema};
    use utoipa::PartialSchema;

    fn property_names(schema: RefOr<Schema>) -> Vec<String> {
        match schema {
            RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
            _ => panic!("not an object schema"),
        }
    }

    #[test]
    fn the_documented_event_has_exactly_the_fields_validate_accepts() {
        let mut documented = property_names(EventIn::schema());
        let mut accepted: Vec<String> = crate::validate::FIELDS
            .iter()
            .map(|f| f.to_string())
            .collect();
        documented.sort();
        accepted.sort();
        assert_eq!(documented, accepted);
    }
}
