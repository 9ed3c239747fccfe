//! The paths of the event API and their OpenAPI description. Each route is
//! registered once, through `OpenApiRouter`, so the spec served at
//! `/openapi.json` cannot list a path the gateway does not serve, nor miss
//! one it does.

use crate::handlers::{self, HttpState, Style};
use crate::wire::{
    Accepted, BatchAnswer, BatchIn, ErrorAnswer, EventIn, EventServiceAnswer, EventStreamAccepted,
    EventStreamBatchAnswer,
};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Every route, with its description.
fn routed() -> OpenApiRouter<Arc<HttpState>> {
    OpenApiRouter::new()
        .routes(routes!(post_event))
        .routes(routes!(post_batch))
        .routes(routes!(post_ndjson))
        .routes(routes!(post_event_stream))
        .routes(routes!(post_event_stream_batch))
        .routes(routes!(post_event_service))
        .routes(routes!(get_snippet))
        .routes(routes!(crate::segment_routes::track))
        .routes(routes!(crate::segment_routes::identify))
        .routes(routes!(crate::segment_routes::page))
        .routes(routes!(crate::segment_routes::screen))
        .routes(routes!(crate::segment_routes::group))
        .routes(routes!(crate::segment_routes::alias))
        .routes(routes!(crate::segment_routes::batch))
}

/// The paths events are POSTed to, read from the spec: what the fuzz
/// targets and the hostile-input tests send to.
pub fn event_paths() -> Vec<String> {
    let (_, spec) = routed().split_for_parts();
    spec.paths
        .paths
        .into_iter()
        .filter(|(_, item)| item.post.is_some())
        .map(|(path, _)| path)
        .collect()
}

/// The event API's routes and the spec generated from them.
pub fn api(state: Arc<HttpState>) -> (axum::Router, OpenApi) {
    let (router, mut spec) = routed().with_state(state).split_for_parts();
    spec.info = weir_core::api_docs::info(
        "weir ingest",
        "The event gateway: accepts events, validates them and answers 202 only once Kafka \
         has every accepted event. Send the write key as `Authorization: Bearer`, Basic \
         (key as the user name), `X-Write-Key`, or `?write_key=` for beacons.",
    );
    let components = spec.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "basic",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
    );
    components.add_security_scheme(
        "write_key_header",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Write-Key"))),
    );
    components.add_security_scheme(
        "write_key_query",
        SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("write_key"))),
    );
    (router, spec)
}

/// Send one event.
#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    request_body(content((EventIn = "application/json"), (EventIn = "text/plain")),
        description = "One event. `text/plain` is accepted for navigator.sendBeacon. \
                       `Content-Encoding: gzip` is accepted."),
    responses(
        (status = 202, description = "Kafka has the event", body = Accepted),
        (status = 400, description = "Malformed JSON (invalid UTF-8, a duplicate key, nested \
                                      too deep, NaN) or an invalid event", body = ErrorAnswer),
        (status = 401, description = "No write key, or an unknown one", body = ErrorAnswer),
        (status = 408, description = "The body did not arrive within `http.body_read_timeout_ms`", body = ErrorAnswer),
        (status = 413, description = "Body over `max_body_bytes`", body = ErrorAnswer),
        (status = 415, description = "Content-Encoding other than gzip, or a Content-Type \
                                      other than JSON's (or a charset other than UTF-8)", body = ErrorAnswer),
        (status = 429, description = "The key's rate limit; see Retry-After", body = ErrorAnswer),
        (status = 503, description = "Kafka is behind or unreachable; retry after Retry-After \
                                      with the same event_id", body = ErrorAnswer),
    ),
    security(("bearer" = []), ("basic" = []), ("write_key_header" = []), ("write_key_query" = []))
)]
async fn post_event(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handlers::single(Style::Weir, &state, uri.query(), &headers, body)
        .await
        .into_response()
}

/// Send a batch of events; each is accepted or rejected on its own.
#[utoipa::path(
    post, path = "/v1/events/batch", tag = "events",
    request_body(content((BatchIn = "application/json"), (BatchIn = "text/plain")),
        description = "At most `max_batch_events` events (default 1,000)."),
    responses(
        (status = 202, description = "Kafka has every accepted event; `rejected` lists the \
                                      others with their field errors", body = BatchAnswer),
        (status = 400, description = "Malformed JSON, or no valid event", body = ErrorAnswer),
        (status = 401, description = "No write key, or an unknown one", body = ErrorAnswer),
        (status = 408, description = "The body did not arrive within `http.body_read_timeout_ms`", body = ErrorAnswer),
        (status = 413, description = "Body or batch too large", body = ErrorAnswer),
        (status = 415, description = "Content-Encoding other than gzip, or a Content-Type \
                                      other than JSON's (or a charset other than UTF-8)", body = ErrorAnswer),
        (status = 429, description = "The key's rate limit; see Retry-After", body = ErrorAnswer),
        (status = 503, description = "Kafka is behind or unreachable; retry", body = ErrorAnswer),
    ),
    security(("bearer" = []), ("basic" = []), ("write_key_header" = []), ("write_key_query" = []))
)]
async fn post_batch(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handlers::batch(Style::Weir, &state, uri.query(), &headers, body)
        .await
        .into_response()
}

