//! `GET /v1/events`: the event-service read API over the `events` table.
//!
//! Filters `name` (exact, or `prefix.*`), `namespace`, `user_id`,
//! `customer_id`, `tenant`, `from`, `to`; `sort` by `name` or `timestamp`
//! (a leading `-` for descending); `page` and `page_size`. Every string
//! reaches ClickHouse as a query parameter; the sort column comes from a
//! fixed list and the page numbers are parsed integers, so nothing a client
//! sends is spliced into SQL.

use crate::query::{
    bad_request, name_filter, parse_time, unavailable, ApiState, QueryErrors, ReadScope,
};
use crate::strict_query::StrictQuery;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// An event name, or a prefix such as `cart.*`.
    name: Option<String>,
    namespace: Option<String>,
    user_id: Option<String>,
    customer_id: Option<String>,
    /// Only this tenant's events (a read key is bound to its own tenant anyway).
    tenant: Option<String>,
    /// Event time from, inclusive: RFC 3339 or epoch ms.
    from: Option<String>,
    /// Event time to, exclusive: RFC 3339 or epoch ms.
    to: Option<String>,
    /// `name` or `timestamp`, with a leading `-` for descending. Default `-timestamp`.
    sort: Option<String>,
    /// From 1. Default 1.
    page: Option<String>,
    /// From 1 to 1,000. Default 50.
    page_size: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventsAnswer {
    /// Events as sent, with `timestamp` and `received_at` in RFC 3339.
    events: Vec<Value>,
    metadata: PageMetadata,
}

#[derive(Serialize, ToSchema)]
pub struct PageMetadata {
    current_page: u64,
    page_size: u64,
    first_page: u64,
    last_page: u64,
    total_records: u64,
}

/// The WHERE clause and its parameters, from validated params.
pub(crate) struct Filter {
    sql: Vec<&'static str>,
    params: Vec<(&'static str, String)>,
    from: i64,
    to: i64,
}

pub(crate) fn positive(s: Option<&str>, default: u64, max: u64) -> Result<u64, String> {
    match s {
        None => Ok(default),
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("must be an integer from 1 to {max}")),
        },
    }
}

