//! The event API: `POST /v1/events` (one event) and `POST /v1/events/batch`.
//!
//! A request's journey: read the body under the size limit, parse JSON,
//! validate each event (`validate`), publish the valid ones (`publisher`),
//! and answer 202 only after Kafka acknowledged them.
//!
//! Batches are answered per event: valid events are accepted even when
//! others in the same batch are rejected (202 with a `rejected` list); a
//! batch with no valid event is a 400.

use crate::publisher::{EventPublisher, PublishError};
use crate::validate::{to_event, FieldError, Limits};
use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct ApiState {
    pub publisher: EventPublisher,
    pub limits: Limits,
    pub tenant: String,
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/events", post(single))
        .route("/v1/events/batch", post(batch))
        .with_state(state)
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

async fn read_json(state: &ApiState, body: Body) -> Result<Value, Response> {
    let bytes = to_bytes(body, state.max_body_bytes).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {} bytes", state.max_body_bytes),
            json!({}),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "malformed JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
            json!({"line": e.line(), "column": e.column()}),
        )
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

fn field_errors(errors: &[FieldError]) -> String {
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

#[tracing::instrument(name = "post_event", skip_all)]
async fn single(State(state): State<Arc<ApiState>>, body: Body) -> Response {
    let v = match read_json(&state, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let event = match to_event(&v, now_ms(), &state.tenant, &state.limits) {
        Ok(e) => e,
        Err(errors) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_event",
                field_errors(&errors),
                json!({ "fields": errors }),
            )
        }
    };
    if let Err(e) = state.publisher.publish(std::slice::from_ref(&event)).await {
        return publish_error(e);
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"event_id": event.event_id})),
    )
        .into_response()
}

#[tracing::instrument(name = "post_batch", skip_all)]
async fn batch(State(state): State<Arc<ApiState>>, body: Body) -> Response {
    let v = match read_json(&state, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match v {
        Value::Object(mut o) if o.len() == 1 && o.contains_key("events") => {
            o.remove("events").unwrap_or(Value::Null)
        }
        other @ Value::Array(_) => other,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_batch",
                "a batch is {\"events\": [...]} or a JSON array",
                json!({}),
            )
        }
    };
    let Value::Array(items) = list else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            "events must be an array",
            json!({}),
        );
    };
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
    let mut accepted = vec![];
    let mut rejected = vec![];
    for (index, item) in items.iter().enumerate() {
        match to_event(item, received_at, &state.tenant, &state.limits) {
            Ok(e) => accepted.push((index, e)),
            Err(errors) => rejected
                .push(json!({"index": index, "message": field_errors(&errors), "fields": errors})),
        }
    }
    metrics::counter!("weir_ingest_events_rejected_total").increment(rejected.len() as u64);
    if accepted.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            "no event in the batch is valid",
            json!({ "rejected": rejected }),
        );
    }
    let events: Vec<_> = accepted.iter().map(|(_, e)| e.clone()).collect();
    if let Err(e) = state.publisher.publish(&events).await {
        return publish_error(e);
    }
    let accepted: Vec<Value> = accepted
        .iter()
        .map(|(i, e)| json!({"index": i, "event_id": e.event_id}))
        .collect();
    (
        StatusCode::ACCEPTED,
        Json(json!({"accepted": accepted, "rejected": rejected})),
    )
        .into_response()
}
