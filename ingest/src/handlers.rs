//! What each event route does with an HTTP request: authenticate the write
//! key, check the Content-Type, join the caller's trace, read the body under
//! its limits (`body`), parse it (`strict_json`), hand the events to
//! `admission`, and answer
//! in the route's style once the sink has them. Refusals are answered by
//! `answers`.

use crate::admission::{Admission, BatchItem, BatchOutcome};
use crate::compat::Shape;
use crate::wire::{
    Accepted, AcceptedEntry, BatchAnswer, EventServiceAnswer, EventServiceLog, EventStreamAccepted,
    EventStreamBatchAnswer,
};
use crate::{body, strict_json};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use weir_core::trace_context;

/// What the HTTP side of the gateway holds.
pub struct HttpState {
    pub admission: Arc<Admission>,
    pub max_body_bytes: usize,
    /// How long a body may take to arrive (`http.body_read_timeout_ms`).
    pub body_read_timeout: Option<Duration>,
    /// A permit per request in flight (`max_concurrent_requests`).
    pub requests: Arc<tokio::sync::Semaphore>,
    pub cors: Option<tower_http::cors::CorsLayer>,
}

/// How a route answers: weir's own shape, or that of the system it stands in for.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    Weir,
    /// event-stream: `{"id": ...}` and `{"ids": [...]}`.
    EventStream,
    /// event-service: `{"log": {...}}`.
    EventService,
}

impl Style {
    /// The payload shape a route reads: a legacy route only its system's,
    /// weir's own routes any (detected per event).
    fn shape(self) -> Option<Shape> {
        match self {
            Style::Weir => None,
            Style::EventStream => Some(Shape::EventStream),
            Style::EventService => Some(Shape::EventService),
        }
    }
}

/// Who sent a request: the write key's tenant, and the trace context that
/// goes on the Kafka records.
pub(crate) struct Caller {
    pub tenant: String,
    pub traceparent: Option<String>,
}

/// Authenticates, checks the Content-Type, joins the caller's trace, and
/// reads the body. A refused request's body is drained, so the connection
/// stays usable.
pub(crate) async fn accept(
    state: &HttpState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Caller, Bytes), Response> {
    let tenant = match state.admission.tenant(headers, query) {
        Ok(t) => t,
        Err(r) => {
            body::discard(body).await;
            return Err(r.into_response());
        }
    };
    if let Err(e) = body::check_content_type(headers) {
        body::discard(body).await;
        return Err(e.into_response());
    }
    let bytes = body::read(headers, body, state.max_body_bytes, state.body_read_timeout)
        .await
        .map_err(IntoResponse::into_response)?;
    let incoming = headers
        .get(trace_context::HEADER)
        .and_then(|v| v.to_str().ok());
    // The records carry the handler's span (see `http::trace_request`).
    let traceparent = trace_context::outgoing(&tracing::Span::current(), incoming);
    Ok((
        Caller {
            tenant,
            traceparent,
        },
        bytes,
    ))
}

fn accepted(body: impl serde::Serialize) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// What a handler answers: a refusal is an answer too.
pub type Answer = Result<Response, Response>;

/// One event in the body.
// `query` is not recorded: it may hold `?write_key=`.
#[tracing::instrument(name = "post_event", skip(state, query, headers, body))]
pub async fn single(
    style: Style,
    state: &HttpState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Answer {
    let (caller, bytes) = accept(state, query, headers, body).await?;
    let v = strict_json::json(&bytes).map_err(IntoResponse::into_response)?;
    let a = state
        .admission
        .one(
            &caller.tenant,
            caller.traceparent.as_deref(),
            style.shape(),
            v,
        )
        .await
        .map_err(IntoResponse::into_response)?;
    let event_id = a.event.event_id.clone();
    Ok(match style {
        Style::Weir => accepted(Accepted {
            event_id,
            warnings: a.warnings,
        }),
        Style::EventStream => accepted(EventStreamAccepted { id: event_id }),
        Style::EventService => accepted(EventServiceAnswer {
            event_id,
            log: EventServiceLog {
                created_at: weir_core::event::ms_to_rfc3339(a.event.timestamp),
                event_name: a.event.name,
                description: a.event.description,
                customer_id: a
                    .event
                    .customer_id
                    .as_deref()
                    .map(weir_core::event::legacy_customer_id),
            },
        }),
    })
}

/// A batch in the body: `{"events": [...]}` or a bare array.
#[tracing::instrument(name = "post_batch", skip(state, query, headers, body))]
pub async fn batch(
    style: Style,
    state: &HttpState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Answer {
    let (caller, bytes) = accept(state, query, headers, body).await?;
    let list = match strict_json::json(&bytes).map_err(IntoResponse::into_response)? {
        Value::Object(mut o) if o.len() == 1 && o.contains_key("events") => {
            o.remove("events").unwrap_or(Value::Null)
        }
        other @ Value::Array(_) => other,
        _ => {
            return Err(invalid_batch(
                "a batch is {\"events\": [...]} or a JSON array",
            ))
        }
    };
    let Value::Array(items) = list else {
        return Err(invalid_batch("events must be an array"));
    };
    let items = items.into_iter().map(|v| (None, Ok(v))).collect();
    publish_batch(style, state, &caller, items).await
}

fn invalid_batch(message: &str) -> Response {
    crate::answers::error(
        StatusCode::BAD_REQUEST,
        "invalid_batch",
        message,
        serde_json::json!({}),
    )
}

/// NDJSON in the body: one event a line, each judged on its own.
#[tracing::instrument(name = "post_ndjson", skip_all)]
pub async fn ndjson(
    state: &HttpState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Answer {
    let (caller, bytes) = accept(state, query, headers, body).await?;
    let items = strict_json::ndjson(&bytes)
        .into_iter()
        .map(|(line, v)| (Some(line), v.map_err(|e| e.to_string())))
        .collect();
    publish_batch(Style::Weir, state, &caller, items).await
}

async fn publish_batch(
    style: Style,
    state: &HttpState,
    caller: &Caller,
    items: Vec<BatchItem>,
) -> Answer {
    let BatchOutcome {
        accepted: ok,
        rejected,
    } = state
        .admission
        .batch(
            &caller.tenant,
            caller.traceparent.as_deref(),
            style.shape(),
            items,
        )
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(match style {
        Style::EventStream => accepted(EventStreamBatchAnswer {
            ids: ok.into_iter().map(|a| a.event.event_id).collect(),
            rejected,
        }),
        Style::Weir | Style::EventService => accepted(BatchAnswer {
            accepted: ok
                .into_iter()
                .map(|a| AcceptedEntry {
                    index: a.index,
                    event_id: a.event.event_id,
                    warnings: a.warnings,
                })
                .collect(),
            rejected,
        }),
    })
}

/// The browser snippet; see the comment at its top for its use.
pub async fn snippet() -> Response {
    use axum::http::header;
    let headers = [
        (
            header::CONTENT_TYPE,
            "application/javascript; charset=utf-8",
        ),
        (header::CACHE_CONTROL, "public, max-age=300"),
    ];
    (headers, include_str!("../assets/weir.js")).into_response()
}
