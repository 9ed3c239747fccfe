//! The hostile-traffic catalogue behind `tests/tests/hostile_ingest.rs`:
//! the ingest routes and how each takes events, what can be wrong with a
//! request, and the exact answer each case must get. [`generator`] deals
//! the seeded cases; [`slowloris`] holds connections open with clients
//! that trickle headers and bodies.

pub mod generator;
pub mod slowloris;

use reqwest::header::{HeaderName, HeaderValue};

/// The body limit the test configures ingest with (`WEIR_MAX_BODY_BYTES`).
pub const MAX_BODY: usize = 256 * 1024;
/// `{"events":[`, which a batch puts before its first event.
const BATCH_PREFIX: usize = 11;

/// How a route takes events and answers them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// One event: `/v1/events`, `/events`, `/api/write`.
    Single,
    /// `{"events": [...]}`: `/v1/events/batch`, `/events/batch`.
    Batch,
    /// One event a line.
    Ndjson,
}

const ROUTES: &[(&str, Shape)] = &[
    ("/v1/events", Shape::Single),
    ("/events", Shape::Single),
    ("/api/write", Shape::Single),
    ("/v1/events/batch", Shape::Batch),
    ("/events/batch", Shape::Batch),
    ("/v1/events/ndjson", Shape::Ndjson),
];

/// What is wrong with a generated event document.
#[derive(Debug, Clone)]
enum Problem {
    /// Found while parsing the document (its code, what its message says,
    /// the duplicate key's path, the column of a bad UTF-8 byte).
    Parse {
        code: &'static str,
        says: String,
        key: Option<String>,
        column: Option<usize>,
    },
    /// A valid document, but an invalid event: the field and what is said of it.
    Event { field: String, says: String },
    /// Refused whatever the route: the status, code and what is said.
    Request {
        status: u16,
        code: &'static str,
        says: String,
    },
}

/// The answer a case must get.
#[derive(Debug, Clone)]
pub enum Expect {
    /// A JSON error: status, code, what the message says, the `key` and
    /// `column` fields, and a field named in `fields`.
    Error {
        status: u16,
        code: &'static str,
        says: String,
        key: Option<String>,
        column: Option<usize>,
        field: Option<String>,
    },
    /// 202 with exactly these ids accepted and `rejected` events rejected.
    Accepted { ids: Vec<String>, rejected: usize },
}

/// One generated request and the answer it must get.
pub struct Case {
    pub n: usize,
    pub category: &'static str,
    pub route: &'static str,
    pub shape: Shape,
    pub query: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
    pub expect: Expect,
}

/// A JSON error with this status and code that says `says`.
fn error(status: u16, code: &'static str, says: &str) -> Expect {
    Expect::Error {
        status,
        code,
        says: says.to_string(),
        key: None,
        column: None,
        field: None,
    }
}

/// What a route answers to a document with `problem`.
fn expect(shape: Shape, problem: &Problem) -> Expect {
    match (problem, shape) {
        (Problem::Request { status, code, says }, _) => error(*status, code, says),
        // NDJSON parses each line on its own: a bad line is a rejected event.
        (Problem::Parse { says, .. }, Shape::Ndjson) => error(400, "invalid_batch", says),
        (
            Problem::Parse {
                code,
                says,
                key,
                column,
            },
            _,
        ) => {
            let batch = shape == Shape::Batch;
            Expect::Error {
                status: 400,
                code,
                says: if batch {
                    says.replace("duplicate key \"", "duplicate key \"events[0].")
                } else {
                    says.clone()
                },
                key: key.as_ref().map(|k| {
                    if batch {
                        format!("events[0].{k}")
                    } else {
                        k.clone()
                    }
                }),
                column: column.map(|c| if batch { c + BATCH_PREFIX } else { c }),
                field: None,
            }
        }
        (Problem::Event { field, says }, Shape::Single) => Expect::Error {
            status: 400,
            code: "invalid_event",
            says: format!("{field}: {says}"),
            key: None,
            column: None,
            field: Some(field.clone()),
        },
        (Problem::Event { field, says }, _) => {
            error(400, "invalid_batch", &format!("{field}: {says}"))
        }
    }
}
