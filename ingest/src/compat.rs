//! The payload shapes of the systems weir replaces, mapped onto weir's event
//! model, so their clients can switch by changing a URL and adding a key.
//!
//! Each mapping turns a legacy JSON object into a native one, which then goes
//! through the same validation as any event. `detect` tells the shapes apart
//! by the fields only they use.

pub use crate::client_names::ClientNames;
use serde_json::{json, Map, Value};
use weir_core::event::normalize_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Native,
    /// `name`, `channel_type`, `event_params[{key, *_value}]`, `device`, `app_info`, ...
    EventStream,
    /// `event_name`, `description`, `created_at`, `customer_id` (`POST /api/write`).
    EventService,
    /// `{event, url, properties}` from a first-party browser snippet.
    FirstParty,
    /// `timestamp`, `service`, `type`, `user_id`, `details` (a JSON string).
    Logeater,
    /// A Segment Tracking API message (`segment`): only on its own routes,
    /// never detected.
    Segment,
}

const EVENT_STREAM_ONLY: &[&str] = &[
    "channel_type",
    "event_params",
    "user_params",
    "user_pseudo_id",
    "app_info",
    "previous_timestamp",
    "date",
    "device",
];

pub fn detect(v: &Value) -> Shape {
    let Value::Object(o) = v else {
        return Shape::Native;
    };
    let has = |k: &str| o.contains_key(k);
    if has("event_name") {
        Shape::EventService
    } else if has("type") && has("service") && !has("name") {
        Shape::Logeater
    } else if has("event") && !has("name") {
        Shape::FirstParty
    } else if has("name") && EVENT_STREAM_ONLY.iter().any(|k| has(k)) {
        Shape::EventStream
    } else {
        Shape::Native
    }
}

/// The native form of `v`; a native event is returned unchanged.
pub fn to_native(v: Value) -> Value {
    to_native_named(v, None).0
}

/// The native form of `v` read as `shape` (detected when `None`: weir's
/// own routes take any shape, a legacy route only its own), and where each
/// of its fields came from, so a validation error can name the field the
/// client sent.
pub fn to_native_named(v: Value, shape: Option<Shape>) -> (Value, ClientNames) {
    let shape = shape.unwrap_or_else(|| detect(&v));
    let mut names = ClientNames::default();
    let Value::Object(o) = v else {
        return (v, names);
    };
    let native = match shape {
        Shape::Native => Value::Object(o),
        Shape::EventStream => event_stream(o, &mut names),
        Shape::EventService => event_service(o, &mut names),
        Shape::FirstParty => first_party(o, &mut names),
        Shape::Logeater => logeater(o, &mut names),
        Shape::Segment => crate::segment::to_native(o, &mut names),
    };
    (native, names)
}

/// Epoch numbers come in seconds, milliseconds or microseconds; weir uses
/// milliseconds. Anything below 1e11 is seconds (until year 5138), anything
/// above 1e14 microseconds.
pub fn epoch_to_ms(v: &Value) -> Value {
    match v.as_f64() {
        Some(n) if n.abs() < 1e11 => json!((n * 1000.0) as i64),
        Some(n) if n.abs() > 1e14 => json!((n / 1000.0) as i64),
        Some(n) => json!(n as i64),
        None => v.clone(),
    }
}

fn take(o: &mut Map<String, Value>, k: &str) -> Option<Value> {
    o.remove(k).filter(|v| !v.is_null())
}

fn string_name(v: Option<Value>) -> Option<Value> {
    v.map(|n| match n {
        Value::String(s) => Value::String(normalize_name(&s)),
        other => other, // validation names the wrong type
    })
}

/// A native event map holding the legacy name under `key`, normalised.
fn named(o: &mut Map<String, Value>, key: &str, names: &mut ClientNames) -> Map<String, Value> {
    // A native `name` on a legacy route stays (see `e.extend(o)` in each
    // mapping), and so is named as sent.
    if !o.contains_key("name") {
        names.note("name", key);
    }
    let mut e = Map::new();
    e.insert(
        "name".into(),
        string_name(take(o, key)).unwrap_or(Value::Null),
    );
    e
}

