//! Client JSON to `Event`: every rule of the event model, with an error per
//! field so a client can fix its payload in one round trip.
//!
//! Pure code: no I/O, no clock (the caller passes `received_at`).

use crate::body::quote;
use crate::wire::EventIn;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use weir_core::api_docs::object_fields;
use weir_core::event::{
    App, Context, Device, Event, Item, PropertyValue, CHANNELS, SCHEMA_VERSION,
};

/// Limits applied to each event; the defaults are the documented ones.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_future_skew_ms: i64,
    pub max_string_bytes: usize,
    pub max_properties: usize,
    pub max_items: usize,
    /// Older events are refused: the oldest event weir counts, and so how
    /// long its exactly-once checks must reach back.
    pub max_event_age_ms: i64,
    /// Older events are accepted with a warning: they are counted through
    /// the aggregator's late lane.
    pub flag_older_than_ms: i64,
}

/// The default `max_event_age_ms`: a week covers mobile apps' offline
/// queues and an outage over a long weekend, and is Kafka's default
/// retention, so a replay from `events.raw` still has every event ingest
/// could have accepted.
pub const DEFAULT_MAX_EVENT_AGE_MS: i64 = 7 * 24 * 3_600_000;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_future_skew_ms: 10 * 60 * 1000,
            max_string_bytes: 8 * 1024,
            max_properties: 256,
            max_items: 256,
            max_event_age_ms: DEFAULT_MAX_EVENT_AGE_MS,
            flag_older_than_ms: 24 * 60 * 60 * 1000,
        }
    }
}

pub use crate::wire::FieldError;

/// The longest property name.
pub const MAX_KEY_BYTES: usize = 256;

/// The fields a client may send at each level of an event, read from the
/// schema types the OpenAPI spec shows (see `wire`).
struct Fields {
    event: Vec<String>,
    context: Vec<String>,
    device: Vec<String>,
    app: Vec<String>,
    item: Vec<String>,
}

fn fields() -> &'static Fields {
    static FIELDS: OnceLock<Fields> = OnceLock::new();
    FIELDS.get_or_init(|| Fields {
        event: object_fields::<EventIn>(),
        context: object_fields::<Context>(),
        device: object_fields::<Device>(),
        app: object_fields::<App>(),
        item: object_fields::<Item>(),
    })
}

/// The top-level fields of an event.
pub fn event_fields() -> &'static [String] {
    &fields().event
}

struct Checker<'a> {
    limits: &'a Limits,
    errors: Vec<FieldError>,
}

impl Checker<'_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn string(
        &mut self,
        obj: &Map<String, Value>,
        field: &str,
        path: &str,
        max: usize,
    ) -> Option<String> {
        match obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() > max => {
                self.err(
                    path,
                    format!("must be at most {max} bytes, got {}", s.len()),
                );
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.err(path, format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    fn object<'v>(&mut self, v: Option<&'v Value>, path: &str) -> Option<&'v Map<String, Value>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                self.err(path, format!("must be an object, got {}", kind(other)));
                None
            }
        }
    }

    fn unknown(&mut self, obj: &Map<String, Value>, allowed: &[String], prefix: &str) {
        for k in obj.keys().filter(|k| !allowed.contains(k)) {
            self.err(format!("{prefix}{}", quote(k)), "unknown field");
        }
    }

    fn number(&mut self, obj: &Map<String, Value>, field: &str, path: &str) -> Option<f64> {
        match obj.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(other) => {
                self.err(path, format!("must be a number, got {}", kind(other)));
                None
            }
        }
    }

    fn properties(&mut self, v: Option<&Value>, path: &str) -> BTreeMap<String, PropertyValue> {
        let Some(obj) = self.object(v, path) else {
            return BTreeMap::new();
        };
        if obj.len() > self.limits.max_properties {
            self.err(
                path,
                format!(
                    "must have at most {} entries, got {}",
                    self.limits.max_properties,
                    obj.len()
                ),
            );
            return BTreeMap::new();
        }
        let mut out = BTreeMap::new();
        for (k, v) in obj {
            let p = format!("{path}.{}", quote(k));
            if k.len() > MAX_KEY_BYTES {
                self.err(p, format!("keys must be at most {MAX_KEY_BYTES} bytes"));
                continue;
            }
            let value = match v {
                Value::String(s) if s.len() > self.limits.max_string_bytes => {
                    self.err(
                        p,
                        format!("must be at most {} bytes", self.limits.max_string_bytes),
                    );
                    continue;
                }
                Value::String(s) => PropertyValue::String(s.clone()),
                Value::Bool(b) => PropertyValue::Boolean(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => PropertyValue::Long(i),
                    None => PropertyValue::Double(n.as_f64().unwrap_or(f64::NAN)),
                },
                other => {
                    self.err(
                        p,
                        format!("must be a string, number or boolean, got {}", kind(other)),
                    );
                    continue;
                }
            };
            out.insert(k.clone(), value);
        }
        out
    }
}

