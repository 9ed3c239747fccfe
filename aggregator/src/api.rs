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
    group_by: Option<String>,
}

/// What `group_by` groups on: a column or time bucket of the per-minute
/// table, or a property of the events themselves.
enum Grouping {
    Counts(&'static str),
    Property(String),
}

fn grouping(g: &str) -> Result<Grouping, String> {
    Ok(match g {
        "channel" => Grouping::Counts("channel"),
        "name" => Grouping::Counts("name"),
        "namespace" => Grouping::Counts("namespace"),
        "minute" => {
            Grouping::Counts("formatDateTime(toStartOfMinute(window_start), '%Y-%m-%dT%H:%i:00Z')")
        }
        "hour" => {
            Grouping::Counts("formatDateTime(toStartOfHour(window_start), '%Y-%m-%dT%H:00:00Z')")
        }
        "day" => Grouping::Counts("toString(toDate(window_start))"),
        _ => match g.strip_prefix("property:") {
            Some(key) if !key.is_empty() => Grouping::Property(key.to_string()),
            _ => {
                return Err(
                    "must be channel, name, namespace, minute, hour, day or property:<key>".into(),
                )
            }
        },
    })
}

#[derive(Row, Deserialize)]
struct Group {
    group_key: String,
    total_count: u64,
    unique_user_count: u64,
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
    let group = match p.group_by.as_deref().map(grouping).transpose() {
        Ok(g) => g,
        Err(e) => {
            errors.insert("group_by", e);
            None
        }
    };
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
    // Both queries take the same filters.
    let bind = |sql: &str| {
        let q = state
            .client
            .query(sql)
            .param("name", &name_value)
            .param("from", from)
            .param("to", to);
        match &p.tenant {
            Some(t) => q.param("tenant", t),
            None => q,
        }
    };
    let totals = match bind(&sql).fetch_one::<Totals>().await {
        Ok(t) => t,
        Err(e) => return unavailable(e),
    };
    let mut body = json!({
        "name": name, "from": from, "to": to,
        "total_count": totals.total_count, "unique_users": totals.unique_users,
    });
    if let Some(group) = group {
        // The grouping expression comes from the fixed list in `grouping`;
        // a property key is a bound parameter.
        let sql = match &group {
            Grouping::Counts(expr) => format!(
                "SELECT {expr} AS group_key, toUInt64(sum(count)) AS total_count, \
                        toUInt64(uniqCombined64Merge(users)) AS unique_user_count \
                 FROM event_counts_1m FINAL \
                 WHERE {name_filter} {tenant_filter} \
                   AND window_start >= fromUnixTimestamp64Milli({{from:Int64}}, 'UTC') \
                   AND window_start < fromUnixTimestamp64Milli({{to:Int64}}, 'UTC') \
                 GROUP BY group_key ORDER BY group_key"
            ),
            Grouping::Property(_) => format!(
                "SELECT properties[{{key:String}}] AS group_key, count() AS total_count, \
                        toUInt64(uniqExact(coalesce(user_id, anonymous_id))) AS unique_user_count \
                 FROM events FINAL \
                 WHERE {name_filter} {tenant_filter} \
                   AND timestamp >= fromUnixTimestamp64Milli({{from:Int64}}, 'UTC') \
                   AND timestamp < fromUnixTimestamp64Milli({{to:Int64}}, 'UTC') \
                 GROUP BY group_key ORDER BY group_key"
            ),
        };
        let mut q = bind(&sql);
        if let Grouping::Property(key) = &group {
            q = q.param("key", key);
        }
        match q.fetch_all::<Group>().await {
            Ok(groups) => {
                body["grouped_metrics"] = groups
                    .into_iter()
                    .map(|g| {
                        json!({"group_key": g.group_key, "total_count": g.total_count,
                               "unique_user_count": g.unique_user_count})
                    })
                    .collect();
            }
            Err(e) => return unavailable(e),
        }
    }
    Json(body).into_response()
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