/// Moves each non-null `from` field of `src` to `to` in `dst`, noting the
/// move under the paths of `src` (`at.0`) and `dst` (`at.1`).
fn carry(
    src: &mut Map<String, Value>,
    dst: &mut Map<String, Value>,
    renames: &[(&str, &str)],
    names: &mut ClientNames,
    at: (&str, &str),
) {
    for (from, to) in renames {
        if let Some(v) = take(src, from) {
            names.note(format!("{}{to}", at.1), format!("{}{from}", at.0));
            dst.insert(to.to_string(), v);
        }
    }
}

/// `[{key, string_value | number_value | int_value | double_value | boolean_value}]` to a map.
fn params(v: Option<Value>) -> Value {
    let Some(Value::Array(list)) = v else {
        return v.unwrap_or(Value::Null);
    };
    let mut out = Map::new();
    for p in list {
        let Value::Object(mut p) = p else { continue };
        let Some(Value::String(key)) = p.remove("key") else {
            continue;
        };
        let value = [
            "string_value",
            "number_value",
            "int_value",
            "double_value",
            "float_value",
            "boolean_value",
        ]
        .iter()
        .find_map(|k| p.remove(*k).filter(|v| !v.is_null()))
        .unwrap_or(Value::Null);
        out.insert(key, value);
    }
    Value::Object(out)
}

fn event_stream(mut o: Map<String, Value>, names: &mut ClientNames) -> Value {
    let mut e = named(&mut o, "name", names);
    if o.contains_key("event_params") {
        names.note("properties", "event_params");
    }
    let mut props = match params(take(&mut o, "event_params")) {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        // Not a list: handed to validation as is, which names the field.
        other => {
            e.insert("event_params".into(), other);
            Map::new()
        }
    };
    carry(
        &mut o,
        &mut e,
        &[
            ("event_id", "event_id"),
            ("user_id", "user_id"),
            ("user_pseudo_id", "anonymous_id"),
            ("channel_type", "channel"),
            ("session_id", "session_id"),
        ],
        names,
        ("", ""),
    );
    match (take(&mut o, "timestamp"), take(&mut o, "date")) {
        (Some(ts), _) => {
            e.insert("timestamp".into(), epoch_to_ms(&ts));
        }
        (None, Some(date)) => {
            names.note("timestamp", "date");
            e.insert("timestamp".into(), date);
        }
        (None, None) => {}
    }
    if let Some(prev) = take(&mut o, "previous_timestamp") {
        names.note("properties.previous_timestamp", "previous_timestamp");
        props.insert("previous_timestamp".into(), epoch_to_ms(&prev));
    }
    if let Some(up) = take(&mut o, "user_params") {
        names.note("user_properties", "user_params");
        e.insert("user_properties".into(), params(Some(up)));
    }
    let mut context = Map::new();
    if let Some(Value::Object(mut d)) = take(&mut o, "device") {
        let mut device = Map::new();
        carry(
            &mut d,
            &mut device,
            &[
                ("category", "category"),
                ("mobile_brand_name", "brand"),
                ("mobile_model_name", "model"),
                ("operating_system", "os"),
                ("operating_system_version", "os_version"),
                ("browser_name", "browser"),
                ("browser_version", "browser_version"),
            ],
            names,
            ("device.", "context.device."),
        );
        if let Some(lang) = take(&mut d, "language") {
            names.note("context.locale", "device.language");
            context.insert("locale".into(), lang);
        }
        if let Some(host) = take(&mut d, "hostname") {
            names.note("properties.hostname", "device.hostname");
            props.insert("hostname".into(), host);
        }
        // Anything else on the device is kept, so nothing is silently dropped.
        for (k, v) in d {
            names.note(format!("properties.device_{k}"), format!("device.{k}"));
            props.insert(format!("device_{k}"), v);
        }
        context.insert("device".into(), Value::Object(device));
    }
    if let Some(app) = take(&mut o, "app_info") {
        names.note("context.app", "app_info");
        context.insert("app".into(), app);
    }
    if !context.is_empty() {
        e.insert("context".into(), Value::Object(context));
    }
    if let Some(Value::Array(items)) = take(&mut o, "items") {
        let items: Vec<Value> = items
            .into_iter()
            .enumerate()
            .map(|(i, it)| match it {
                Value::Object(mut it) => {
                    let usd = it.contains_key("price_in_usd") || it.contains_key("revenue_in_usd");
                    for (from, to) in [("price_in_usd", "price"), ("revenue_in_usd", "revenue")] {
                        if let Some(v) = it.remove(from) {
                            names.note(format!("items[{i}].{to}"), format!("items[{i}].{from}"));
                            it.insert(to.into(), v);
                        }
                    }
                    if usd {
                        it.entry("currency").or_insert(json!("USD"));
                    }
                    Value::Object(it)
                }
                other => other,
            })
            .collect();
        e.insert("items".into(), Value::Array(items));
    }
    if !props.is_empty() {
        e.insert("properties".into(), Value::Object(props));
    }
    // Whatever is left is unknown to both models; validation names it.
    e.extend(o);
    Value::Object(e)
}

