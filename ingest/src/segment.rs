//! The Segment Tracking API's message, mapped onto weir's event model, so
//! Segment's maintained SDKs (and PostHog's, RudderStack's and Jitsu's
//! Segment-compatible clients) send to weir by changing their host.
//!
//! A message is checked here first (`check`: its type, Segment's 32 KB
//! limit, the ids its type needs), then mapped (`to_native`), then
//! validated like any event. The routes are in `segment_routes`.
//!
//! - `track` becomes an event named after `event` (normalised as legacy
//!   names are: `Order Completed` → `order_completed`);
//! - `page` and `screen` become `page_view` and `screen_view`, the page's
//!   `name` and `category` as properties;
//! - `identify`, `group` and `alias` become events named `_identify`,
//!   `_group` and `_alias`. A normalised name never starts with `_`, so
//!   these cannot collide with a tracked event. Their traits travel as the
//!   event's `user_properties`; the aggregator keeps the latest of each
//!   user's and group's traits in ClickHouse (migration 0006).
//!
//! Nested `properties` and `traits` are flattened to dotted keys (weir's
//! property values are scalars), arrays kept as JSON text. Context fields
//! weir models (`ip`, `userAgent`, `locale`, `page.url`, `page.referrer`,
//! `app`, `device`, `os`) map onto its context; the rest of the context is
//! kept as `context.<path>` properties, so nothing the SDK sent is lost.

use crate::client_names::ClientNames;
use serde_json::{json, Map, Value};
use weir_core::event::normalize_name;

/// Segment's limit on one message, JSON-encoded.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Segment's limit on one `/v1/batch` request.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// The message types, as routes and `type` name them.
pub const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// The event names of the calls that are not events of their own.
pub const IDENTIFY_EVENT: &str = "_identify";
pub const GROUP_EVENT: &str = "_group";
pub const ALIAS_EVENT: &str = "_alias";

/// Keys of a `/v1/batch` body besides `batch`. `context` and
/// `integrations` apply to every message; `sentAt` to those without one;
/// `writeKey` and `metadata` are read by Segment only.
pub const BATCH_KEYS: [&str; 6] = [
    "batch",
    "sentAt",
    "context",
    "integrations",
    "writeKey",
    "metadata",
];

/// Whether `msg` can be mapped, and within Segment's limit: the reason,
/// naming the client's field, if not. `route_type` is the type the route
/// implies (`/v1/track`), `None` on `/v1/batch`.
pub fn check(msg: &Value, route_type: Option<&str>) -> Result<(), String> {
    let Value::Object(o) = msg else {
        return Err("a message must be a JSON object".into());
    };
    let size = serde_json::to_vec(msg).map_or(0, |v| v.len());
    if size > MAX_MESSAGE_BYTES {
        return Err(format!(
            "the message is {size} bytes; Segment's limit is {MAX_MESSAGE_BYTES} (32 KB) a message"
        ));
    }
    let t = match (o.get("type"), route_type) {
        (None | Some(Value::Null), Some(t)) => t,
        (Some(Value::String(t)), Some(r)) if t != r => {
            return Err(format!(
                "type: is {t:?}, but this route takes {r:?} messages"
            ))
        }
        (Some(Value::String(t)), _) if TYPES.contains(&t.as_str()) => t.as_str(),
        (None | Some(Value::Null), None) => {
            return Err(format!("type: is required: one of {}", TYPES.join(", ")))
        }
        _ => return Err(format!("type: must be one of {}", TYPES.join(", "))),
    };
    let has = |k: &str| o.get(k).is_some_and(|v| !v.is_null());
    match t {
        "alias" if !has("userId") => Err("userId: is required for alias".into()),
        "alias" if !has("previousId") => Err("previousId: is required for alias".into()),
        "alias" => Ok(()),
        _ if !has("userId") && !has("anonymousId") => {
            Err("userId or anonymousId: one is required".into())
        }
        "track" if !has("event") => Err("event: is required for track".into()),
        "group" if !has("groupId") => Err("groupId: is required for group".into()),
        _ => Ok(()),
    }
}

