//! The transport-free core of the gateway: who is sending (the write key's
//! tenant), whether their events may come in now (rate limit, high-water
//! mark), which events are valid, and handing the valid ones to the sink.
//! HTTP (`handlers`) and gRPC (`grpc`) both call it, and differ only in how
//! they read a request and write an answer (`answers`).
//!
//! A batch is judged per event: the valid events are accepted even when
//! others in it are rejected; a batch with no valid event is refused.

use crate::compat::{self, Shape};
use crate::sink::{EventSink, PublishError};
use crate::validate::{to_event, FieldError, Limits};
use crate::wire::RejectedEntry;
use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde_json::Value;
use std::num::NonZeroU32;
use std::sync::Arc;
use weir_core::api_keys::{ApiKeys, AuthError};
use weir_core::event::now_ms;
use weir_core::Event;

/// What admission needs to judge a request.
pub struct Admission {
    pub sink: Arc<dyn EventSink>,
    pub limits: Limits,
    /// `None` when auth is off; every event then gets `default_tenant`.
    pub write_keys: Option<ApiKeys>,
    pub default_tenant: String,
    pub rate_limit: Option<DefaultKeyedRateLimiter<String>>,
    pub max_batch_events: usize,
    pub max_in_flight_events: usize,
}

/// Why a request, or all of its events, cannot be taken.
#[derive(Debug)]
pub enum Refusal {
    Unauthorized(AuthError),
    /// A single event that is not valid.
    InvalidEvent(Vec<FieldError>),
    /// A batch with no events.
    EmptyBatch,
    /// A batch with no valid event: each one's errors.
    NoValidEvent(Vec<RejectedEntry>),
    BatchTooLarge {
        max: usize,
        got: usize,
    },
    RateLimited {
        retry_after_secs: u64,
    },
    /// More events in one request than the key's whole bucket.
    OverBurst {
        events: u32,
    },
    /// Too many events already wait for Kafka's acknowledgement.
    KafkaBehind,
    /// The sink did not take the events; retry with the same ids.
    Unavailable(PublishError),
}

/// An event the sink has, with its place in the request and any warnings.
#[derive(Debug)]
pub struct AcceptedEvent {
    pub index: usize,
    pub event: Event,
    pub warnings: Vec<FieldError>,
}

/// What became of a batch whose valid events the sink has.
#[derive(Debug)]
pub struct BatchOutcome {
    pub accepted: Vec<AcceptedEvent>,
    pub rejected: Vec<RejectedEntry>,
}

/// One entry of a batch: its NDJSON line, if any, and the JSON, or why it
/// could not be parsed.
pub type BatchItem = (Option<usize>, Result<Value, String>);

