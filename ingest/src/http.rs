//! The event API: `POST /v1/events` (one event), `POST /v1/events/batch`
//! (`{"events": [...]}`) and `POST /v1/events/ndjson` (one event a line).
//!
//! A request's journey: authenticate the write key (`auth`), read the body
//! under the size limit and inflate gzip (`body`), parse, validate each event
//! (`validate`), charge the key's rate limit, publish the valid events
//! (`publisher`), and answer 202 only after Kafka acknowledged them.
//!
//! Batches are answered per event: valid events are accepted even when
//! others in the same batch are rejected (202 with a `rejected` list); a
//! batch with no valid event is a 400.

use crate::body::{self, BodyError};
use crate::compat;
use crate::publisher::{EventPublisher, PublishError};
use crate::validate::{to_event, FieldError, Limits};
use crate::wire::{
    Accepted, AcceptedEntry, BatchAnswer, EventServiceAnswer, EventServiceLog, EventStreamAccepted,
    EventStreamBatchAnswer, RejectedEntry,
};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde_json::{json, Value};
use std::num::NonZeroU32;
use std::sync::Arc;
use tracing::Instrument;
use weir_core::api_keys::{ApiKeys, AuthError};
use weir_core::event::now_ms;
use weir_core::trace_context;

pub struct ApiState {
    pub publisher: EventPublisher,
    pub limits: Limits,
    /// `None` when auth is off; every event then gets `default_tenant`.
    pub write_keys: Option<ApiKeys>,
    pub default_tenant: String,
    pub rate_limit: Option<DefaultKeyedRateLimiter<String>>,
    pub max_body_bytes: usize,
    /// How long a body may take to arrive (`http.body_read_timeout_ms`).
    pub body_read_timeout: Option<std::time::Duration>,
    pub max_batch_events: usize,
    pub max_in_flight_events: usize,
    pub requests: Arc<tokio::sync::Semaphore>,
    pub cors: Option<tower_http::cors::CorsLayer>,
}

/// The CORS policy for `origins` (`*`, a comma-separated list, or empty for none).
pub fn cors(origins: &str) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = origins.trim();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins == "*" {
        AllowOrigin::any()
    } else {
        let list = origins
            .split(',')
            .map(|o| HeaderValue::from_str(o.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("cors_allowed_origins: {e}"))?;
        AllowOrigin::list(list)
    };
    let headers = [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::HeaderName::from_static("x-write-key"),
    ];
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::POST, axum::http::Method::OPTIONS])
            .allow_headers(headers)
            .max_age(std::time::Duration::from_secs(3600)),
    ))
}

/// A token bucket per key of `events_per_second`, or none when that is 0.
pub fn rate_limiter(events_per_second: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = NonZeroU32::new(events_per_second)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(DefaultKeyedRateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

/// The event API, its OpenAPI spec and Swagger UI, behind the in-flight
/// request limit and the CORS policy.
pub fn router(state: Arc<ApiState>) -> Router {
    let limit = state.requests.clone();
    let cors = state.cors.clone();
    let (api, spec) = crate::routes::api(state);
    let router = api
        .merge(weir_core::api_docs::router(spec))
        .layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| {
                let limit = limit.clone();
                async move {
                    // A permit per request in flight; none left means overload, said at once.
                    match limit.try_acquire_owned() {
                        Ok(_permit) => next.run(req).await,
                        Err(_) => overloaded("too many requests in flight"),
                    }
                }
            },
        ))
        .layer(axum::middleware::from_fn(trace_request))
        .layer(axum::middleware::from_fn(count_requests));
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Opens the request's span as a child of the caller's `traceparent`. The
/// parent must be set before a span starts, so this cannot wait for the
/// handler's own span, which becomes this one's child.
async fn trace_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let span =
        tracing::info_span!("http_request", method = %req.method(), path = %req.uri().path());
    let incoming = req
        .headers()
        .get(trace_context::HEADER)
        .and_then(|v| v.to_str().ok());
    trace_context::join(&span, incoming);
    next.run(req).instrument(span).await
}

