//! The seeded generator of hostile and good requests: deep nesting, huge
//! strings, invalid UTF-8, NaN and Infinity, duplicate keys, wrong content
//! types, gzip bombs and broken gzip, unreadable headers, and good events
//! alone or beside a bad one, each with the answer it must get.

use super::{error, expect, Case, Expect, Problem, Shape, MAX_BODY, ROUTES};
use crate::load::{Lcg, WRITE_KEY};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{json, Value};
use std::io::Write;

/// A header from its name and raw value bytes.
fn header(name: &'static str, value: &[u8]) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_bytes(value).expect("a header value"),
    )
}

/// `data` gzipped.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A gzip bomb: `members` gzip members of 1 MiB of `byte` each, which
/// MultiGzDecoder inflates one after the other.
fn bomb(byte: u8, members: usize) -> Vec<u8> {
    gzip(&vec![byte; 1 << 20]).repeat(members)
}

/// The seeded case generator.
pub struct Gen {
    rng: Lcg,
    bombs: Vec<Vec<u8>>,
}

impl Gen {
    /// A generator seeded with `seed`, with its three gzip bombs made.
    pub fn new(seed: u64) -> Gen {
        Gen {
            rng: Lcg::new(seed),
            bombs: vec![bomb(0, 20), bomb(b' ', 8), bomb(b'[', 4)],
        }
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn word(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }

    /// A valid event, as a JSON object.
    fn event(&mut self, id: &str) -> Value {
        let mut e = json!({
            "event_id": id,
            "name": self.pick(&["shop.view", "cart.add", "checkout.done"]).to_string(),
            "user_id": format!("u-{}", self.below(50)),
            "properties": {"plan": self.pick(&["free", "pro"]).to_string(), "n": self.below(1000)},
        });
        if self.below(3) == 0 {
            e["context"] = json!({"url": "https://shop.example/", "device": {"os": "ios"}});
        }
        e
    }

    /// One hostile event document (a single line) and what is wrong with it.
    fn hostile(&mut self, id: &str) -> (&'static str, Vec<u8>, Problem) {
        let categories = [
            "deep_nesting",
            "huge_string",
            "invalid_utf8",
            "nan_infinity",
            "duplicate_key",
            "content_type",
            "gzip",
            "header_bytes",
        ];
        let category = *self.pick(&categories);
        let base = self.event(id);
        let head = format!(r#"{{"event_id":"{id}","name":"shop.view","#);
        match category {
            "deep_nesting" => {
                let (open, close) = if self.below(2) == 0 {
                    ("[", "]")
                } else {
                    (r#"{"a":"#, "}")
                };
                if self.below(4) == 0 {
                    // Deep but within the parser's limit: the validator names it.
                    let d = 1 + self.below(100);
                    let doc = format!(
                        r#"{head}"properties":{{"x":{}1{}}}}}"#,
                        open.repeat(d),
                        close.repeat(d)
                    );
                    let kind = if open == "[" { "an array" } else { "an object" };
                    let problem = Problem::Event {
                        field: "properties.x".into(),
                        says: format!("must be a string, number or boolean, got {kind}"),
                    };
                    return (category, doc.into_bytes(), problem);
                }
                let d = 128 + self.below(20_000);
                let close_all = if self.below(2) == 0 {
                    close.repeat(d)
                } else {
                    String::new() // and never closed
                };
                let doc = format!(
                    r#"{head}"properties":{{"x":{}1{close_all}}}}}"#,
                    open.repeat(d)
                );
                let problem = Problem::Parse {
                    code: "too_deep",
                    says: "nested deeper than 127 levels".into(),
                    key: None,
                    column: None,
                };
                (category, doc.into_bytes(), problem)
            }
            "huge_string" => {
                let (doc, problem) = match self.below(5) {
                    0 => {
                        let k = self.word(6);
                        let v = "x".repeat(8193 + self.below(30_000));
                        (
                            format!(r#"{head}"properties":{{"{k}":"{v}"}}}}"#),
                            Problem::Event {
                                field: format!("properties.{k}"),
                                says: "must be at most 8192 bytes".into(),
                            },
                        )
                    }
                    1 => {
                        let name = "a".repeat(257 + self.below(5_000));
                        (
                            format!(r#"{{"event_id":"{id}","name":"{name}"}}"#),
                            Problem::Event {
                                field: "name".into(),
                                says: "must be at most 256 bytes".into(),
                            },
                        )
                    }
                    2 => {
                        let k = "k".repeat(257 + self.below(20_000));
                        (
                            format!(r#"{head}"properties":{{"{k}":1}}}}"#),
                            Problem::Event {
                                field: format!("properties.{}...", &k[..64]),
                                says: "keys must be at most 256 bytes".into(),
                            },
                        )
                    }
                    3 => {
                        let field = *self.pick(&["user_id", "session_id", "anonymous_id"]);
                        let v = "u".repeat(257 + self.below(5_000));
                        (
                            format!(r#"{head}"{field}":"{v}"}}"#),
                            Problem::Event {
                                field: field.into(),
                                says: "must be at most 256 bytes".into(),
                            },
                        )
                    }
                    _ => {
                        let v = "d".repeat(MAX_BODY + 1 + self.below(64 * 1024));
                        (
                            format!(r#"{head}"description":"{v}"}}"#),
                            Problem::Request {
                                status: 413,
                                code: "body_too_large",
                                says: format!("request body exceeds {MAX_BODY} bytes"),
                            },
                        )
                    }
                };
                (category, doc.into_bytes(), problem)
            }
            "invalid_utf8" => {
                let bad: &[u8] = self.pick::<&[u8]>(&[
                    &b"\xff"[..],
                    b"\x80",
                    b"\xc0\xaf",
                    b"\xed\xa0\x80",
                    b"\xf0\x9f\x98",
                    b"\xc3",
                    b"\xf8\x88\x80\x80\x80",
                ]);
                let mut doc = format!(r#"{head}"properties":{{"t":"caf"#).into_bytes();
                let column = doc.len() + 1;
                doc.extend_from_slice(bad);
                doc.extend_from_slice(br#"e"}}"#);
                let problem = Problem::Parse {
                    code: "invalid_utf8",
                    says: "not valid UTF-8".into(),
                    key: None,
                    column: Some(column),
                };
                (category, doc, problem)
            }
            "nan_infinity" => {
                let token =
                    *self.pick(&["NaN", "Infinity", "-Infinity", "nan", "+Infinity", "inf"]);
                let doc = match self.below(3) {
                    0 => format!(r#"{head}"properties":{{"x":{token}}}}}"#),
                    1 => format!(r#"{{"event_id":"{id}","name":"a","timestamp":{token}}}"#),
                    _ => format!(r#"{head}"items":[{{"id":"i","price":{token},"quantity":1}}]}}"#),
                };
                let problem = Problem::Parse {
                    code: "malformed_json",
                    says: "NaN and Infinity are not JSON numbers".into(),
                    key: None,
                    column: None,
                };
                (category, doc.into_bytes(), problem)
            }
            "duplicate_key" => {
                let (doc, key) = match self.below(5) {
                    0 => (
                        format!(r#"{{"event_id":"{id}","name":"a","name":"b"}}"#),
                        "name".to_string(),
                    ),
                    1 => (
                        format!(r#"{head}"properties":{{"plan":"free","n":1,"plan":"pro"}}}}"#),
                        "properties.plan".to_string(),
                    ),
                    2 => (
                        format!(r#"{head}"context":{{"device":{{"os":"a","os":"b"}}}}}}"#),
                        "context.device.os".to_string(),
                    ),
                    3 => (
                        format!(r#"{head}"items":[{{"id":"a"}},{{"id":"b","id":"c"}}]}}"#),
                        "items[1].id".to_string(),
                    ),
                    _ => (
                        format!(r#"{{"event_id":"{id}","event_id":"other-{id}","name":"a"}}"#),
                        "event_id".to_string(),
                    ),
                };
                let problem = Problem::Parse {
                    code: "duplicate_key",
                    says: format!("duplicate key {key:?}"),
                    key: Some(key),
                    column: None,
                };
                (category, doc.into_bytes(), problem)
            }
            // The bytes of these are a good event: only the request is wrong.
            "content_type" | "gzip" | "header_bytes" => (
                category,
                base.to_string().into_bytes(),
                Problem::Event {
                    field: String::new(),
                    says: String::new(),
                },
            ),
            _ => unreachable!(),
        }
    }

    /// A hostile case on a random route.
    pub fn hostile_case(&mut self, n: usize) -> Case {
        let id = format!("bad-{n}");
        let (category, doc, problem) = self.hostile(&id);
        let (route, shape) = *self.pick(ROUTES);
        let body = match shape {
            Shape::Batch => [br#"{"events":["#.as_slice(), &doc, b"]}"].concat(),
            Shape::Single | Shape::Ndjson => doc.clone(),
        };
        let mut case = Case {
            n,
            category,
            route,
            shape,
            query: String::new(),
            headers: vec![header(
                "authorization",
                format!("Bearer {WRITE_KEY}").as_bytes(),
            )],
            body,
            expect: expect(shape, &problem),
        };
        match category {
            "content_type" => {
                let (value, says): (&[u8], &str) = *self.pick(&[
                    (
                        &b"application/xml"[..],
                        "\"application/xml\" is not supported",
                    ),
                    (
                        b"text/html; charset=utf-8",
                        "\"text/html\" is not supported",
                    ),
                    (
                        b"multipart/form-data; boundary=xyz",
                        "\"multipart/form-data\"",
                    ),
                    (b"image/png", "\"image/png\""),
                    (b"application/octet-stream", "\"application/octet-stream\""),
                    (b"application/json; charset=utf-16", "charset \"utf-16\""),
                    (b"text/plain; charset=ISO-8859-1", "charset \"iso-8859-1\""),
                    (b"application/json; nonsense", "not name=value"),
                    (b";;;", "\"\" is not supported"),
                    (b"application/js\xffon", "not ASCII text"),
                ]);
                case.headers.push(header("content-type", value));
                if self.below(10) == 0 {
                    // Two Content-Types, each fine alone.
                    case.headers.pop();
                    case.headers
                        .push(header("content-type", b"application/json"));
                    case.headers.push(header("content-type", b"text/plain"));
                    case.expect = error(415, "unsupported_media_type", "not several");
                } else {
                    case.expect = error(415, "unsupported_media_type", says);
                }
            }
            "gzip" => match self.below(5) {
                0 | 1 => {
                    let b = self.below(self.bombs.len());
                    case.body = self.bombs[b].clone();
                    case.headers.push(header("content-encoding", b"gzip"));
                    case.expect = error(
                        413,
                        "body_too_large",
                        &format!("request body exceeds {MAX_BODY} bytes"),
                    );
                }
                2 => {
                    let mut gz = gzip(&case.body);
                    let cut = 10 + self.below(gz.len() - 10);
                    gz.truncate(cut);
                    case.body = gz;
                    case.headers.push(header("content-encoding", b"gzip"));
                    case.expect = error(400, "invalid_encoding", "invalid gzip body");
                }
                3 => {
                    // A gzip header, then garbage.
                    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
                    gz.extend((0..200).map(|_| self.below(256) as u8));
                    case.body = gz;
                    case.headers.push(header("content-encoding", b"gzip"));
                    case.expect = error(400, "invalid_encoding", "invalid gzip body");
                }
                _ => {
                    let (value, says): (&[u8], &str) = *self.pick(&[
                        (&b"br"[..], "\"br\" is not supported"),
                        (b"deflate", "\"deflate\" is not supported"),
                        (b"gzip, gzip", "\"gzip, gzip\" is not supported"),
                        (b"gz\xffip", "\"<not ASCII text>\" is not supported"),
                    ]);
                    case.body = gzip(&case.body);
                    case.headers.push(header("content-encoding", value));
                    case.expect = error(415, "unsupported_encoding", says);
                }
            },
            "header_bytes" => {
                // A write-key header that is not text: a wrong key.
                let bad: &[u8] = self.pick::<&[u8]>(&[
                    &b"\xff\xfe"[..],
                    b"test-write-key-1\x80",
                    b"\xc3\xa9t\xc3\xa9",
                ]);
                case.headers.clear();
                if self.below(2) == 0 {
                    case.headers.push(header("x-write-key", bad));
                } else {
                    case.headers
                        .push(header("authorization", &[b"Bearer ", bad].concat()));
                }
                case.expect = error(401, "unauthorized", "the write key is not valid");
            }
            _ => {
                // Some hostile documents come gzipped: the same answer.
                if self.below(8) == 0 && !matches!(problem, Problem::Request { .. }) {
                    case.body = gzip(&case.body);
                    case.headers.push(header("content-encoding", b"gzip"));
                }
            }
        }
        case
    }

    /// A case the gateway must accept: good events, alone or with bad ones,
    /// with the key in each place it may be.
    pub fn good_case(&mut self, n: usize) -> Case {
        let (route, shape) = *self.pick(ROUTES);
        let count = if shape == Shape::Single {
            1
        } else {
            1 + self.below(5)
        };
        let ids: Vec<String> = (0..count).map(|i| format!("good-{n}-{i}")).collect();
        let mut docs: Vec<String> = ids.iter().map(|id| self.event(id).to_string()).collect();
        let mut rejected = 0;
        if shape != Shape::Single && self.below(3) == 0 {
            // One bad event in the batch: rejected, the others accepted.
            let (_, doc, problem) = loop {
                let bad = self.hostile(&format!("bad-{n}-in-batch"));
                if matches!(bad.2, Problem::Event { ref field, .. } if !field.is_empty()) {
                    break bad;
                }
            };
            let _ = problem;
            docs.insert(self.below(docs.len() + 1), String::from_utf8(doc).unwrap());
            rejected = 1;
        }
        let mut body = match shape {
            Shape::Single => docs[0].clone().into_bytes(),
            Shape::Batch => format!(r#"{{"events":[{}]}}"#, docs.join(",")).into_bytes(),
            Shape::Ndjson => docs.join("\n").into_bytes(),
        };
        let mut headers = vec![];
        let mut query = String::new();
        match self.below(5) {
            0 => headers.push(header("x-write-key", WRITE_KEY.as_bytes())),
            1 => query = format!("?write_key={WRITE_KEY}"),
            2 => {
                use base64::Engine;
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"));
                headers.push(header("authorization", format!("Basic {basic}").as_bytes()));
            }
            _ => headers.push(header(
                "authorization",
                format!("Bearer {WRITE_KEY}").as_bytes(),
            )),
        }
        match self.below(4) {
            0 => headers.push(header("content-type", b"application/json")),
            1 => headers.push(header("content-type", b"text/plain;charset=UTF-8")),
            _ => {}
        }
        if self.below(5) == 0 {
            body = gzip(&body);
            headers.push(header("content-encoding", b"gzip"));
        }
        Case {
            n,
            category: "good",
            route,
            shape,
            query,
            headers,
            body,
            expect: Expect::Accepted { ids, rejected },
        }
    }
}