fn event_service(mut o: Map<String, Value>, names: &mut ClientNames) -> Value {
    let mut e = named(&mut o, "event_name", names);
    carry(
        &mut o,
        &mut e,
        &[("description", "description"), ("created_at", "timestamp")],
        names,
        ("", ""),
    );
    if let Some(c) = take(&mut o, "customer_id") {
        e.insert(
            "customer_id".into(),
            if let Value::Number(n) = c {
                json!(n.to_string())
            } else {
                c
            },
        );
    }
    e.extend(o);
    Value::Object(e)
}

fn first_party(mut o: Map<String, Value>, names: &mut ClientNames) -> Value {
    let mut e = named(&mut o, "event", names);
    if let Some(url) = take(&mut o, "url") {
        names.note("context.url", "url");
        e.insert("context".into(), json!({ "url": url }));
    }
    e.extend(o);
    Value::Object(e)
}

fn logeater(mut o: Map<String, Value>, names: &mut ClientNames) -> Value {
    let mut e = named(&mut o, "type", names);
    if let Some(ts) = take(&mut o, "timestamp") {
        e.insert("timestamp".into(), epoch_to_ms(&ts));
    }
    carry(
        &mut o,
        &mut e,
        &[("service", "service"), ("user_id", "user_id")],
        names,
        ("", ""),
    );
    if let Some(details) = take(&mut o, "details") {
        names.note("properties", "details");
        e.insert("properties".into(), flatten_details(details));
    }
    e.extend(o);
    Value::Object(e)
}