/// The native form of a checked message (the route's type filled in).
pub fn to_native(mut o: Map<String, Value>, names: &mut ClientNames) -> Value {
    let t = match o.remove("type") {
        Some(Value::String(t)) => t,
        _ => String::new(),
    };
    let mut e = Map::new();
    let mut props = Map::new();
    let name = match t.as_str() {
        "track" => {
            names.note("name", "event");
            match o.remove("event") {
                Some(Value::String(s)) => json!(normalize_name(&s)),
                other => other.unwrap_or(Value::Null),
            }
        }
        "page" | "screen" => {
            for k in ["name", "category"] {
                if let Some(v) = take(&mut o, k) {
                    names.note(format!("properties.{k}"), k);
                    props.insert(k.into(), v);
                }
            }
            json!(if t == "page" {
                "page_view"
            } else {
                "screen_view"
            })
        }
        "identify" => json!(IDENTIFY_EVENT),
        "group" => {
            if let Some(g) = take(&mut o, "groupId") {
                names.note("properties.group_id", "groupId");
                props.insert("group_id".into(), id_text(g));
            }
            json!(GROUP_EVENT)
        }
        "alias" => {
            if let Some(p) = take(&mut o, "previousId") {
                names.note("properties.previous_id", "previousId");
                props.insert("previous_id".into(), id_text(p));
            }
            json!(ALIAS_EVENT)
        }
        _ => Value::Null,
    };
    e.insert("name".into(), name);
    for (from, to) in [
        ("messageId", "event_id"),
        ("userId", "user_id"),
        ("anonymousId", "anonymous_id"),
    ] {
        if let Some(v) = take(&mut o, from) {
            names.note(to, from);
            e.insert(to.into(), id_text(v));
        }
    }
    // Segment's own precedence: the event time, else the time the SDK
    // first saw the call.
    for from in ["timestamp", "originalTimestamp"] {
        if let Some(v) = take(&mut o, from) {
            names.note("timestamp", from);
            e.insert("timestamp".into(), v);
            break;
        }
    }
    if let Some(v) = take(&mut o, "sentAt") {
        names.note("sent_at", "sentAt");
        e.insert("sent_at".into(), v);
    }
    if let Some(Value::String(c)) = take(&mut o, "channel") {
        let channel = match c.as_str() {
            "browser" | "client" | "web" => "web",
            "server" => "server",
            "mobile" => "mobile",
            _ => "other",
        };
        e.insert("channel".into(), json!(channel));
    }
    // Not an object: handed to validation as is, which names it.
    let mut odd_properties = None;
    match take(&mut o, "properties") {
        Some(Value::Object(m)) => flatten_into(&mut props, "", m),
        other => odd_properties = other,
    }
    if let Some(v) = take(&mut o, "traits") {
        names.note("user_properties", "traits");
        let traits = match v {
            Value::Object(m) => {
                let mut traits = Map::new();
                flatten_into(&mut traits, "", m);
                Value::Object(traits)
            }
            other => other,
        };
        e.insert("user_properties".into(), traits);
    }
    if let Some(Value::Object(ctx)) = take(&mut o, "context") {
        let context = context(ctx, &mut props, names);
        if !context.is_empty() {
            e.insert("context".into(), Value::Object(context));
        }
    }
    // Segment's server stamps these, or they steer Segment's destinations:
    // weir stamps its own receive time and has no destinations.
    for ignored in [
        "receivedAt",
        "integrations",
        "version",
        "writeKey",
        "_metadata",
        "options",
    ] {
        o.remove(ignored);
    }
    if let Some(odd) = odd_properties {
        e.insert("properties".into(), odd);
    } else if !props.is_empty() {
        e.insert("properties".into(), Value::Object(props));
    }
    // Anything else is unknown to Segment's spec: validation names it.
    e.extend(o);
    Value::Object(e)
}

fn take(o: &mut Map<String, Value>, k: &str) -> Option<Value> {
    o.remove(k).filter(|v| !v.is_null())
}

/// Segment ids may be numbers; weir's are text.
fn id_text(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.to_string()),
        other => other,
    }
}