/// Page through the deduplicated event history.
#[utoipa::path(
    get, path = "/v1/events", tag = "events", params(EventsParams),
    responses(
        (status = 200, description = "One page of events and the paging metadata", body = EventsAnswer),
        QueryErrors,
    ),
    security(("bearer" = []), ("read_key_header" = []))
)]
pub async fn events(
    State(state): State<ApiState>,
    Extension(scope): Extension<ReadScope>,
    StrictQuery(mut p): StrictQuery<EventsParams>,
) -> Response {
    p.tenant = match scope.tenant(p.tenant) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut errors = BTreeMap::new();
    let mut filter = Filter::new();
    if let Some(name) = &p.name {
        if name.is_empty() {
            errors.insert("name", "must not be empty".to_string());
        } else {
            let (sql, value) = name_filter(name);
            filter.and(sql, "name", value);
        }
    }
    let exact: [(&'static str, &Option<String>, &'static str); 4] = [
        ("namespace", &p.namespace, "namespace = {namespace:String}"),
        ("user_id", &p.user_id, "user_id = {user_id:String}"),
        (
            "customer_id",
            &p.customer_id,
            "customer_id = {customer_id:String}",
        ),
        ("tenant", &p.tenant, "tenant = {tenant:String}"),
    ];
    for (param, value, sql) in exact {
        if let Some(v) = value {
            filter.and(sql, param, v.clone());
        }
    }
    for (param, value, slot) in [
        ("from", &p.from, &mut filter.from),
        ("to", &p.to, &mut filter.to),
    ] {
        if let Some(v) = value {
            match parse_time(v) {
                Ok(ms) => *slot = ms,
                Err(e) => {
                    errors.insert(param, e);
                }
            }
        }
    }
    if filter.from >= filter.to && !errors.contains_key("from") && !errors.contains_key("to") {
        errors.insert("to", "must be after from".into());
    }
    let order = match p.sort.as_deref().unwrap_or("-timestamp") {
        "timestamp" => "timestamp ASC",
        "-timestamp" => "timestamp DESC",
        "name" => "name ASC",
        "-name" => "name DESC",
        _ => {
            errors.insert(
                "sort",
                "must be name or timestamp, with a leading - for descending".into(),
            );
            ""
        }
    };
    let page = positive(p.page.as_deref(), 1, u32::MAX as u64)
        .map_err(|e| errors.insert("page", e))
        .unwrap_or(1);
    let page_size = positive(p.page_size.as_deref(), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        .map_err(|e| errors.insert("page_size", e))
        .unwrap_or(DEFAULT_PAGE_SIZE);
    if !errors.is_empty() {
        return bad_request(errors);
    }
    match filter.page(&state.client, order, page, page_size).await {
        Ok((events, metadata)) => Json(EventsAnswer {
            events: events.into_iter().map(event_json).collect(),
            metadata,
        })
        .into_response(),
        Err(r) => r,
    }
}

impl Filter {
    /// No condition yet, over all of event time.
    pub(crate) fn new() -> Filter {
        Filter {
            sql: vec![],
            params: vec![],
            from: 0,
            to: i64::MAX / 2,
        }
    }

    /// Adds a condition and the value it binds as `{param:String}`.
    pub(crate) fn and(&mut self, sql: &'static str, param: &'static str, value: String) {
        self.sql.push(sql);
        self.params.push((param, value));
    }

    /// One page of the events that pass, as ClickHouse rows (times in epoch
    /// ms), and the paging metadata. `order` comes from a route's fixed
    /// list; page and page_size are parsed integers, not client text.
    pub(crate) async fn page(
        mut self,
        client: &clickhouse::Client,
        order: &str,
        page: u64,
        page_size: u64,
    ) -> Result<(Vec<Value>, PageMetadata), Response> {
        self.sql
            .push("timestamp >= fromUnixTimestamp64Milli({from:Int64}, 'UTC')");
        self.sql
            .push("timestamp < fromUnixTimestamp64Milli({to:Int64}, 'UTC')");
        let where_sql = self.sql.join(" AND ");
        let bind = |mut q: clickhouse::query::Query| {
            for (k, v) in &self.params {
                q = q.param(k, v);
            }
            q.param("from", self.from).param("to", self.to)
        };
        let count_sql = format!("SELECT count() FROM events FINAL WHERE {where_sql}");
        let total: u64 = bind(client.query(&count_sql))
            .fetch_one::<u64>()
            .await
            .map_err(unavailable)?;
        let rows_sql = format!(
            "SELECT event_id, name, namespace, tenant, \
                    toUnixTimestamp64Milli(timestamp) AS timestamp_ms, \
                    toUnixTimestamp64Milli(received_at) AS received_at_ms, \
                    user_id, anonymous_id, customer_id, channel, service, description, properties \
             FROM events FINAL WHERE {where_sql} ORDER BY {order}, event_id \
             LIMIT {page_size} OFFSET {}",
            (page - 1).saturating_mul(page_size)
        );
        let bytes = bind(client.query(&rows_sql))
            .fetch_bytes("JSONEachRow")
            .map_err(unavailable)?
            .collect()
            .await
            .map_err(unavailable)?;
        let mut rows = vec![];
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            rows.push(serde_json::from_slice::<Value>(line).map_err(unavailable)?);
        }
        let metadata = PageMetadata {
            current_page: page,
            page_size,
            first_page: 1,
            last_page: total.div_ceil(page_size).max(1),
            total_records: total,
        };
        Ok((rows, metadata))
    }
}

/// Epoch ms from a row's `<key>_ms` column (ClickHouse writes Int64 as a
/// JSON string).
pub(crate) fn row_ms(row: &Value, key: &str) -> Option<i64> {
    row.get(key)
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
}

/// A row as the API shows it: times as RFC 3339.
fn event_json(mut row: Value) -> Value {
    for (ms_key, key) in [
        ("timestamp_ms", "timestamp"),
        ("received_at_ms", "received_at"),
    ] {
        let ms = row_ms(&row, ms_key);
        if let (Some(ms), Value::Object(o)) = (ms, &mut row) {
            o.remove(ms_key);
            o.insert(key.to_string(), json!(weir_core::event::ms_to_rfc3339(ms)));
        }
    }
    row
}
