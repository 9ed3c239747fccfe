//! How every refusal is answered, in one place: the HTTP status, code and
//! JSON body (`{"error": {"code": ..., "message": ..., ...}}`, with
//! `Retry-After` where a retry helps), and the gRPC status of the same
//! refusal. Each refused request is counted by its code.

use crate::admission::{field_errors, Refusal};
use crate::body::BodyError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use weir_core::api_keys::AuthError;

/// A JSON error answer.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>, extra: Value) -> Response {
    let mut body = json!({"code": code, "message": message.into()});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    metrics::counter!("weir_ingest_rejected_requests_total", "code" => code.to_string())
        .increment(1);
    (status, Json(json!({ "error": body }))).into_response()
}

/// `error`, with `Retry-After: <secs>`.
fn retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// 503 `overloaded`: too much in flight; the client backs off and retries.
pub fn overloaded(message: &str) -> Response {
    let r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        message,
        json!({}),
    );
    retry_after(r, 1)
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized(e) => {
                let message = match e {
                    AuthError::Missing => "a write key is required: Authorization: Bearer <key>, Basic, or X-Write-Key",
                    AuthError::Invalid => "the write key is not valid",
                };
                let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", message, json!({}));
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            Refusal::InvalidEvent(errors) => error(
                StatusCode::BAD_REQUEST,
                "invalid_event",
                field_errors(&errors),
                json!({ "fields": errors }),
            ),
            Refusal::EmptyBatch => error(
                StatusCode::BAD_REQUEST,
                "invalid_batch",
                "the batch holds no events",
                json!({}),
            ),
            Refusal::NoValidEvent(rejected) => error(
                StatusCode::BAD_REQUEST,
                "invalid_batch",
                "no event in the batch is valid",
                json!({ "rejected": rejected }),
            ),
            Refusal::BatchTooLarge { max, got } => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!("a batch may hold at most {max} events, got {got}"),
                json!({}),
            ),
            Refusal::RateLimited { retry_after_secs } => retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "this write key is over its rate limit",
                    json!({}),
                ),
                retry_after_secs,
            ),
            Refusal::OverBurst { events } => error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("{events} events exceed this key's burst; send smaller batches"),
                json!({}),
            ),
            Refusal::KafkaBehind => {
                overloaded("Kafka is behind: too many events wait for acknowledgement")
            }
            Refusal::Unavailable(e) => retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                    json!({}),
                ),
                1,
            ),
        }
    }
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, code, extra) = match self {
            BodyError::TooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", json!({}))
            }
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
}

impl From<Refusal> for tonic::Status {
    fn from(r: Refusal) -> Self {
        use tonic::Status;
        match r {
            Refusal::Unauthorized(_) => Status::unauthenticated(
                "a valid write key is required in the authorization or x-write-key metadata",
            ),
            Refusal::InvalidEvent(errors) => Status::invalid_argument(field_errors(&errors)),
            Refusal::EmptyBatch => Status::invalid_argument("the batch holds no events"),
            Refusal::NoValidEvent(_) => Status::invalid_argument("no event in the batch is valid"),
            Refusal::BatchTooLarge { max, got } => Status::invalid_argument(format!(
                "a batch may hold at most {max} events, got {got}"
            )),
            Refusal::RateLimited { retry_after_secs } => Status::resource_exhausted(format!(
                "over the rate limit; retry in {retry_after_secs} s"
            )),
            Refusal::OverBurst { events } => {
                Status::resource_exhausted(format!("{events} events exceed this key's burst"))
            }
            Refusal::KafkaBehind => Status::unavailable("Kafka is behind; retry shortly"),
            Refusal::Unavailable(e) => Status::unavailable(e.to_string()),
        }
    }
}