/// `details` is a JSON string of any shape: its top-level scalars become
/// properties, nested values stay as JSON text, and anything that is not a
/// JSON object is kept whole under `details`.
fn flatten_details(details: Value) -> Value {
    let parsed = match &details {
        Value::String(s) => serde_json::from_str::<Value>(s).ok(),
        other => Some(other.clone()),
    };
    match parsed {
        Some(Value::Object(m)) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    Value::Object(_) | Value::Array(_) => (k, Value::String(v.to_string())),
                    scalar => (k, scalar),
                })
                .collect(),
        ),
        _ => {
            json!({ "details": details.as_str().map(str::to_string).unwrap_or_else(|| details.to_string()) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{to_event, Limits};
    use weir_core::event::PropertyValue;

    const NOW: i64 = 1_700_000_000_000;

    fn event(v: Value) -> weir_core::Event {
        to_event(&to_native(v), NOW, "t", &Limits::default()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn event_stream_shape() {
        let e = event(json!({
            "name": "page_view", "channel_type": "mobile", "timestamp": 1_699_999_990, "previous_timestamp": 1_699_999_980,
            "user_id": "user-123", "user_pseudo_id": "pseudo-456",
            "event_params": [{"key": "page_title", "string_value": "Home"}, {"key": "scroll", "number_value": 75.5},
                             {"key": "logged_in", "boolean_value": true}],
            "user_params": [{"key": "subscription", "string_value": "premium"}],
            "device": {"category": "mobile", "mobile_brand_name": "Apple", "mobile_model_name": "iPhone 14",
                       "operating_system": "iOS", "operating_system_version": "17.0", "language": "en-US",
                       "browser_name": "Safari", "browser_version": "17.0", "hostname": "example.com"},
            "app_info": {"id": "com.example.app", "version": "2.1.0"},
            "items": [{"id": "SKU-001", "name": "Blue T-Shirt", "price_in_usd": 29.99, "quantity": 2, "revenue_in_usd": 59.98}]
        }));
        assert_eq!(
            (e.name.as_str(), e.channel.as_deref()),
            ("page_view", Some("mobile"))
        );
        assert_eq!(
            e.timestamp, 1_699_999_990_000,
            "epoch seconds become milliseconds"
        );
        assert_eq!(e.anonymous_id.as_deref(), Some("pseudo-456"));
        assert_eq!(
            e.properties["page_title"],
            PropertyValue::String("Home".into())
        );
        assert_eq!(e.properties["scroll"], PropertyValue::Double(75.5));
        assert_eq!(e.properties["logged_in"], PropertyValue::Boolean(true));
        assert_eq!(
            e.properties["previous_timestamp"],
            PropertyValue::Long(1_699_999_980_000)
        );
        assert_eq!(
            e.properties["hostname"],
            PropertyValue::String("example.com".into())
        );
        assert_eq!(
            e.user_properties["subscription"],
            PropertyValue::String("premium".into())
        );
        let ctx = e.context.unwrap();
        let d = ctx.device.unwrap();
        assert_eq!(
            (d.brand.as_deref(), d.os.as_deref(), d.browser.as_deref()),
            (Some("Apple"), Some("iOS"), Some("Safari"))
        );
        assert_eq!(ctx.locale.as_deref(), Some("en-US"));
        assert_eq!(ctx.app.unwrap().id.as_deref(), Some("com.example.app"));
        assert_eq!(
            (
                e.items[0].price,
                e.items[0].revenue,
                e.items[0].currency.as_deref()
            ),
            (Some(29.99), Some(59.98), Some("USD"))
        );
    }

    #[test]
    fn event_service_shape() {
        let e = event(
            json!({"event_name": "new customer", "description": "account was created", "customer_id": 18,
                             "created_at": "2023-11-14T21:32:26.498Z"}),
        );
        assert_eq!(e.name, "new_customer");
        assert_eq!(e.description.as_deref(), Some("account was created"));
        assert_eq!(e.customer_id.as_deref(), Some("18"));
        assert_eq!(e.timestamp, 1_699_997_546_498);
    }

    /// The fields a legacy event's validation errors name, sorted.
    fn error_fields(v: Value) -> Vec<String> {
        let (native, names) = to_native_named(v, None);
        let mut fields: Vec<String> = to_event(&native, NOW, "t", &Limits::default())
            .unwrap_err()
            .iter()
            .map(|e| names.client_field(&e.field))
            .collect();
        fields.sort();
        fields
    }

    #[test]
    fn errors_name_the_clients_own_fields() {
        assert_eq!(
            error_fields(json!({"event_name": null, "description": "d", "created_at": "soon"})),
            ["created_at", "event_name"]
        );
        assert_eq!(
            error_fields(
                json!({"name": "a", "channel_type": "fridge", "date": "soon",
                                "device": {"operating_system": 7}, "user_pseudo_id": 5,
                                "items": [{"price_in_usd": "x"}]})
            ),
            [
                "channel_type",
                "date",
                "device.operating_system",
                "items[0].price_in_usd",
                "user_pseudo_id",
            ]
        );
        assert_eq!(
            error_fields(json!({"event": 3, "url": 4})),
            ["event", "url"]
        );
        assert_eq!(
            error_fields(json!({"type": "", "service": "s", "timestamp": "x"})),
            ["timestamp", "type"]
        );
        // A native event's fields are its own.
        assert_eq!(error_fields(json!({"name": 1})), ["name"]);
    }

    #[test]
    fn first_party_shape() {
        let e = event(
            json!({"event": "clicked_event", "url": "https://blog/post", "properties": {"id": "buy", "x": 3}}),
        );
        assert_eq!(e.name, "clicked_event");
        assert_eq!(e.context.unwrap().url.as_deref(), Some("https://blog/post"));
        assert_eq!(e.properties["x"], PropertyValue::Long(3));
    }

    #[test]
    fn logeater_shape() {
        let e = event(
            json!({"timestamp": 1_699_999_999, "service": "cart-svc", "type": "cart.add", "user_id": "u1",
                             "details": "{\"sku\":\"X\",\"qty\":2,\"meta\":{\"a\":1}}"}),
        );
        assert_eq!(
            (e.name.as_str(), e.service.as_deref()),
            ("cart.add", Some("cart-svc"))
        );
        assert_eq!(e.timestamp, 1_699_999_999_000);
        assert_eq!(e.properties["qty"], PropertyValue::Long(2));
        assert_eq!(
            e.properties["meta"],
            PropertyValue::String("{\"a\":1}".into())
        );
        let e = event(
            json!({"timestamp": 1_699_999_999, "service": "s", "type": "x", "details": "not json"}),
        );
        assert_eq!(
            e.properties["details"],
            PropertyValue::String("not json".into())
        );
    }

    #[test]
    fn malformed_event_params_are_named_not_dropped() {
        let v = to_native(json!({"name": "a", "event_params": "oops"}));
        let err = to_event(&v, NOW, "t", &Limits::default()).unwrap_err();
        assert_eq!(err[0].field, "event_params");
    }

    #[test]
    fn native_events_pass_unchanged_and_unknown_legacy_fields_are_still_named() {
        let v = json!({"name": "a.b", "user_id": "u"});
        assert_eq!(to_native(v.clone()), v);
        let err = to_event(
            &to_native(json!({"event_name": "x", "colour": "red"})),
            NOW,
            "t",
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err[0].field, "colour");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::validate::{to_event, Limits};
    use proptest::prelude::*;

    /// Arbitrary JSON, biased towards the keys the mappers and validator look at.
    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("name".to_string()),
            Just("event".to_string()),
            Just("event_name".to_string()),
            Just("type".to_string()),
            Just("service".to_string()),
            Just("timestamp".to_string()),
            Just("event_params".to_string()),
            Just("device".to_string()),
            Just("details".to_string()),
            Just("properties".to_string()),
            Just("items".to_string()),
            Just("context".to_string()),
            Just("user_id".to_string()),
            Just("channel".to_string()),
            Just("sent_at".to_string()),
            "[a-z_]{1,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
            Just(json!("cart.add")),
            Just(json!("2024-01-15T10:30:00Z")),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Whatever arrives, mapping and validation answer without panicking,
        /// and what they accept obeys the event model.
        #[test]
        fn any_json_is_accepted_or_named_never_a_panic(v in json_value()) {
            match to_event(&to_native(v), 1_700_000_000_000, "t", &Limits::default()) {
                Ok(e) => {
                    prop_assert!(!e.name.is_empty() && e.name.len() <= 256);
                    prop_assert!(e.name.split('.').all(|s| !s.is_empty()));
                    prop_assert!(!e.event_id.is_empty() && e.event_id.len() <= 128);
                }
                Err(errors) => prop_assert!(!errors.is_empty()),
            }
        }
    }
}