/// A token bucket per key of `events_per_second`, or none when that is 0.
pub fn rate_limiter(events_per_second: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = NonZeroU32::new(events_per_second)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(DefaultKeyedRateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl Admission {
    /// The tenant of the request's write key (from `authorization`,
    /// `x-write-key` or, for beacons, `?write_key=`). A key header that is
    /// not text (bytes past ASCII) is a wrong key, not a missing one.
    pub fn tenant(&self, headers: &HeaderMap, query: Option<&str>) -> Result<String, Refusal> {
        let Some(keys) = &self.write_keys else {
            return Ok(self.default_tenant.clone());
        };
        let unreadable = [axum::http::header::AUTHORIZATION.as_str(), "x-write-key"]
            .iter()
            .flat_map(|h| headers.get_all(*h))
            .any(|v| v.to_str().is_err());
        if unreadable {
            return Err(Refusal::Unauthorized(AuthError::Invalid));
        }
        keys.tenant_with_query(headers, query)
            .map(str::to_string)
            .map_err(Refusal::Unauthorized)
    }

    /// Charges `n` events to the tenant's bucket, then checks the high-water mark.
    pub fn admit(&self, tenant: &str, n: usize) -> Result<(), Refusal> {
        if let Some(limiter) = &self.rate_limit {
            let events = n.clamp(1, u32::MAX as usize) as u32;
            let n = NonZeroU32::new(events).expect("at least 1");
            match limiter.check_key_n(&tenant.to_string(), n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    return Err(Refusal::RateLimited {
                        retry_after_secs: wait.as_secs() + 1,
                    });
                }
                Err(_) => return Err(Refusal::OverBurst { events }),
            }
        }
        let in_flight = self.sink.in_flight();
        metrics::gauge!("weir_ingest_producer_queue_events").set(in_flight as f64);
        if in_flight + n > self.max_in_flight_events {
            return Err(Refusal::KafkaBehind);
        }
        Ok(())
    }

    /// One event: mapped from a legacy shape, validated, admitted and
    /// published. Returns the event and its warnings once the sink has it.
    pub async fn one(
        &self,
        tenant: &str,
        traceparent: Option<&str>,
        shape: Option<Shape>,
        v: Value,
    ) -> Result<AcceptedEvent, Refusal> {
        let received_at = now_ms();
        let event =
            validate(v, shape, received_at, tenant, &self.limits).map_err(Refusal::InvalidEvent)?;
        self.admit(tenant, 1)?;
        self.publish(std::slice::from_ref(&event), traceparent)
            .await?;
        let warnings = self.warnings(&event, received_at);
        Ok(AcceptedEvent {
            index: 0,
            event,
            warnings,
        })
    }

    /// A batch: each entry mapped and validated on its own, the valid ones
    /// admitted and published together.
    pub async fn batch(
        &self,
        tenant: &str,
        traceparent: Option<&str>,
        shape: Option<Shape>,
        items: Vec<BatchItem>,
    ) -> Result<BatchOutcome, Refusal> {
        if items.is_empty() {
            return Err(Refusal::EmptyBatch);
        }
        if items.len() > self.max_batch_events {
            return Err(Refusal::BatchTooLarge {
                max: self.max_batch_events,
                got: items.len(),
            });
        }
        let received_at = now_ms();
        let (mut valid, mut rejected) = (vec![], vec![]);
        for (index, (line, item)) in items.into_iter().enumerate() {
            let result = item
                .map_err(|message| {
                    vec![FieldError {
                        field: String::new(),
                        message,
                    }]
                })
                .and_then(|v| validate(v, shape, received_at, tenant, &self.limits));
            match result {
                Ok(e) => valid.push((index, e)),
                Err(fields) => rejected.push(RejectedEntry {
                    index,
                    line,
                    message: field_errors(&fields),
                    fields,
                }),
            }
        }
        if valid.is_empty() {
            return Err(Refusal::NoValidEvent(rejected));
        }
        self.admit(tenant, valid.len())?;
        let events: Vec<Event> = valid.iter().map(|(_, e)| e.clone()).collect();
        self.publish(&events, traceparent).await?;
        let accepted = valid
            .into_iter()
            .map(|(index, event)| AcceptedEvent {
                index,
                warnings: self.warnings(&event, received_at),
                event,
            })
            .collect();
        Ok(BatchOutcome { accepted, rejected })
    }

    async fn publish(&self, events: &[Event], traceparent: Option<&str>) -> Result<(), Refusal> {
        self.sink.publish(events, traceparent).await.map_err(|e| {
            tracing::warn!(error = %e, "publish failed");
            Refusal::Unavailable(e)
        })
    }

    /// An accepted event's warnings, counted by the field they flag.
    fn warnings(&self, event: &Event, received_at: i64) -> Vec<FieldError> {
        let warnings = self.limits.warnings(event, received_at);
        for w in &warnings {
            metrics::counter!("weir_ingest_events_flagged_total", "field" => w.field.clone())
                .increment(1);
        }
        warnings
    }
}

/// Maps a legacy shape (the route's, or else the detected one) to the
/// native one, counting which shapes arrive, and validates it. Errors are
/// counted under weir's field names, and answered under the client's own.
fn validate(
    v: Value,
    shape: Option<Shape>,
    received_at: i64,
    tenant: &str,
    limits: &Limits,
) -> Result<Event, Vec<FieldError>> {
    let shape = shape.unwrap_or_else(|| compat::detect(&v));
    if shape != Shape::Native {
        metrics::counter!("weir_ingest_legacy_events_total", "shape" => format!("{shape:?}"))
            .increment(1);
    }
    let (native, names) = compat::to_native_named(v, Some(shape));
    to_event(&native, received_at, tenant, limits).map_err(|mut errors| {
        count_rejected(&errors);
        for e in &mut errors {
            e.field = names.client_field(&e.field);
        }
        errors
    })
}

/// All of an event's field errors in one sentence.
pub fn field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| {
            if e.field.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.field, e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Counts a rejected event's field errors by reason.
fn count_rejected(errors: &[FieldError]) {
    for f in errors {
        metrics::counter!("weir_ingest_events_rejected_total", "reason" => reason(f)).increment(1);
    }
}

/// A bounded label for why an event was rejected: its top-level field, or
/// `unknown_field` / `malformed` (field names sent by clients are unbounded).
fn reason(e: &FieldError) -> &'static str {
    if e.field.is_empty() {
        return "malformed";
    }
    let top = e.field.split(['.', '[']).next().unwrap_or("");
    crate::validate::event_fields()
        .iter()
        .find(|f| *f == top)
        .map_or("unknown_field", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::MemorySink;
    use serde_json::json;

    fn admission(sink: Arc<MemorySink>) -> Admission {
        Admission {
            sink,
            limits: Limits::default(),
            write_keys: None,
            default_tenant: "t".into(),
            rate_limit: rate_limiter(10, 10),
            max_batch_events: 3,
            max_in_flight_events: 100,
        }
    }

    #[tokio::test]
    async fn a_batch_takes_its_valid_events_and_names_the_rest() {
        let sink = Arc::new(MemorySink::new());
        let a = admission(sink.clone());
        let items = vec![
            (None, Ok(json!({"event_id": "e1", "name": "cart.add"}))),
            (None, Ok(json!({"event_id": "e2"}))),
            (Some(3), Err("line 3 is not JSON".to_string())),
        ];
        let out = a.batch("t", None, None, items).await.unwrap();
        assert_eq!(out.accepted.len(), 1);
        assert_eq!(out.accepted[0].event.event_id, "e1");
        let rejected: Vec<_> = out
            .rejected
            .iter()
            .map(|r| (r.index, r.message.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [(1, "name: is required"), (2, "line 3 is not JSON")]
        );
        assert_eq!(sink.events().len(), 1, "only the valid event is published");
    }

    #[tokio::test]
    async fn refusals_name_the_limit() {
        let sink = Arc::new(MemorySink::new());
        let a = admission(sink.clone());
        let many = (0..4).map(|_| (None, Ok(json!({})))).collect();
        assert!(matches!(
            a.batch("t", None, None, many).await,
            Err(Refusal::BatchTooLarge { max: 3, got: 4 })
        ));
        assert!(matches!(
            a.batch("t", None, None, vec![]).await,
            Err(Refusal::EmptyBatch)
        ));
        assert!(matches!(
            a.one("t", None, None, json!({"name": 7})).await,
            Err(Refusal::InvalidEvent(_))
        ));
        assert!(matches!(
            a.admit("t", 11),
            Err(Refusal::OverBurst { events: 11 })
        ));
        assert!(sink.events().is_empty());
    }
}