impl Limits {
    /// What is worth flagging in an event that was accepted.
    pub fn warnings(&self, event: &Event, received_at: i64) -> Vec<FieldError> {
        let age = received_at.saturating_sub(event.timestamp);
        if age > self.flag_older_than_ms {
            return vec![FieldError {
                field: "timestamp".into(),
                message: format!(
                    "is {} h old (over {} h): accepted, and counted through the late lane, \
                     seconds after on-time events",
                    age / 3_600_000,
                    self.flag_older_than_ms / 3_600_000
                ),
            }];
        }
        vec![]
    }
}

/// Maps one client event. `received_at` is server time in epoch ms.
pub fn to_event(
    v: &Value,
    received_at: i64,
    tenant: &str,
    limits: &Limits,
) -> Result<Event, Vec<FieldError>> {
    let mut c = Checker {
        limits,
        errors: vec![],
    };
    let Value::Object(obj) = v else {
        c.err(
            "",
            format!("an event must be a JSON object, got {}", kind(v)),
        );
        return Err(c.errors);
    };
    c.unknown(obj, &fields().event, "");
    let max = limits.max_string_bytes;

    let event_id = match c.string(obj, "event_id", "event_id", 128) {
        Some(id) if id.is_empty() => {
            c.err("event_id", "must not be empty");
            String::new()
        }
        Some(id) => id,
        None => uuid::Uuid::now_v7().to_string(),
    };
    let name = match c.string(obj, "name", "name", 256) {
        Some(n) => {
            if let Err(m) = check_name(&n) {
                c.err("name", m);
            }
            n
        }
        None => {
            if !obj.contains_key("name") || obj["name"].is_null() {
                c.err("name", "is required");
            }
            String::new()
        }
    };
    let sent_at = time_field(&mut c, obj, "sent_at");
    let mut timestamp = time_field(&mut c, obj, "timestamp").unwrap_or(received_at);
    if let (Some(sent), true) = (sent_at, obj.contains_key("timestamp")) {
        // Client clock skew correction, as Segment does it.
        timestamp = timestamp.saturating_add(received_at.saturating_sub(sent));
    }
    if timestamp <= 0 {
        c.err(
            "timestamp",
            "corrected by sent_at, it falls before 1970; check the client's clock",
        );
    } else if received_at.saturating_sub(timestamp) > limits.max_event_age_ms {
        c.err(
            "timestamp",
            format!(
                "is {} h old; events older than {} h are refused (max_event_age_ms)",
                received_at.saturating_sub(timestamp) / 3_600_000,
                limits.max_event_age_ms / 3_600_000
            ),
        );
    } else if timestamp > received_at.saturating_add(limits.max_future_skew_ms) {
        c.err(
            "timestamp",
            format!(
                "is {} s in the future; at most {} s is allowed",
                timestamp.saturating_sub(received_at) / 1000,
                limits.max_future_skew_ms / 1000
            ),
        );
    }
    let channel = c.string(obj, "channel", "channel", 32);
    if let Some(ch) = &channel {
        if !CHANNELS.contains(&ch.as_str()) {
            c.err("channel", format!("must be one of {}", CHANNELS.join(", ")));
        }
    }
    let context = c.object(obj.get("context"), "context").map(|ctx| {
        c.unknown(ctx, &fields().context, "context.");
        let device = c.object(ctx.get("device"), "context.device").map(|d| {
            c.unknown(d, &fields().device, "context.device.");
            let mut f = |k: &str| c.string(d, k, &format!("context.device.{k}"), 256);
            Device {
                category: f("category"),
                brand: f("brand"),
                model: f("model"),
                os: f("os"),
                os_version: f("os_version"),
                browser: f("browser"),
                browser_version: f("browser_version"),
            }
        });
        let app = c.object(ctx.get("app"), "context.app").map(|a| {
            c.unknown(a, &fields().app, "context.app.");
            App {
                id: c.string(a, "id", "context.app.id", 256),
                version: c.string(a, "version", "context.app.version", 256),
            }
        });
        Context {
            url: c.string(ctx, "url", "context.url", max),
            referrer: c.string(ctx, "referrer", "context.referrer", max),
            ip: c.string(ctx, "ip", "context.ip", 64),
            user_agent: c.string(ctx, "user_agent", "context.user_agent", max),
            locale: c.string(ctx, "locale", "context.locale", 64),
            device,
            app,
        }
    });
    let items = match obj.get("items") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) if a.len() > limits.max_items => {
            c.err(
                "items",
                format!(
                    "must have at most {} entries, got {}",
                    limits.max_items,
                    a.len()
                ),
            );
            vec![]
        }
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, it)| {
                let p = format!("items[{i}]");
                let Some(o) = c.object(Some(it), &p) else {
                    if it.is_null() {
                        c.err(&p, "must be an object, got null");
                    }
                    return None;
                };
                c.unknown(o, &fields().item, &format!("{p}."));
                let quantity = match o.get("quantity") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
                    Some(other) => {
                        c.err(
                            format!("{p}.quantity"),
                            format!("must be an integer, got {}", kind(other)),
                        );
                        None
                    }
                };
                Some(Item {
                    id: c.string(o, "id", &format!("{p}.id"), 256),
                    name: c.string(o, "name", &format!("{p}.name"), max),
                    brand: c.string(o, "brand", &format!("{p}.brand"), 256),
                    variant: c.string(o, "variant", &format!("{p}.variant"), 256),
                    price: c.number(o, "price", &format!("{p}.price")),
                    quantity,
                    revenue: c.number(o, "revenue", &format!("{p}.revenue")),
                    currency: c.string(o, "currency", &format!("{p}.currency"), 8),
                })
            })
            .collect(),
        Some(other) => {
            c.err("items", format!("must be an array, got {}", kind(other)));
            vec![]
        }
    };
    let event = Event {
        event_id,
        name,
        timestamp,
        received_at,
        sent_at,
        tenant: tenant.to_string(),
        schema_version: SCHEMA_VERSION,
        user_id: c.string(obj, "user_id", "user_id", 256),
        anonymous_id: c.string(obj, "anonymous_id", "anonymous_id", 256),
        session_id: c.string(obj, "session_id", "session_id", 256),
        customer_id: c.string(obj, "customer_id", "customer_id", 256),
        channel,
        service: c.string(obj, "service", "service", 256),
        properties: c.properties(obj.get("properties"), "properties"),
        user_properties: c.properties(obj.get("user_properties"), "user_properties"),
        context,
        items,
        description: c.string(obj, "description", "description", max),
    };
    if c.errors.is_empty() {
        Ok(event)
    } else {
        Err(c.errors)
    }
}

