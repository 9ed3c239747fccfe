//! The read routes of the systems weir replaces, in their own shapes, so a
//! client switches its reads, not only its writes, by changing the URL and
//! adding a read key:
//!
//! - event-stream's `GET /events/metrics`: totals and unique users of one
//!   event name, grouped by `channel`, `daily` or `hourly`;
//! - event-service's `GET /api/read`: the event log filtered by
//!   `event_name` (a case-insensitive substring, see `read`) and
//!   `customer_id`, sorted and paged.
//!
//! Both read what the native routes read (`metrics_api::measure` and
//! `events_api::Filter`); only the parameters and the answer differ.

use crate::counts::{range, rfc3339, Scope, OPEN_RANGE};
use crate::events_api::{positive, row_ms, Filter, PageMetadata, MAX_PAGE_SIZE};
use crate::metrics_api::{grouping, measure, GroupAnswer};
use crate::query::{bad_request, name_filter, QueryErrors, ReadScope};
use crate::strict_query::StrictQuery;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use weir_core::event::{legacy_customer_id, normalize_name};

use crate::query::ApiState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamMetricsParams {
    /// The event name, as it was sent (ingest normalised it the same way).
    event_name: Option<String>,
    /// Start, inclusive: RFC 3339 or epoch ms. Default: the beginning.
    from: Option<String>,
    /// End, exclusive: RFC 3339 or epoch ms. Default: no end.
    to: Option<String>,
    /// `channel`, `daily` or `hourly`.
    group_by: Option<String>,
}

/// event-stream's metrics answer.
#[derive(Serialize, ToSchema)]
pub struct StreamMetricsAnswer {
    event_name: String,
    /// RFC 3339.
    from: String,
    /// RFC 3339.
    to: String,
    total_count: u64,
    unique_user_count: u64,
    /// One entry per group; empty without `group_by`.
    grouped_metrics: Vec<GroupAnswer>,
}

/// event-stream: the count and unique users of one event name over a range,
/// optionally grouped by channel, day or hour.
#[utoipa::path(
    get, path = "/events/metrics", tag = "legacy", params(StreamMetricsParams),
    responses(
        (status = 200, description = "Exact totals and, with `group_by`, per group", body = StreamMetricsAnswer),
        QueryErrors,
    ),
    security(("bearer" = []), ("read_key_header" = []))
)]
pub async fn stream_metrics(
    State(state): State<ApiState>,
    Extension(scope): Extension<ReadScope>,
    StrictQuery(p): StrictQuery<StreamMetricsParams>,
) -> Response {
    let tenant = match scope.tenant(None) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut errors = BTreeMap::new();
    let event_name = p.event_name.unwrap_or_default();
    if event_name.trim().is_empty() {
        errors.insert("event_name", "is required".to_string());
    }
    let (from, to) = range(p.from.as_deref(), p.to.as_deref(), OPEN_RANGE, &mut errors);
    let group = match p.group_by.as_deref() {
        None => None,
        Some(g) => match stream_grouping(g) {
            Some(g) => Some(grouping(g).expect("a documented grouping")),
            None => {
                errors.insert("group_by", "must be channel, daily or hourly".to_string());
                None
            }
        },
    };
    if !errors.is_empty() {
        return bad_request(errors);
    }
    let scope = Scope {
        name: Some(name_filter(&normalize_name(&event_name))),
        tenant,
        from,
        to,
    };
    match measure(&state.client, &scope, group.as_ref()).await {
        Ok(m) => Json(StreamMetricsAnswer {
            event_name,
            from: rfc3339(from),
            to: rfc3339(to),
            total_count: m.total_count,
            unique_user_count: m.unique_users,
            grouped_metrics: m.groups.unwrap_or_default(),
        })
        .into_response(),
        Err(r) => r,
    }
}

/// event-stream's `group_by` values, as `/v1/metrics` names them.
fn stream_grouping(g: &str) -> Option<&'static str> {
    match g {
        "channel" => Some("channel"),
        "daily" => Some("day"),
        "hourly" => Some("hour"),
        _ => None,
    }
}

/// event-service's default page size.
pub const LEGACY_PAGE_SIZE: u64 = 20;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// Part of the event name, case-insensitive: `user` finds `user_signed_in`.
    event_name: Option<String>,
    customer_id: Option<String>,
    /// `event_name` or `created_at`, with a leading `-` for descending.
    /// Default: the order weir received the events in.
    sort: Option<String>,
    /// From 1. Default 1.
    page: Option<String>,
    /// From 1 to 1,000. Default 20.
    page_size: Option<String>,
}