/// Segment's context onto weir's: the fields weir models, and the rest as
/// `context.<path>` properties.
fn context(
    mut ctx: Map<String, Value>,
    props: &mut Map<String, Value>,
    names: &mut ClientNames,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (from, to) in [
        ("ip", "ip"),
        ("userAgent", "user_agent"),
        ("locale", "locale"),
    ] {
        if let Some(v) = take(&mut ctx, from) {
            names.note(format!("context.{to}"), format!("context.{from}"));
            out.insert(to.into(), v);
        }
    }
    if let Some(Value::Object(mut page)) = take(&mut ctx, "page") {
        for k in ["url", "referrer"] {
            if let Some(v) = take(&mut page, k) {
                names.note(format!("context.{k}"), format!("context.page.{k}"));
                out.insert(k.into(), v);
            }
        }
        if !page.is_empty() {
            ctx.insert("page".into(), Value::Object(page));
        }
    }
    if let Some(Value::Object(mut app)) = take(&mut ctx, "app") {
        let mut a = Map::new();
        if let Some(id) = take(&mut app, "namespace").or_else(|| take(&mut app, "name")) {
            a.insert("id".into(), id_text(id));
        }
        if let Some(v) = take(&mut app, "version") {
            names.note("context.app.version", "context.app.version");
            a.insert("version".into(), id_text(v));
        }
        out.insert("app".into(), Value::Object(a));
        if !app.is_empty() {
            ctx.insert("app".into(), Value::Object(app));
        }
    }
    let mut device = Map::new();
    if let Some(Value::Object(mut d)) = take(&mut ctx, "device") {
        for (from, to) in [
            ("type", "category"),
            ("manufacturer", "brand"),
            ("model", "model"),
        ] {
            if let Some(v) = take(&mut d, from) {
                names.note(
                    format!("context.device.{to}"),
                    format!("context.device.{from}"),
                );
                device.insert(to.into(), v);
            }
        }
        if !d.is_empty() {
            ctx.insert("device".into(), Value::Object(d));
        }
    }
    if let Some(Value::Object(mut os)) = take(&mut ctx, "os") {
        for (from, to) in [("name", "os"), ("version", "os_version")] {
            if let Some(v) = take(&mut os, from) {
                names.note(format!("context.device.{to}"), format!("context.os.{from}"));
                device.insert(to.into(), v);
            }
        }
        if !os.is_empty() {
            ctx.insert("os".into(), Value::Object(os));
        }
    }
    if !device.is_empty() {
        out.insert("device".into(), Value::Object(device));
    }
    flatten_into(props, "context.", ctx);
    out
}

