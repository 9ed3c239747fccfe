//! The event model: one product or service event as it travels through weir.
//!
//! The Rust types mirror `schemas/event.avsc` field for field; serde maps them to
//! Avro values and back. Validation of client input lives in ingest, not here.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Current value of `Event::schema_version`.
pub const SCHEMA_VERSION: i32 = 1;

/// The channels an event may come from.
pub const CHANNELS: &[&str] = &[
    "web", "mobile", "desktop", "tv", "console", "server", "other",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub name: String,
    /// Event time, epoch milliseconds.
    pub timestamp: i64,
    /// Server time at ingest, epoch milliseconds.
    pub received_at: i64,
    pub sent_at: Option<i64>,
    pub tenant: String,
    pub schema_version: i32,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub session_id: Option<String>,
    pub customer_id: Option<String>,
    pub channel: Option<String>,
    pub service: Option<String>,
    pub properties: BTreeMap<String, PropertyValue>,
    pub user_properties: BTreeMap<String, PropertyValue>,
    pub context: Option<Context>,
    pub items: Vec<Item>,
    pub description: Option<String>,
}

impl Event {
    /// An event of `tenant` with its id, name and event time (also its
    /// `received_at`), and every optional field empty: what a test or a
    /// generator starts from, setting the fields it cares about with struct
    /// update syntax.
    pub fn new(tenant: &str, event_id: &str, name: &str, timestamp: i64) -> Self {
        Self {
            event_id: event_id.into(),
            name: name.into(),
            timestamp,
            received_at: timestamp,
            sent_at: None,
            tenant: tenant.into(),
            schema_version: SCHEMA_VERSION,
            user_id: None,
            anonymous_id: None,
            session_id: None,
            customer_id: None,
            channel: None,
            service: None,
            properties: BTreeMap::new(),
            user_properties: BTreeMap::new(),
            context: None,
            items: vec![],
            description: None,
        }
    }

    /// The id unique users are counted by: `coalesce(user_id, anonymous_id)`.
    pub fn user_key(&self) -> Option<&str> {
        self.user_id.as_deref().or(self.anonymous_id.as_deref())
    }

    /// The first level of the dotted name (`cart` for `cart.add`).
    pub fn namespace(&self) -> &str {
        namespace_of(&self.name)
    }
}

/// Legacy names are free text ("new customer"); weir's are dotted
/// `[a-z0-9_]` segments. Lowercase, and anything else becomes `_`. Ingest
/// maps legacy names with it, and the legacy read routes their filters, so
/// `event_name=new customer` finds what was written as "new customer".
pub fn normalize_name(name: &str) -> String {
    let s: String = name
        .trim()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '.') => c,
            _ => '_',
        })
        .collect();
    s.split('.')
        .map(|seg| seg.trim_matches('_'))
        .collect::<Vec<_>>()
        .join(".")
}

/// Epoch milliseconds of an RFC 3339 timestamp.
pub fn rfc3339_ms(s: &str) -> Result<i64, time::error::Parse> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The wall clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 text of epoch milliseconds; `None` outside what RFC 3339 holds.
pub fn ms_to_rfc3339(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// A customer id as event-service's clients see it: a JSON number when it
/// is an integer (their `customer_id` was an int64), text otherwise. Both
/// its write answer and its read route show it so.
pub fn legacy_customer_id(id: &str) -> serde_json::Value {
    id.parse::<i64>()
        .map_or_else(|_| serde_json::Value::from(id), serde_json::Value::from)
}

/// The first level of a dotted event name.
pub fn namespace_of(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// A property value: a string, an integer, a float or a boolean (the Avro
/// union `[string, long, double, boolean]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PropertyValue {
    String(String),
    Long(i64),
    Double(f64),
    Boolean(bool),
}

impl std::fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyValue::String(s) => f.write_str(s),
            PropertyValue::Long(n) => write!(f, "{n}"),
            PropertyValue::Double(n) => write!(f, "{n}"),
            PropertyValue::Boolean(b) => write!(f, "{b}"),
        }
    }
}

/// Where and on what the event happened. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Context {
    pub url: Option<String>,
    pub referrer: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub locale: Option<String>,
    pub device: Option<Device>,
    pub app: Option<App>,
}

/// The device: `category` (mobile, desktop, ...), make, OS and browser.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Device {
    pub category: Option<String>,
    pub brand: Option<String>,
    pub model: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub browser: Option<String>,
    pub browser_version: Option<String>,
}

/// The app that sent the event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct App {
    pub id: Option<String>,
    pub version: Option<String>,
}

/// A product in the event (a cart line, a purchase).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Item {
    pub id: Option<String>,
    pub name: Option<String>,
    pub brand: Option<String>,
    pub variant: Option<String>,
    pub price: Option<f64>,
    pub quantity: Option<i64>,
    pub revenue: Option<f64>,
    pub currency: Option<String>,
}
