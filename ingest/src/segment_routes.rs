//! The Segment HTTP Tracking API's routes on ingest: `POST /v1/track`,
//! `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias` and
//! `/v1/batch`, with Segment's auth (Basic, the write key as the user name),
//! its limits (32 KB a message, 500 KB a batch) and its answer
//! (`200 {"success": true}` once Kafka has the events).
//!
//! Each message is checked and mapped by `segment`, then admitted like any
//! event; `messageId` is the event id, so an SDK's retry of a batch is
//! dropped as a duplicate by the processor. Refusals carry weir's
//! `{"error": {...}}` and, for the SDKs' logs, Segment's top-level `code`
//! and `message`.

use crate::admission::{BatchItem, BatchOutcome};
use crate::compat::Shape;
use crate::handlers::{accept, HttpState};
use crate::segment::{check, BATCH_KEYS, MAX_BATCH_BYTES, MAX_MESSAGE_BYTES};
use crate::strict_json;
use crate::wire::{ErrorAnswer, RejectedEntry};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use utoipa::ToSchema;

/// Segment's answer, and the messages weir refused, if any.
#[derive(Serialize, ToSchema)]
pub struct SegmentAnswer {
    success: bool,
    /// Messages of a batch that were refused, with the reason; the others
    /// are accepted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rejected: Vec<RejectedEntry>,
}

fn success(rejected: Vec<RejectedEntry>) -> Response {
    (
        StatusCode::OK,
        Json(SegmentAnswer {
            success: true,
            rejected,
        }),
    )
        .into_response()
}

/// A refusal in weir's shape, with Segment's `code` and `message` on top,
/// which its SDKs log.
async fn segment_refusal(r: Response) -> Response {
    let (parts, body) = r.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        let (code, message) = match o.get("error") {
            Some(e) => (e["code"].clone(), e["message"].clone()),
            None => (Value::Null, Value::Null),
        };
        o.insert("success".into(), json!(false));
        o.insert("code".into(), code);
        o.insert("message".into(), message);
    }
    let mut out = Json(v).into_response();
    *out.status_mut() = parts.status;
    for (k, val) in parts.headers.iter() {
        if k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), val.clone());
        }
    }
    out
}

fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    crate::answers::error(status, code, message, json!({}))
}

/// One message on its type's route.
async fn one_message(
    route_type: &'static str,
    state: &HttpState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let answer = async {
        let (caller, bytes) = accept(state, query, headers, body).await?;
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
                format!(
                    "the message is {} bytes; Segment's limit is {MAX_MESSAGE_BYTES} (32 KB) a message",
                    bytes.len()
                ),
            ));
        }
        let mut msg = strict_json::json(&bytes).map_err(IntoResponse::into_response)?;
        check(&msg, Some(route_type))
            .map_err(|m| refuse(StatusCode::BAD_REQUEST, "invalid_event", m))?;
        msg["type"] = json!(route_type);
        state
            .admission
            .one(
                &caller.tenant,
                caller.traceparent.as_deref(),
                Some(Shape::Segment),
                msg,
            )
            .await
            .map_err(IntoResponse::into_response)?;
        Ok::<_, Response>(success(vec![]))
    }
    .await;
    match answer {
        Ok(r) => r,
        Err(r) => segment_refusal(r).await,
    }
}

