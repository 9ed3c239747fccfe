//! `Event`: one event as ingest takes it, with its id fixed when it is
//! made, so every retry of it carries the same id and weir counts it once.

use serde_json::{json, Map, Value};

/// An event: a JSON object with at least `event_id` and `name`. Build one
/// with [`Event::new`] and its setters, or take any JSON ingest accepts
/// (weir's own shape or a legacy one) with [`Event::from_json`].
#[derive(Debug, Clone, PartialEq)]
pub struct Event(Map<String, Value>);

impl Event {
    /// An event named `name` (dotted lowercase segments, such as
    /// `cart.add`), with a new UUIDv7 id.
    pub fn new(name: impl Into<String>) -> Event {
        let mut m = Map::new();
        m.insert("event_id".into(), json!(uuid::Uuid::now_v7().to_string()));
        m.insert("name".into(), json!(name.into()));
        Event(m)
    }

    /// Any JSON object ingest takes; given an `event_id` unless it has one.
    /// `None` if `v` is not an object.
    pub fn from_json(v: Value) -> Option<Event> {
        let Value::Object(mut m) = v else { return None };
        if !m.get("event_id").is_some_and(Value::is_string) {
            m.insert("event_id".into(), json!(uuid::Uuid::now_v7().to_string()));
        }
        Some(Event(m))
    }

    /// The id weir deduplicates on.
    pub fn id(&self) -> &str {
        self.0["event_id"].as_str().unwrap_or_default()
    }

    /// Sets a top-level field (`user_id`, `timestamp` in epoch ms, `channel`, ...).
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Event {
        self.0.insert(field.into(), value.into());
        self
    }

    pub fn user_id(self, id: impl Into<String>) -> Event {
        self.with("user_id", id.into())
    }

    /// Event time, epoch milliseconds. Without it, ingest stamps its own.
    pub fn timestamp_ms(self, ms: i64) -> Event {
        self.with("timestamp", ms)
    }

    /// One property: a string, number or boolean.
    pub fn property(mut self, key: &str, value: impl Into<Value>) -> Event {
        let props = self
            .0
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(p) = props {
            p.insert(key.into(), value.into());
        }
        self
    }

    /// The event as JSON (without the `sent_at` each attempt stamps).
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// The event written once, as it will be sent on every attempt.
    pub(crate) fn encode(&self) -> Encoded {
        Encoded {
            id: self.id().to_string(),
            json: serde_json::to_vec(&self.0).expect("JSON values serialise"),
        }
    }
}

/// An event's JSON, written when it is queued: a batch is these bytes
/// joined, so a retry costs no serialisation and resends the same event.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub id: String,
    pub json: Vec<u8>,
}

impl Encoded {
    /// Appends the event to a batch body, with `"sent_at"` first when
    /// given (the JSON is an object, so it opens with `{`).
    pub fn write_to(&self, out: &mut Vec<u8>, sent_at: Option<i64>) {
        match sent_at {
            Some(t) => {
                out.extend_from_slice(format!("{{\"sent_at\":{t},").as_bytes());
                out.extend_from_slice(&self.json[1..]);
            }
            None => out.extend_from_slice(&self.json),
        }
    }

    /// Its bytes in a batch body.
    pub fn len(&self) -> usize {
        self.json.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_made_once_and_kept() {
        let e = Event::new("cart.add").user_id("u1").property("sku", "X1");
        let again = e.clone();
        assert_eq!(e.id(), again.id());
        assert_eq!(e.to_json()["properties"]["sku"], "X1");
        let given = Event::from_json(json!({"event_id": "e-1", "name": "a"})).unwrap();
        assert_eq!(given.id(), "e-1");
        let made = Event::from_json(json!({"name": "a"})).unwrap();
        assert_eq!(made.id().len(), 36);
        assert!(Event::from_json(json!([1])).is_none());
        let mut out = vec![];
        made.encode().write_to(&mut out, Some(5));
        let wire: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (&wire["sent_at"], &wire["event_id"]),
            (&json!(5), &json!(made.id()))
        );
        let mut out = vec![];
        made.encode().write_to(&mut out, None);
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            made.to_json()
        );
    }
}