/// Send events as NDJSON, one event a line; rejected lines are named.
#[utoipa::path(
    post, path = "/v1/events/ndjson", tag = "events",
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One JSON event per line, as `EventIn`."),
    responses(
        (status = 202, description = "Kafka has every accepted event", body = BatchAnswer),
        (status = 400, description = "No valid line", body = ErrorAnswer),
        (status = 401, description = "No write key, or an unknown one", body = ErrorAnswer),
        (status = 408, description = "The body did not arrive within `http.body_read_timeout_ms`", body = ErrorAnswer),
        (status = 413, description = "Body or batch too large", body = ErrorAnswer),
        (status = 415, description = "Content-Encoding other than gzip, or a Content-Type \
                                      other than JSON's", body = ErrorAnswer),
        (status = 429, description = "The key's rate limit; see Retry-After", body = ErrorAnswer),
        (status = 503, description = "Kafka is behind or unreachable; retry", body = ErrorAnswer),
    ),
    security(("bearer" = []), ("basic" = []), ("write_key_header" = []), ("write_key_query" = []))
)]
async fn post_ndjson(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handlers::ndjson(&state, uri.query(), &headers, body)
        .await
        .into_response()
}

/// event-stream's single-event path: its payload shape, its answer.
#[utoipa::path(
    post, path = "/events", tag = "compatibility",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "An event-stream event (`name`, `channel_type`, `event_params`, ...)."),
    responses(
        (status = 202, description = "Kafka has the event", body = EventStreamAccepted),
        (status = 400, description = "Invalid event", body = ErrorAnswer),
        (status = 401, description = "No write key, or an unknown one", body = ErrorAnswer),
        (status = 408, description = "The body did not arrive within `http.body_read_timeout_ms`", body = ErrorAnswer),
        (status = 413, description = "Body or batch too large", body = ErrorAnswer),
        (status = 415, description = "Content-Encoding other than gzip, or a Content-Type \
                                      other than JSON's", body = ErrorAnswer),
        (status = 429, description = "The key's rate limit; see Retry-After", body = ErrorAnswer),
        (status = 503, description = "Kafka is behind or unreachable; retry", body = ErrorAnswer),
    ),
    security(("bearer" = []), ("basic" = []), ("write_key_header" = []), ("write_key_query" = []))
)]
async fn post_event_stream(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handlers::single(Style::EventStream, &state, uri.query(), &headers, body)
        .await
        .into_response()
}

/// event-stream's batch path.
#[utoipa::path(
    post, path = "/events/batch", tag = "compatibility",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "`{\"events\": [...]}` of event-stream events."),
    responses(
        (status = 202, description = "Kafka has every accepted event", body = EventStreamBatchAnswer),
        (status = 400, description = "No valid event", body = ErrorAnswer),
        (status = 401, description = "No write key, or an unknown one", body = ErrorAnswer),
        (status = 408, description = "The body did not arrive within `http.body_read_timeout_ms`", body = ErrorAnswer),
        (status = 413, description = "Body or batch too large", body = ErrorAnswer),
        (status = 415, description = "Content-Encoding other than gzip, or a Content-Type \
                                      other than JSON's", body = ErrorAnswer),
        (status = 429, description = "The key's rate limit; see Retry-After", body = ErrorAnswer),
        (status = 503, description = "Kafka is behind or unreachable; retry", body = ErrorAnswer),
    ),
    security(("bearer" = []), ("basic" = []), ("write_key_header" = []), ("write_key_query" = []))
)]
async fn post_event_stream_batch(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handlers::batch(Style::EventStream, &state, uri.query(), &headers, body)
        .await
        .into_response()
}

/// event-service's write path: `event_name`, `description`, `created_at`, `customer_id`.
#[utoipa::path(
    post, path = "/api/write", tag = "compatibility",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 202, description = "Kafka has the event", body = EventServiceAnswer),
        (status = 400, description = "Invalid event", body = ErrorAnswer),
        (status = 401, description = "No write key, or an unknown one", body = ErrorAnswer),
        (status = 408, description = "The body did not arrive within `http.body_read_timeout_ms`", body = ErrorAnswer),
        (status = 413, description = "Body or batch too large", body = ErrorAnswer),
        (status = 415, description = "Content-Encoding other than gzip, or a Content-Type \
                                      other than JSON's", body = ErrorAnswer),
        (status = 429, description = "The key's rate limit; see Retry-After", body = ErrorAnswer),
        (status = 503, description = "Kafka is behind or unreachable; retry", body = ErrorAnswer),
    ),
    security(("bearer" = []), ("basic" = []), ("write_key_header" = []), ("write_key_query" = []))
)]
async fn post_event_service(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handlers::single(Style::EventService, &state, uri.query(), &headers, body)
        .await
        .into_response()
}

/// The first-party browser snippet (batches, retries, sendBeacon on page hide).
#[utoipa::path(
    get, path = "/v1/weir.js", tag = "browser",
    responses((status = 200, description = "The snippet", content_type = "application/javascript", body = String))
)]
async fn get_snippet() -> Response {
    handlers::snippet().await
}