/// A `/v1/batch` body: its messages, each with the batch's `context`,
/// `integrations` and `sentAt` where it has none of its own.
fn batch_items(v: Value) -> Result<Vec<BatchItem>, String> {
    let Value::Object(mut o) = v else {
        return Err("a batch is {\"batch\": [...]}".into());
    };
    if let Some(k) = o.keys().find(|k| !BATCH_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "{k}: unknown field; a batch takes {}",
            BATCH_KEYS.join(", ")
        ));
    }
    let Some(Value::Array(messages)) = o.remove("batch") else {
        return Err("batch: is required, an array of messages".into());
    };
    let shared: Map<String, Value> = ["context", "integrations", "sentAt"]
        .into_iter()
        .filter_map(|k| Some((k.to_string(), o.remove(k).filter(|v| !v.is_null())?)))
        .collect();
    Ok(messages
        .into_iter()
        .map(|mut m| {
            if let Value::Object(mo) = &mut m {
                for (k, v) in &shared {
                    match (mo.get_mut(k.as_str()), v) {
                        (Some(Value::Object(own)), Value::Object(common)) => {
                            for (ck, cv) in common {
                                own.entry(ck.clone()).or_insert_with(|| cv.clone());
                            }
                        }
                        (Some(Value::Null) | None, _) => {
                            mo.insert(k.clone(), v.clone());
                        }
                        _ => {}
                    }
                }
            }
            (None, check(&m, None).map(|()| m))
        })
        .collect())
}

/// The refusals every one-message route documents.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only documents the answers
enum MessageRefusals {
    /// Malformed JSON, or an invalid message, its field named
    #[response(status = 400)]
    BadRequest(ErrorAnswer),
    /// No write key, or an unknown one
    #[response(status = 401)]
    Unauthorized(ErrorAnswer),
    /// Over 32 KB
    #[response(status = 413)]
    TooLarge(ErrorAnswer),
    /// The key's rate limit; see Retry-After
    #[response(status = 429)]
    RateLimited(ErrorAnswer),
    /// Kafka is behind or unreachable; retry with the same messageId
    #[response(status = 503)]
    Unavailable(ErrorAnswer),
}

/// Send one `track` call: an event.
#[utoipa::path(
    post, path = "/v1/track", tag = "segment",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "A Segment track message: `event`, `userId` or `anonymousId`, `properties`, \
                       `context`, `timestamp`, `messageId`. At most 32 KB."),
    responses(
        (status = 200, description = "Kafka has the event", body = SegmentAnswer),
        MessageRefusals,
    ),
    security(("basic" = []), ("bearer" = []), ("write_key_header" = []))
)]
pub async fn track(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    one_message("track", &state, uri.query(), &headers, body).await
}

/// Send one `identify` call: the user's traits, kept as their latest values.
#[utoipa::path(
    post, path = "/v1/identify", tag = "segment",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "A Segment identify message: `userId` or `anonymousId`, `traits`."),
    responses(
        (status = 200, description = "Kafka has the call", body = SegmentAnswer),
        MessageRefusals,
    ),
    security(("basic" = []), ("bearer" = []), ("write_key_header" = []))
)]
pub async fn identify(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    one_message("identify", &state, uri.query(), &headers, body).await
}

/// Send one `page` call: a `page_view` event.
#[utoipa::path(
    post, path = "/v1/page", tag = "segment",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "A Segment page message: `name`, `category`, `properties`."),
    responses(
        (status = 200, description = "Kafka has the event", body = SegmentAnswer),
        MessageRefusals,
    ),
    security(("basic" = []), ("bearer" = []), ("write_key_header" = []))
)]
pub async fn page(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    one_message("page", &state, uri.query(), &headers, body).await
}

/// Send one `screen` call: a `screen_view` event.
#[utoipa::path(
    post, path = "/v1/screen", tag = "segment",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "A Segment screen message: `name`, `category`, `properties`."),
    responses(
        (status = 200, description = "Kafka has the event", body = SegmentAnswer),
        MessageRefusals,
    ),
    security(("basic" = []), ("bearer" = []), ("write_key_header" = []))
)]
pub async fn screen(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    one_message("screen", &state, uri.query(), &headers, body).await
}

/// Send one `group` call: the group's traits, and the user's membership.
#[utoipa::path(
    post, path = "/v1/group", tag = "segment",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "A Segment group message: `groupId`, `traits`."),
    responses(
        (status = 200, description = "Kafka has the call", body = SegmentAnswer),
        MessageRefusals,
    ),
    security(("basic" = []), ("bearer" = []), ("write_key_header" = []))
)]
pub async fn group(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    one_message("group", &state, uri.query(), &headers, body).await
}