/// Counts every request by route and status, and times it.
async fn count_requests(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("weir_ingest_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("weir_ingest_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A JSON error body: `{"error": {"code": ..., "message": ..., ...extra}}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>, extra: Value) -> Response {
    let mut body = json!({"code": code, "message": message.into()});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    metrics::counter!("weir_ingest_rejected_requests_total", "code" => code.to_string())
        .increment(1);
    (status, Json(json!({ "error": body }))).into_response()
}

fn body_error(e: BodyError) -> Response {
    let message = e.to_string();
    let (status, code, extra) = match e {
        BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", json!({})),
        BodyError::Timeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout", json!({})),
        BodyError::Unreadable(_) => (StatusCode::BAD_REQUEST, "body_unreadable", json!({})),
        BodyError::BadEncoding(_) => (StatusCode::BAD_REQUEST, "invalid_encoding", json!({})),
        BodyError::UnsupportedEncoding(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            json!({}),
        ),
        BodyError::UnsupportedMediaType(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            json!({}),
        ),
        BodyError::InvalidUtf8 { line, column } => (
            StatusCode::BAD_REQUEST,
            "invalid_utf8",
            json!({"line": line, "column": column}),
        ),
        BodyError::Malformed { line, column, .. } => (
            StatusCode::BAD_REQUEST,
            "malformed_json",
            json!({"line": line, "column": column}),
        ),
        BodyError::TooDeep { line, column } => (
            StatusCode::BAD_REQUEST,
            "too_deep",
            json!({"line": line, "column": column}),
        ),
        BodyError::DuplicateKey { line, column, key } => (
            StatusCode::BAD_REQUEST,
            "duplicate_key",
            json!({"line": line, "column": column, "key": key}),
        ),
    };
    error(status, code, message, extra)
}

fn overloaded(message: &str) -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        message,
        json!({}),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Who sent a request: the write key's tenant, and the trace context that
/// goes on the Kafka records.
pub(crate) struct Caller {
    pub tenant: String,
    pub traceparent: Option<String>,
}

/// Authenticates, checks the Content-Type, joins the caller's trace, and
/// reads the body.
async fn accept(
    state: &ApiState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Caller, axum::body::Bytes), Response> {
    let tenant = match &state.write_keys {
        None => state.default_tenant.clone(),
        Some(keys) => match write_key_tenant(keys, query, headers) {
            Ok(t) => t.to_string(),
            Err(e) => {
                let message = match e {
                    AuthError::Missing => "a write key is required: Authorization: Bearer <key>, Basic, or X-Write-Key",
                    AuthError::Invalid => "the write key is not valid",
                };
                let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", message, json!({}));
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                body::discard(body).await;
                return Err(r);
            }
        },
    };
    if let Err(e) = body::check_content_type(headers) {
        body::discard(body).await;
        return Err(body_error(e));
    }
    let bytes = body::read(headers, body, state.max_body_bytes, state.body_read_timeout)
        .await
        .map_err(body_error)?;
    let incoming = headers
        .get(trace_context::HEADER)
        .and_then(|v| v.to_str().ok());
    // The records carry the handler's span (see `trace_request`).
    let traceparent = trace_context::outgoing(&tracing::Span::current(), incoming);
    Ok((
        Caller {
            tenant,
            traceparent,
        },
        bytes,
    ))
}

/// The tenant of the request's write key. A key header that is not text
/// (bytes past ASCII) is a wrong key, not a missing one.
fn write_key_tenant<'k>(
    keys: &'k ApiKeys,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<&'k str, AuthError> {
    let unreadable = [header::AUTHORIZATION.as_str(), "x-write-key"]
        .iter()
        .flat_map(|h| headers.get_all(*h))
        .any(|v| v.to_str().is_err());
    if unreadable {
        return Err(AuthError::Invalid);
    }
    keys.tenant_with_query(headers, query)
}

/// Why events cannot be taken right now.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    RateLimited {
        retry_after_secs: u64,
    },
    /// More events in one request than the key's whole bucket.
    OverBurst {
        events: u32,
    },
    /// Too many events already wait for Kafka's acknowledgement.
    KafkaBehind,
}

impl ApiState {
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
        let in_flight = self.publisher.in_flight();
        metrics::gauge!("weir_ingest_producer_queue_events").set(in_flight as f64);
        if in_flight + n > self.max_in_flight_events {
            return Err(Refusal::KafkaBehind);
        }
        Ok(())
    }
}

fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::RateLimited { retry_after_secs } => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this write key is over its rate limit",
                json!({}),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        Refusal::OverBurst { events } => error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("{events} events exceed this key's burst; send smaller batches"),
            json!({}),
        ),
        Refusal::KafkaBehind => {
            overloaded("Kafka is behind: too many events wait for acknowledgement")
        }
    }
}

fn publish_error(e: PublishError) -> Response {
    tracing::warn!(error = %e, "publish failed");
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
        json!({}),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub(crate) fn field_errors(errors: &[FieldError]) -> String {
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

/// The browser snippet; see the comment at its top for its use.
pub(crate) async fn snippet() -> Response {
    let headers = [
        (
            header::CONTENT_TYPE,
            "application/javascript; charset=utf-8",
        ),
        (header::CACHE_CONTROL, "public, max-age=300"),
    ];
    (headers, include_str!("../assets/weir.js")).into_response()
}

/// How a route answers: weir's own shape, or that of the system it stands in for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Style {
    Weir,
    /// event-stream: `{"id": ...}` and `{"ids": [...]}`.
    EventStream,
    /// event-service: `{"log": {...}}`.
    EventService,
}

/// Maps a legacy shape to the native one, counting which shapes arrive.
fn native(v: Value) -> Value {
    let shape = compat::detect(&v);
    if shape != compat::Shape::Native {
        metrics::counter!("weir_ingest_legacy_events_total", "shape" => format!("{shape:?}"))
            .increment(1);
    }
    compat::to_native(v)
}

// `query` is not recorded: it may hold `?write_key=`.
#[tracing::instrument(name = "post_event", skip(state, query, headers, body))]
pub(crate) async fn single_as(
    style: Style,
    state: &ApiState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let (caller, bytes) = match accept(state, query, headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let v = match body::json(&bytes) {
        Ok(v) => native(v),
        Err(e) => return body_error(e),
    };
    let received_at = now_ms();
    let event = match to_event(&v, received_at, &caller.tenant, &state.limits) {
        Ok(e) => e,
        Err(errors) => {
            count_rejected(&errors);
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_event",
                field_errors(&errors),
                json!({ "fields": errors }),
            );
        }
    };
    if let Err(r) = state.admit(&caller.tenant, 1) {
        return refusal(r);
    }
    if let Err(e) = state
        .publisher
        .publish(std::slice::from_ref(&event), caller.traceparent.as_deref())
        .await
    {
        return publish_error(e);
    }
    let warnings = state.limits.warnings(&event, received_at);
    flag(&warnings);
    let event_id = event.event_id.clone();
    match style {
        Style::Weir => accepted(Accepted { event_id, warnings }),
        Style::EventStream => accepted(EventStreamAccepted { id: event_id }),
        Style::EventService => accepted(EventServiceAnswer {
            event_id,
            log: EventServiceLog {
                created_at: weir_core::event::ms_to_rfc3339(event.timestamp),
                event_name: event.name,
                description: event.description,
                customer_id: event.customer_id,
            },
        }),
    }
}

fn accepted(body: impl serde::Serialize) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Counts accepted-but-flagged events by the field that was flagged.
fn flag(warnings: &[FieldError]) {
    for w in warnings {
        metrics::counter!("weir_ingest_events_flagged_total", "field" => w.field.clone())
            .increment(1);
    }
}

#[tracing::instrument(name = "post_batch", skip(state, query, headers, body))]
pub(crate) async fn batch_as(
    style: Style,
    state: &ApiState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let (caller, bytes) = match accept(state, query, headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let list = match body::json(&bytes) {
        Ok(Value::Object(mut o)) if o.len() == 1 && o.contains_key("events") => {
            o.remove("events").unwrap_or(Value::Null)
        }
        Ok(other @ Value::Array(_)) => other,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_batch",
                "a batch is {\"events\": [...]} or a JSON array",
                json!({}),
            )
        }
        Err(e) => return body_error(e),
    };
    let Value::Array(items) = list else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            "events must be an array",
            json!({}),
        );
    };
    let items = items.into_iter().map(|v| (None, Ok(v))).collect();
    publish_many(style, state, &caller, items).await
}

#[tracing::instrument(name = "post_ndjson", skip_all)]
pub(crate) async fn ndjson(
    state: &ApiState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let (caller, bytes) = match accept(state, query, headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let items = body::ndjson(&bytes)
        .into_iter()
        .map(|(line, v)| (Some(line), v))
        .collect();
    publish_many(Style::Weir, state, &caller, items).await
}

/// Validates a list of (line, parsed) entries, publishes the valid ones and
/// answers per entry.
async fn publish_many(
    style: Style,
    state: &ApiState,
    caller: &Caller,
    items: Vec<(Option<usize>, Result<Value, BodyError>)>,
) -> Response {
    let tenant = caller.tenant.as_str();
    if items.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            "the batch holds no events",
            json!({}),
        );
    }
    if items.len() > state.max_batch_events {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "a batch may hold at most {} events, got {}",
                state.max_batch_events,
                items.len()
            ),
            json!({}),
        );
    }
    let received_at = now_ms();
    let mut accepted_at = vec![];
    let mut events = vec![];
    let mut rejected = vec![];
    for (index, (line, item)) in items.into_iter().enumerate() {
        let result = item
            .map_err(|e| {
                vec![FieldError {
                    field: String::new(),
                    message: e.to_string(),
                }]
            })
            .and_then(|v| to_event(&native(v), received_at, tenant, &state.limits));
        match result {
            Ok(e) => {
                accepted_at.push(index);
                events.push(e);
            }
            Err(fields) => {
                count_rejected(&fields);
                rejected.push(RejectedEntry {
                    index,
                    line,
                    message: field_errors(&fields),
                    fields,
                })
            }
        }
    }
    if events.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            "no event in the batch is valid",
            json!({ "rejected": rejected }),
        );
    }
    if let Err(r) = state.admit(tenant, events.len()) {
        return refusal(r);
    }
    if let Err(e) = state
        .publisher
        .publish(&events, caller.traceparent.as_deref())
        .await
    {
        return publish_error(e);
    }
    match style {
        Style::EventStream => accepted(EventStreamBatchAnswer {
            ids: events.into_iter().map(|e| e.event_id).collect(),
            rejected,
        }),
        Style::Weir | Style::EventService => {
            let accepted_entries = accepted_at
                .into_iter()
                .zip(events)
                .map(|(index, e)| {
                    let warnings = state.limits.warnings(&e, received_at);
                    flag(&warnings);
                    AcceptedEntry {
                        index,
                        event_id: e.event_id,
                        warnings,
                    }
                })
                .collect();
            accepted(BatchAnswer {
                accepted: accepted_entries,
                rejected,
            })
        }
    }
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
    crate::validate::FIELDS
        .iter()
        .find(|f| **f == top)
        .copied()
        .unwrap_or("unknown_field")
}