/// Flattens `m` into `out`: nested objects as dotted keys under `prefix`,
/// arrays as JSON text, nulls dropped, scalars as they are.
fn flatten_into(out: &mut Map<String, Value>, prefix: &str, m: Map<String, Value>) {
    for (k, v) in m {
        match v {
            Value::Null => {}
            Value::Object(inner) => flatten_into(out, &format!("{prefix}{k}."), inner),
            Value::Array(_) => {
                out.insert(format!("{prefix}{k}"), json!(v.to_string()));
            }
            scalar => {
                out.insert(format!("{prefix}{k}"), scalar);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{to_event, Limits};
    use weir_core::event::PropertyValue;

    const NOW: i64 = 1_700_000_000_000;

    fn event(v: Value) -> Result<weir_core::Event, Vec<String>> {
        check(&v, None).map_err(|e| vec![e])?;
        let Value::Object(o) = v else { unreachable!() };
        let mut names = ClientNames::default();
        let native = to_native(o, &mut names);
        to_event(&native, NOW, "t", &Limits::default())
            .map_err(|es| es.iter().map(|e| names.client_field(&e.field)).collect())
    }

    #[test]
    fn every_call_type_maps_onto_an_event() {
        let track = event(json!({
            "type": "track", "event": "Order Completed", "userId": 42, "messageId": "m-1",
            "timestamp": "2023-11-14T22:13:20.000Z", "sentAt": "2023-11-14T22:13:21.000Z",
            "properties": {"revenue": 9.5, "coupon": {"code": "X"}, "products": [{"sku": "a"}]},
            "context": {"ip": "1.2.3.4", "userAgent": "ua", "library": {"name": "analytics-python", "version": "2.4.0"},
                        "page": {"url": "https://shop/a", "path": "/a"}, "os": {"name": "iOS", "version": "17"},
                        "device": {"type": "ios", "manufacturer": "Apple", "id": "d1"}},
            "integrations": {"All": false}, "receivedAt": "2023-11-14T22:13:22.000Z",
        }))
        .unwrap();
        assert_eq!(track.name, "order_completed");
        assert_eq!(track.event_id, "m-1");
        assert_eq!(track.user_id.as_deref(), Some("42"));
        // sentAt is 1 s ahead of the server's clock: weir corrects the
        // event time by that skew, as for its own sent_at.
        assert_eq!(track.timestamp, 1_699_999_999_000);
        assert_eq!(track.sent_at, Some(1_700_000_001_000));
        assert_eq!(track.properties["revenue"], PropertyValue::Double(9.5));
        assert_eq!(
            track.properties["coupon.code"],
            PropertyValue::String("X".into())
        );
        assert_eq!(
            track.properties["products"],
            PropertyValue::String(r#"[{"sku":"a"}]"#.into())
        );
        assert_eq!(
            track.properties["context.library.name"],
            PropertyValue::String("analytics-python".into())
        );
        assert_eq!(
            track.properties["context.page.path"],
            PropertyValue::String("/a".into())
        );
        assert_eq!(
            track.properties["context.device.id"],
            PropertyValue::String("d1".into())
        );
        let ctx = track.context.unwrap();
        assert_eq!(ctx.url.as_deref(), Some("https://shop/a"));
        assert_eq!(ctx.ip.as_deref(), Some("1.2.3.4"));
        let device = ctx.device.unwrap();
        assert_eq!(
            (device.os.as_deref(), device.brand.as_deref()),
            (Some("iOS"), Some("Apple"))
        );

        let page = event(json!({"type": "page", "name": "Home", "anonymousId": "a1",
                                "properties": {"title": "Welcome"}}))
        .unwrap();
        assert_eq!(page.name, "page_view");
        assert_eq!(page.anonymous_id.as_deref(), Some("a1"));
        assert_eq!(
            page.properties["name"],
            PropertyValue::String("Home".into())
        );
        let screen = event(json!({"type": "screen", "name": "Cart", "userId": "u"})).unwrap();
        assert_eq!(screen.name, "screen_view");

        let identify = event(json!({"type": "identify", "userId": "u",
                                    "traits": {"plan": "pro", "logins": 3, "address": {"city": "Oslo"}}}))
        .unwrap();
        assert_eq!(identify.name, IDENTIFY_EVENT);
        assert_eq!(
            identify.user_properties["address.city"],
            PropertyValue::String("Oslo".into())
        );
        assert_eq!(identify.user_properties["logins"], PropertyValue::Long(3));

        let group = event(json!({"type": "group", "userId": "u", "groupId": 7,
                                 "traits": {"name": "Acme"}}))
        .unwrap();
        assert_eq!(
            (group.name.as_str(), &group.properties["group_id"]),
            (GROUP_EVENT, &PropertyValue::String("7".into()))
        );
        let alias = event(json!({"type": "alias", "userId": "u", "previousId": "a1"})).unwrap();
        assert_eq!(
            (alias.name.as_str(), &alias.properties["previous_id"]),
            (ALIAS_EVENT, &PropertyValue::String("a1".into()))
        );
    }

    #[test]
    fn refusals_name_segments_fields_and_limits() {
        let refused = |v: Value| event(v).unwrap_err();
        assert_eq!(
            refused(json!({"type": "track", "userId": "u"})),
            ["event: is required for track"]
        );
        assert_eq!(
            refused(json!({"type": "track", "event": "x"})),
            ["userId or anonymousId: one is required"]
        );
        assert_eq!(
            refused(json!({"type": "merge", "userId": "u"})),
            ["type: must be one of track, identify, page, screen, group, alias"]
        );
        assert_eq!(
            refused(json!({"type": "alias", "userId": "u"})),
            ["previousId: is required for alias"]
        );
        assert_eq!(
            refused(json!({"type": "group", "userId": "u"})),
            ["groupId: is required for group"]
        );
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let e = refused(
            json!({"type": "track", "event": "x", "userId": "u", "properties": {"p": big}}),
        );
        assert!(e[0].contains("Segment's limit is 32768 (32 KB)"), "{e:?}");
        // After mapping, validation errors name Segment's fields.
        assert_eq!(
            refused(json!({"type": "track", "event": "x", "userId": "u", "timestamp": "soon"})),
            ["timestamp"]
        );
        assert_eq!(
            refused(json!({"type": "track", "event": "x", "anonymousId": "a", "sentAt": 5.5})),
            ["sentAt"]
        );
        assert_eq!(
            refused(json!({"type": "track", "event": "x", "userId": "u", "colour": "red"})),
            ["colour"]
        );
        assert_eq!(
            refused(json!({"type": "track", "event": "!!!", "userId": "u"})),
            ["event"]
        );
        assert!(check(&json!({"type": "page"}), Some("track"))
            .unwrap_err()
            .contains("this route takes \"track\""));
        assert!(check(&json!({"userId": "u", "event": "x"}), Some("track")).is_ok());
    }
}