/// event-service's answer: one page of logs and the paging metadata.
#[derive(Serialize, ToSchema)]
pub struct ReadAnswer {
    /// `{id, created_at, event_name, description, customer_id}`; `id` is
    /// weir's event id (text), `created_at` the event time in RFC 3339.
    logs: Vec<Value>,
    metadata: PageMetadata,
}

/// event-service: the event log, filtered, sorted and paged.
///
/// `event_name` matches any part of the name, ignoring case: the seed's
/// example finds `user_signed_in` with `event_name=user`, and a substring
/// finds everything a prefix or a whole-word match would.
#[utoipa::path(
    get, path = "/api/read", tag = "legacy", params(ReadParams),
    responses(
        (status = 200, description = "One page of logs and the paging metadata", body = ReadAnswer),
        QueryErrors,
    ),
    security(("bearer" = []), ("read_key_header" = []))
)]
pub async fn read(
    State(state): State<ApiState>,
    Extension(scope): Extension<ReadScope>,
    StrictQuery(p): StrictQuery<ReadParams>,
) -> Response {
    let mut errors = BTreeMap::new();
    let mut filter = Filter::new();
    match scope.tenant(None) {
        Ok(Some(t)) => filter.and("tenant = {tenant:String}", "tenant", t),
        Ok(None) => {}
        Err(r) => return r.into_response(),
    }
    if let Some(name) = &p.event_name {
        // Ingest wrote the name normalised; so is the filter, which keeps
        // `event_name=new customer` finding "new customer".
        let part = normalize_name(name);
        if part.is_empty() {
            errors.insert("event_name", "must not be empty".to_string());
        } else {
            filter.and(
                "positionCaseInsensitiveUTF8(name, {name:String}) > 0",
                "name",
                part,
            );
        }
    }
    if let Some(c) = &p.customer_id {
        filter.and(
            "customer_id = {customer_id:String}",
            "customer_id",
            c.clone(),
        );
    }
    let order = match p.sort.as_deref() {
        None => "received_at ASC",
        Some("event_name") => "name ASC",
        Some("-event_name") => "name DESC",
        Some("created_at") => "timestamp ASC",
        Some("-created_at") => "timestamp DESC",
        Some(_) => {
            // The seed's own words.
            errors.insert("sort", "invalid sort value".to_string());
            ""
        }
    };
    let page = positive(p.page.as_deref(), 1, u32::MAX as u64)
        .map_err(|e| errors.insert("page", e))
        .unwrap_or(1);
    let page_size = positive(p.page_size.as_deref(), LEGACY_PAGE_SIZE, MAX_PAGE_SIZE)
        .map_err(|e| errors.insert("page_size", e))
        .unwrap_or(LEGACY_PAGE_SIZE);
    if !errors.is_empty() {
        return bad_request(errors);
    }
    match filter.page(&state.client, order, page, page_size).await {
        Ok((rows, metadata)) => Json(ReadAnswer {
            logs: rows.into_iter().map(log_json).collect(),
            metadata,
        })
        .into_response(),
        Err(r) => r,
    }
}

/// An event as event-service showed a log: `customer_id` left out when
/// there is none.
fn log_json(row: Value) -> Value {
    let text = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut log = Map::new();
    log.insert("id".into(), json!(text("event_id")));
    log.insert(
        "created_at".into(),
        json!(row_ms(&row, "timestamp_ms").map(rfc3339)),
    );
    log.insert("event_name".into(), json!(text("name")));
    log.insert("description".into(), json!(text("description")));
    if let Some(c) = row.get("customer_id").and_then(Value::as_str) {
        log.insert("customer_id".into(), legacy_customer_id(c));
    }
    Value::Object(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_keeps_the_seeds_shape() {
        let row = json!({
            "event_id": "e1", "name": "new_customer", "timestamp_ms": "1668461546000",
            "description": "account was created", "customer_id": "18", "user_id": null,
        });
        assert_eq!(
            log_json(row),
            json!({"id": "e1", "created_at": "2022-11-14T21:32:26Z", "event_name": "new_customer",
                   "description": "account was created", "customer_id": 18})
        );
        let row = json!({"event_id": "e2", "name": "x", "timestamp_ms": 0, "description": null,
                         "customer_id": "acme-7"});
        assert_eq!(log_json(row)["customer_id"], "acme-7");
        let row = json!({"event_id": "e3", "name": "x", "timestamp_ms": 0, "customer_id": null});
        assert!(log_json(row).get("customer_id").is_none());
    }

    #[test]
    fn stream_groupings_are_documented_ones() {
        for g in ["channel", "daily", "hourly"] {
            assert!(grouping(stream_grouping(g).unwrap()).is_ok());
        }
        assert_eq!(stream_grouping("day"), None);
    }
}
