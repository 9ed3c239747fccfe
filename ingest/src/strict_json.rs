//! Strict JSON for request bodies: UTF-8 checked first, nesting bounded,
//! and no key twice in an object (serde_json would keep the last one
//! silently), with errors that name the line, column or key path. NDJSON
//! is parsed line by line, so one bad line loses no good ones.

use crate::body::{quote, BodyError};
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// One JSON document: UTF-8, at most `MAX_DEPTH` deep, and no key twice in
/// an object (serde_json would keep the last one silently).
pub fn json(bytes: &[u8]) -> Result<Value, BodyError> {
    let text = utf8(bytes)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict(&Step::Root)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| json_error(e, text))?;
    Ok(value)
}

fn utf8(bytes: &[u8]) -> Result<&str, BodyError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        BodyError::InvalidUtf8 {
            line: valid.iter().filter(|b| **b == b'\n').count() + 1,
            column: valid.len() - line_start + 1,
        }
    })
}

/// Marks the message of a duplicate-key error, which carries the key's path.
const DUPLICATE: &str = "\u{0}duplicate key: ";

fn json_error(e: serde_json::Error, text: &str) -> BodyError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    let message = full
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&full);
    if let Some(key) = message.strip_prefix(DUPLICATE) {
        return BodyError::DuplicateKey {
            line,
            column,
            key: key.to_string(),
        };
    }
    if message == "recursion limit exceeded" {
        return BodyError::TooDeep { line, column };
    }
    let mut message = message.to_string();
    if non_finite_at(text, line, column) {
        message.push_str("; NaN and Infinity are not JSON numbers");
    }
    BodyError::Malformed {
        line,
        column,
        message,
    }
}

/// Whether the token at (or just before) a parse error spells NaN or Infinity.
fn non_finite_at(text: &str, line: usize, column: usize) -> bool {
    let line_start = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum::<usize>();
    let at = line_start + column.saturating_sub(1);
    [at.saturating_sub(1), at].iter().any(|&i| {
        text.get(i..).is_some_and(|t| {
            let t = t.trim_start_matches(['-', '+']).as_bytes();
            ["nan", "inf"]
                .iter()
                .any(|w| t.len() >= w.len() && t[..w.len()].eq_ignore_ascii_case(w.as_bytes()))
        })
    })
}

/// Where a value sits in a document, to name a duplicate key by its path.
enum Step<'a> {
    Root,
    Key(&'a Step<'a>, &'a str),
    Index(&'a Step<'a>, usize),
}

impl Step<'_> {
    fn path(&self) -> String {
        match self {
            Step::Root => String::new(),
            Step::Key(up, k) => match up.path() {
                p if p.is_empty() => quote(k),
                p => format!("{p}.{}", quote(k)),
            },
            Step::Index(up, i) => format!("{}[{i}]", up.path()),
        }
    }
}

/// A `serde_json::Value` that refuses duplicate keys.
struct Strict<'a>(&'a Step<'a>);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict(&Step::Index(self.0, out.len())))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let step = Step::Key(self.0, &key);
            if out.contains_key(&key) {
                return Err(A::Error::custom(format!("{DUPLICATE}{}", step.path())));
            }
            let value = map.next_value_seed(Strict(&step))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// One JSON document per non-blank line: each line parsed on its own, so a
