//! The query API. `GET /v1/metrics?name=&from=&to=` answers the total count
//! and unique users of an event name (or a `prefix.*`) over a time range,
//! merged from the per-minute states; `GET /v1/events` (see `events_api`)
//! pages through the event history. Every value reaches ClickHouse as a
//! query parameter, never spliced into SQL.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clickhouse::Row;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Clone)]
pub struct ApiState {
    pub client: clickhouse::Client,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/metrics", get(metrics))
        .route("/v1/events", get(crate::events_api::events))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
pub struct MetricsParams {
    name: Option<String>,
    from: Option<String>,
    to: Option<String>,
    tenant: Option<String>,
}

#[derive(Row, Deserialize)]
struct Totals {
    total_count: u64,
    unique_users: u64,
}

pub(crate) fn bad_request(errors: BTreeMap<&'static str, String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": errors }))).into_response()
}

/// RFC 3339 or epoch milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    weir_core::event::rfc3339_ms(s)
        .map_err(|_| "must be RFC 3339 or epoch milliseconds".to_string())
}

async fn metrics(State(state): State<ApiState>, Query(p): Query<MetricsParams>) -> Response {
    let mut errors = BTreeMap::new();
    let name = p.name.unwrap_or_default();
    if name.is_empty() {
        errors.insert(
            "name",
            "is required: an event name, or a prefix such as cart.*".to_string(),
        );
    }
    let from = p
        .from
        .as_deref()
        .map(parse_time)
        .unwrap_or(Ok(0))
        .map_err(|e| errors.insert("from", e))
        .ok();
    let to =
        p.to.as_deref()
            .map(parse_time)
            .unwrap_or(Ok(i64::MAX / 2))
            .map_err(|e| errors.insert("to", e))
            .ok();
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            errors.insert("to", "must be after from".into());
        }
    }
    if !errors.is_empty() {
        return bad_request(errors);
    }
    let (from, to) = (from.unwrap_or_default(), to.unwrap_or_default());
    let (name_filter, name_value) = match name.strip_suffix(".*") {
        Some(prefix) => ("startsWith(name, {name:String})", format!("{prefix}.")),
        None => ("name = {name:String}", name.clone()),
    };
    let tenant_filter = if p.tenant.is_some() {
        "AND tenant = {tenant:String}"
    } else {
        ""
    };
    let sql = format!(
        "SELECT toUInt64(sum(count)) AS total_count, toUInt64(uniqCombined64Merge(users)) AS unique_users \
         FROM event_counts_1m FINAL \
         WHERE {name_filter} {tenant_filter} \
           AND window_start >= fromUnixTimestamp64Milli({{from:Int64}}, 'UTC') \
           AND window_start < fromUnixTimestamp64Milli({{to:Int64}}, 'UTC')"
    );
    let mut q = state
        .client
        .query(&sql)
        .param("name", &name_value)
        .param("from", from)
        .param("to", to);
    if let Some(t) = &p.tenant {
        q = q.param("tenant", t);
    }
    match q.fetch_one::<Totals>().await {
        Ok(t) => Json(json!({
            "name": name, "from": from, "to": to,
            "total_count": t.total_count, "unique_users": t.unique_users,
        }))
        .into_response(),
        Err(e) => unavailable(e),
    }
}

/// A query ClickHouse could not answer: 503, the cause in the log only.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "query failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": {"query": "ClickHouse is unavailable"}})),
    )
        .into_response()
}