/// Dotted lowercase segments `[a-z0-9_]+`, at most 8 levels.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    let segments: Vec<&str> = name.split('.').collect();
    if segments.len() > 8 {
        return Err(format!(
            "must have at most 8 dot-separated levels, got {}",
            segments.len()
        ));
    }
    for s in segments {
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "segment {s:?} must be non-empty lowercase [a-z0-9_]"
            ));
        }
    }
    Ok(())
}

/// RFC 3339 text or epoch milliseconds.
fn time_field(c: &mut Checker<'_>, obj: &Map<String, Value>, field: &str) -> Option<i64> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(ms) if ms > 0 => Some(ms),
            _ => {
                c.err(field, "epoch milliseconds must be a positive integer");
                None
            }
        },
        Some(Value::String(s)) => match weir_core::event::rfc3339_ms(s) {
            Ok(ms) => Some(ms),
            Err(e) => {
                c.err(
                    field,
                    format!("must be RFC 3339 or epoch milliseconds: {e}"),
                );
                None
            }
        },
        Some(other) => {
            c.err(
                field,
                format!(
                    "must be RFC 3339 text or epoch milliseconds, got {}",
                    kind(other)
                ),
            );
            None
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn map(v: Value) -> Result<Event, Vec<FieldError>> {
        to_event(&v, NOW, "acme", &Limits::default())
    }

    fn fields(r: Result<Event, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn minimal_event_gets_id_and_server_time() {
        let e = map(json!({"name": "page_view"})).unwrap();
        assert_eq!(e.timestamp, NOW);
        assert_eq!(e.received_at, NOW);
        assert_eq!(e.tenant, "acme");
        assert!(uuid::Uuid::parse_str(&e.event_id).is_ok());
    }

    #[test]
    fn full_event_maps_every_field() {
        let e = map(json!({
            "event_id": "abc", "name": "cart.add", "timestamp": "2023-11-14T22:13:20Z",
            "user_id": "u", "anonymous_id": "a", "channel": "web",
            "properties": {"sku": "x", "qty": 2, "price": 9.5, "gift": false},
            "context": {"url": "https://shop", "device": {"os": "ios"}, "app": {"version": "1.2"}},
            "items": [{"id": "sku1", "price": 9.5, "quantity": 2}]
        }))
        .unwrap();
        assert_eq!(e.timestamp, 1_700_000_000_000);
        assert_eq!(e.properties["qty"], PropertyValue::Long(2));
        assert_eq!(e.properties["price"], PropertyValue::Double(9.5));
        assert_eq!(
            e.context.unwrap().device.unwrap().os.as_deref(),
            Some("ios")
        );
        assert_eq!(e.items[0].quantity, Some(2));
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(fields(map(json!({"user_id": "u"}))), ["name"]);
        assert_eq!(fields(map(json!({"name": 5}))), ["name"]);
        assert_eq!(fields(map(json!({"name": "Cart.Add"}))), ["name"]);
        assert_eq!(
            fields(map(json!({"name": "a.b", "user_id": 7}))),
            ["user_id"]
        );
        assert_eq!(
            fields(map(json!({"name": "a", "channel": "fax"}))),
            ["channel"]
        );
        assert_eq!(
            fields(map(json!({"name": "a", "colour": "red"}))),
            ["colour"]
        );
        assert_eq!(
            fields(map(json!({"name": "a", "properties": {"x": {"y": 1}}}))),
            ["properties.x"]
        );
        assert_eq!(
            fields(map(json!({"name": "a", "timestamp": "yesterday"}))),
            ["timestamp"]
        );
        assert_eq!(
            fields(map(json!({"name": "a", "timestamp": NOW + 3_600_000}))),
            ["timestamp"]
        );
        assert_eq!(
            fields(map(json!({"name": "a", "items": [{"quantity": 1.5}]}))),
            ["items[0].quantity"]
        );
        assert_eq!(
            fields(map(json!({"name": "a", "event_id": "x".repeat(129)}))),
            ["event_id"]
        );
    }

    #[test]
    fn long_keys_are_rejected_and_quoted_short() {
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let errors = map(json!({"name": "a", "properties": {long.clone(): 1}})).unwrap_err();
        assert_eq!(errors[0].field, format!("properties.{}...", &long[..64]));
        assert!(errors[0].message.contains("at most 256 bytes"));
        let errors = map(json!({"name": "a", long.clone(): 1})).unwrap_err();
        assert_eq!(errors[0].field, format!("{}...", &long[..64]));
        assert!(map(json!({"name": "a", "properties": {"k".repeat(256): 1}})).is_ok());
    }

    #[test]
    fn events_past_the_maximum_age_are_refused_naming_the_limit() {
        let week = DEFAULT_MAX_EVENT_AGE_MS;
        assert!(map(json!({"name": "a", "timestamp": NOW - week})).is_ok());
        let errors = map(json!({"name": "a", "timestamp": NOW - week - 3_600_000})).unwrap_err();
        assert_eq!(errors[0].field, "timestamp");
        assert_eq!(
            errors[0].message,
            "is 169 h old; events older than 168 h are refused (max_event_age_ms)"
        );
        // The age is of the corrected time: a client clock a day slow with
        // sent_at is not refused for it.
        let day = 86_400_000;
        let slow = json!({"name": "a", "timestamp": NOW - week, "sent_at": NOW - day});
        assert_eq!(map(slow).unwrap().timestamp, NOW - week + day);
    }

    #[test]
    fn extreme_times_are_rejected_not_overflowed() {
        let r = map(json!({"name": "a", "timestamp": i64::MAX, "sent_at": 1}));
        assert_eq!(fields(r), ["timestamp"]);
        let r = map(json!({"name": "a", "timestamp": 1, "sent_at": i64::MAX}));
        assert_eq!(fields(r), ["timestamp"]);
    }

    #[test]
    fn sent_at_corrects_client_clock_skew() {
        // The client's clock is 10 s fast: it says it sent at NOW + 10 s.
        let e =
            map(json!({"name": "a", "timestamp": NOW + 5_000, "sent_at": NOW + 10_000})).unwrap();
        assert_eq!(e.timestamp, NOW - 5_000);
    }
}