/// bad line is rejected without losing the good ones. Returns (line number,
/// parse result) pairs, lines counted from 1.
pub fn ndjson(bytes: &[u8]) -> Vec<(usize, Result<Value, BodyError>)> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| (i + 1, json(l).map_err(|e| e.on_line(i + 1))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::MAX_DEPTH;

    #[test]
    fn ndjson_keeps_good_lines_and_numbers_bad_ones() {
        let lines = ndjson(b"{\"a\":1}\n\n{bad\n{\"b\":2}\n{\"c\":1,\"c\":2}\n\xff\n");
        assert_eq!(lines.len(), 5);
        assert!(lines[0].1.is_ok() && lines[2].1.is_ok());
        assert_eq!(lines[1].0, 3);
        assert!(matches!(
            &lines[1].1,
            Err(BodyError::Malformed { line: 3, .. })
        ));
        assert!(matches!(
            &lines[3].1,
            Err(BodyError::DuplicateKey { line: 5, key, .. }) if key == "c"
        ));
        assert_eq!(
            lines[4].1,
            Err(BodyError::InvalidUtf8 { line: 6, column: 1 })
        );
    }

    #[test]
    fn duplicate_keys_are_named_by_their_path() {
        let dup = |s: &str| match json(s.as_bytes()) {
            Err(BodyError::DuplicateKey { key, .. }) => key,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(dup(r#"{"name":"a","name":"b"}"#), "name");
        assert_eq!(
            dup(r#"{"name":"a","properties":{"plan":"x","plan":"y"}}"#),
            "properties.plan"
        );
        assert_eq!(
            dup(r#"{"events":[{"name":"a"},{"name":"a","context":{"ip":"1","ip":"2"}}]}"#),
            "events[1].context.ip"
        );
        // The same key in sibling objects is no duplicate.
        assert!(json(br#"[{"a":1},{"a":1}]"#).is_ok());
        let e = json(b"{\n \"k\": 1,\n \"k\": 2}").unwrap_err();
        assert!(
            matches!(e, BodyError::DuplicateKey { line: 3, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(r#"duplicate key "k" at line 3"#),
            "{e}"
        );
    }

    #[test]
    fn nesting_is_bounded_at_the_recursion_limit() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(json(nested(MAX_DEPTH).as_bytes()).is_ok());
        let e = json(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert_eq!(
            e,
            BodyError::TooDeep {
                line: 1,
                column: MAX_DEPTH + 1
            }
        );
        assert!(e.to_string().contains("deeper than 127 levels"), "{e}");
        // Far deeper input stops at the limit, without exhausting the stack.
        assert!(matches!(
            json(nested(1_000_000).as_bytes()),
            Err(BodyError::TooDeep { .. })
        ));
    }

    #[test]
    fn nan_and_infinity_are_named() {
        for doc in [
            r#"{"x": NaN}"#,
            r#"{"x": Infinity}"#,
            r#"{"x": -Infinity}"#,
            r#"[1, nan]"#,
            r#"[+inf]"#,
            "NaN",
        ] {
            let e = json(doc.as_bytes()).unwrap_err();
            assert!(
                matches!(&e, BodyError::Malformed { message, .. } if message.contains("NaN and Infinity")),
                "{doc}: {e:?}"
            );
        }
        let e = json(br#"{"x": nope}"#).unwrap_err();
        assert!(!e.to_string().contains("NaN"), "{e}");
        // Numbers out of f64's range are refused, not made infinite.
        assert!(matches!(
            json(b"[1e400]"),
            Err(BodyError::Malformed { message, .. }) if message.contains("out of range")
        ));
    }

    #[test]
    fn invalid_utf8_is_located() {
        assert_eq!(
            json(b"{\"a\":\n \"x\xc3\x28\"}"),
            Err(BodyError::InvalidUtf8 { line: 2, column: 4 })
        );
        // Overlong forms and UTF-8-encoded surrogates are not UTF-8 either.
        for bad in [
            &b"\"\xc0\x80\""[..],
            b"\"\xed\xa0\x80\"",
            b"\"\xf0\x9f\x98\"",
        ] {
            assert!(matches!(json(bad), Err(BodyError::InvalidUtf8 { .. })));
        }
        assert_eq!(json("\"é\"".as_bytes()), Ok(Value::String("é".into())));
    }

    proptest::proptest! {
        /// Without duplicate keys, the strict parser reads what serde_json reads.
        #[test]
        fn strict_parsing_agrees_with_serde_json(v in any_json()) {
            let text = v.to_string();
            let expected: Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(json(text.as_bytes()), Ok(expected));
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