/// Send one `alias` call: stored, not merged (see docs/api.md).
#[utoipa::path(
    post, path = "/v1/alias", tag = "segment",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "A Segment alias message: `previousId`, `userId`."),
    responses(
        (status = 200, description = "Kafka has the call", body = SegmentAnswer),
        MessageRefusals,
    ),
    security(("basic" = []), ("bearer" = []), ("write_key_header" = []))
)]
pub async fn alias(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    one_message("alias", &state, uri.query(), &headers, body).await
}

/// Send a batch of messages of any type: what Segment's SDKs send.
#[utoipa::path(
    post, path = "/v1/batch", tag = "segment",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "`{\"batch\": [...], \"sentAt\", \"context\", \"integrations\"}`: messages \
                       of any type, each at most 32 KB, the request at most 500 KB. \
                       `Content-Encoding: gzip` is accepted."),
    responses(
        (status = 200, description = "Kafka has every accepted message; `rejected` names the \
                                      others", body = SegmentAnswer),
        (status = 400, description = "Malformed JSON, or no valid message", body = ErrorAnswer),
        (status = 401, description = "No write key, or an unknown one", body = ErrorAnswer),
        (status = 413, description = "Over 500 KB, or more messages than `max_batch_events`", body = ErrorAnswer),
        (status = 429, description = "The key's rate limit; see Retry-After", body = ErrorAnswer),
        (status = 503, description = "Kafka is behind or unreachable; the SDK retries with the \
                                      same messageIds", body = ErrorAnswer),
    ),
    security(("basic" = []), ("bearer" = []), ("write_key_header" = []))
)]
pub async fn batch(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer = async {
        let (caller, bytes) = accept(&state, uri.query(), &headers, body).await?;
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!(
                    "the batch is {} bytes; Segment's limit is {MAX_BATCH_BYTES} (500 KB) a batch",
                    bytes.len()
                ),
            ));
        }
        let v = strict_json::json(&bytes).map_err(IntoResponse::into_response)?;
        let items =
            batch_items(v).map_err(|m| refuse(StatusCode::BAD_REQUEST, "invalid_batch", m))?;
        let BatchOutcome { rejected, .. } = state
            .admission
            .batch(
                &caller.tenant,
                caller.traceparent.as_deref(),
                Some(Shape::Segment),
                items,
            )
            .await
            .map_err(IntoResponse::into_response)?;
        Ok::<_, Response>(success(rejected))
    }
    .await;
    match answer {
        Ok(r) => r,
        Err(r) => segment_refusal(r).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_shares_its_context_and_sent_at() {
        let items = batch_items(json!({
            "batch": [
                {"type": "track", "event": "a", "userId": "u", "context": {"ip": "1.1.1.1"}},
                {"type": "track", "event": "b", "userId": "u", "sentAt": "2023-01-01T00:00:00Z"},
                {"type": "merge", "userId": "u"},
            ],
            "sentAt": "2023-11-14T22:13:20Z",
            "context": {"ip": "9.9.9.9", "library": {"name": "x"}},
            "writeKey": "k",
        }))
        .unwrap();
        let ok: Vec<&Value> = items.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
        assert_eq!(ok[0]["context"]["ip"], "1.1.1.1");
        assert_eq!(ok[0]["context"]["library"]["name"], "x");
        assert_eq!(ok[0]["sentAt"], "2023-11-14T22:13:20Z");
        assert_eq!(ok[1]["sentAt"], "2023-01-01T00:00:00Z");
        assert_eq!(ok[1]["context"]["ip"], "9.9.9.9");
        assert!(items[2].1.as_ref().unwrap_err().starts_with("type: "));
        assert_eq!(
            batch_items(json!({"batch": [], "colour": 1})).unwrap_err(),
            "colour: unknown field; a batch takes batch, sentAt, context, integrations, writeKey, metadata"
        );
        assert!(batch_items(json!({"messages": []})).is_err());
    }
}
