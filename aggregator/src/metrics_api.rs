//! Counts and unique users, merged from the per-minute table
//! `event_counts_1m`: totals over a range (`/v1/metrics`, optionally grouped),
//! rolling windows ending now (`/v1/metrics/rolling`), and daily, weekly or
//! monthly active users (`/v1/metrics/active-users`).
//!
//! Unique users are `uniqExact` states merged across minutes, so any range
//! counts each user once, never summed per minute, and exactly at any
//! cardinality (`uniqCombined64` estimates past a few thousand users).

use crate::api::{bad_request, name_filter, parse_time, unavailable, ApiState, ReadScope};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

const MINUTE_MS: i64 = 60_000;
/// The longest rolling window: the per-minute table is kept that long at least.
const MAX_ROLLING_MS: i64 = 90 * 24 * 3_600_000;
const MAX_ROLLING_WINDOWS: usize = 12;

/// The rows a query reads, by the same filters every metrics route takes.
struct Scope {
    name: Option<(&'static str, String)>,
    tenant: Option<String>,
    from: i64,
    to: i64,
}

const HOUR_MS: i64 = 3_600_000;
/// 2100-01-01: beyond what the hourly rollup's `DateTime` holds, a range is
/// open-ended anyway.
const FAR_FUTURE_MS: i64 = 4_102_444_800_000;

impl Scope {
    /// The event time range, for the `events` table.
    fn where_sql(&self) -> String {
        format!(
            "window_start >= fromUnixTimestamp64Milli({{from:Int64}}, 'UTC') \
             AND window_start < fromUnixTimestamp64Milli({{to:Int64}}, 'UTC') AND {}",
            self.filters()
        )
    }

    /// The name and tenant conditions every table takes.
    fn filters(&self) -> String {
        let mut sql = vec!["1"];
        if let Some((cond, _)) = &self.name {
            sql.push(cond);
        }
        if self.tenant.is_some() {
            sql.push("tenant = {tenant:String}");
        }
        sql.join(" AND ")
    }

    /// The whole hours inside the range: `[h0, h1)`, empty when `h0 >= h1`.
    fn hours(&self) -> (i64, i64) {
        let h0 = self.from.max(0).div_euclid(HOUR_MS) * HOUR_MS
            + if self.from.rem_euclid(HOUR_MS) == 0 {
                0
            } else {
                HOUR_MS
            };
        let h1 = self.to.min(FAR_FUTURE_MS).div_euclid(HOUR_MS) * HOUR_MS;
        (h0, h1)
    }

    /// The range's window rows, as a subquery of `tenant, name, namespace,
    /// channel, window_start, count, users_exact`. Its whole hours come from
    /// the hourly rollup, the partial hours at either end from the minute
    /// table; `minutes` reads the minute table alone (for per-minute groups).
    fn counts(&self, minutes: bool) -> String {
        let filters = self.filters();
        let columns = "tenant, name, namespace, channel, window_start, count, users_exact";
        let (h0, h1) = self.hours();
        if minutes || h0 >= h1 {
            return format!(
                "(SELECT {columns} FROM event_counts_1m FINAL \
                  WHERE window_start >= fromUnixTimestamp64Milli({{from:Int64}}, 'UTC') \
                    AND window_start < fromUnixTimestamp64Milli({{to:Int64}}, 'UTC') AND {filters})"
            );
        }
        format!(
            "(SELECT {columns} FROM event_counts_1m FINAL \
              WHERE ((window_start >= fromUnixTimestamp64Milli({{from:Int64}}, 'UTC') \
                      AND window_start < fromUnixTimestamp64Milli({{h0:Int64}}, 'UTC')) \
                  OR (window_start >= fromUnixTimestamp64Milli({{h1:Int64}}, 'UTC') \
                      AND window_start < fromUnixTimestamp64Milli({{to:Int64}}, 'UTC'))) \
                AND {filters} \
              UNION ALL \
              SELECT tenant, name, namespace, channel, toDateTime64(hour, 3, 'UTC') AS window_start, \
                     count, users_exact FROM event_counts_1h FINAL \
              WHERE hour >= fromUnixTimestamp64Milli({{h0:Int64}}, 'UTC') \
                AND hour < fromUnixTimestamp64Milli({{h1:Int64}}, 'UTC') AND {filters})"
        )
    }

    fn bind(&self, mut q: clickhouse::query::Query) -> clickhouse::query::Query {
        if let Some((_, v)) = &self.name {
            q = q.param("name", v);
        }
        if let Some(t) = &self.tenant {
            q = q.param("tenant", t);
        }
        let (h0, h1) = self.hours();
        q.param("from", self.from)
            .param("to", self.to)
            .param("h0", h0)
            .param("h1", h1)
    }
}

#[derive(Row, Deserialize)]
struct Totals {
    total_count: u64,
    unique_users: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsParams {
    /// An event name, or a prefix such as `cart.*`.
    name: Option<String>,
    /// Start, inclusive: RFC 3339 or epoch ms. Default: the beginning.
    from: Option<String>,
    /// End, exclusive: RFC 3339 or epoch ms. Default: no end.
    to: Option<String>,
    /// Only this tenant's events (a read key is bound to its own tenant anyway).
    tenant: Option<String>,
    /// `channel`, `name`, `namespace`, `minute`, `hour`, `day` or `property:<key>`.
    group_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MetricsAnswer {
    name: String,
    from: i64,
    to: i64,
    total_count: u64,
    unique_users: u64,
    /// Present with `group_by`.
    grouped_metrics: Option<Vec<GroupAnswer>>,
}

#[derive(Row, Deserialize)]
struct GroupRow {
    group_key: String,
    total_count: u64,
    unique_user_count: u64,
    is_total: u8,
}

#[derive(Row, Deserialize, Serialize, ToSchema)]
pub struct GroupAnswer {
    group_key: String,
    total_count: u64,
    unique_user_count: u64,
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

/// Parses `from`/`to` into `errors`, with defaults; `to` must follow `from`.
fn range(
    from: Option<&str>,
    to: Option<&str>,
    default: (i64, i64),
    errors: &mut BTreeMap<&'static str, String>,
) -> (i64, i64) {
    let mut parse = |param: &'static str, v: Option<&str>, default: i64| match v.map(parse_time) {
        None => default,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            errors.insert(param, e);
            default
        }
    };
    let (from, to) = (parse("from", from, default.0), parse("to", to, default.1));
    if from >= to && !errors.contains_key("from") && !errors.contains_key("to") {
        errors.insert("to", "must be after from".into());
    }
    (from, to)
}

fn required_name(name: Option<String>, errors: &mut BTreeMap<&'static str, String>) -> String {
    let name = name.unwrap_or_default();
    if name.is_empty() {
        errors.insert(
            "name",
            "is required: an event name, or a prefix such as cart.*".to_string(),
        );
    }
    name
}

/// Total count and unique users of an event name or prefix over a range,
/// optionally grouped.
#[utoipa::path(
    get, path = "/v1/metrics", tag = "metrics", params(MetricsParams),
    responses(
        (status = 200, description = "Exact totals, and `grouped_metrics` with `group_by`", body = MetricsAnswer),
        (status = 400, description = "An invalid parameter, named", body = crate::api::ErrorAnswer),
        (status = 401, description = "No read key, or an unknown one", body = crate::api::ErrorAnswer),
        (status = 403, description = "A tenant other than the read key's", body = crate::api::ErrorAnswer),
        (status = 503, description = "ClickHouse is unavailable", body = crate::api::ErrorAnswer),
    ),
    security(("bearer" = []), ("read_key_header" = []))
)]
pub async fn metrics(
    State(state): State<ApiState>,
    Extension(scope): Extension<ReadScope>,
    Query(p): Query<MetricsParams>,
) -> Response {
    let tenant = match scope.tenant(p.tenant) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut errors = BTreeMap::new();
    let name = required_name(p.name, &mut errors);
    let (from, to) = range(
        p.from.as_deref(),
        p.to.as_deref(),
        (0, i64::MAX / 2),
        &mut errors,
    );
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
    let scope = Scope {
        name: Some(name_filter(&name)),
        tenant,
        from,
        to,
    };
    // Per-minute groups need the minute table; everything else can read
    // whole hours from the rollup.
    let minutes = matches!(group, Some(Grouping::Counts(expr)) if expr.contains("toStartOfMinute"));
    let counts = scope.counts(minutes);
    let mut answer = MetricsAnswer {
        name,
        from,
        to,
        total_count: 0,
        unique_users: 0,
        grouped_metrics: None,
    };
    match &group {
        None => {
            let sql = format!(
                "SELECT toUInt64(sum(count)) AS total_count, toUInt64(uniqExactMerge(users_exact)) AS unique_users \
                 FROM {counts} AS c"
            );
            match scope
                .bind(state.client.query(&sql))
                .fetch_one::<Totals>()
                .await
            {
                Ok(t) => {
                    (answer.total_count, answer.unique_users) = (t.total_count, t.unique_users)
                }
                Err(e) => return unavailable(e),
            }
        }
        // One scan for the groups and the total: the empty grouping set is
        // the total, told apart by `grouping()`, not by a key value. The
        // expression comes from the fixed list in `grouping`.
        Some(Grouping::Counts(expr)) => {
            let sql = format!(
                "SELECT {expr} AS group_key, toUInt64(sum(count)) AS total_count, \
                        toUInt64(uniqExactMerge(users_exact)) AS unique_user_count, \
                        toUInt8(grouping(group_key)) AS is_total \
                 FROM {counts} AS c \
                 GROUP BY GROUPING SETS ((group_key), ()) ORDER BY is_total DESC, group_key \
                 SETTINGS force_grouping_standard_compatibility = 1"
            );
            match scope
                .bind(state.client.query(&sql))
                .fetch_all::<GroupRow>()
                .await
            {
                Ok(rows) => {
                    let mut groups = vec![];
                    for r in rows {
                        // Standard `grouping()`: 1 where the key is rolled up.
                        if r.is_total == 1 {
                            (answer.total_count, answer.unique_users) =
                                (r.total_count, r.unique_user_count);
                        } else {
                            groups.push(GroupAnswer {
                                group_key: r.group_key,
                                total_count: r.total_count,
                                unique_user_count: r.unique_user_count,
                            });
                        }
                    }
                    answer.grouped_metrics = Some(groups);
                }
                Err(e) => return unavailable(e),
            }
        }
        // The per-minute table has no properties: these come from the events
        // themselves, over the same range of event time; the totals from the
        // counts as above.
        Some(Grouping::Property(key)) => {
            let sql = format!(
                "SELECT toUInt64(sum(count)) AS total_count, toUInt64(uniqExactMerge(users_exact)) AS unique_users \
                 FROM {counts} AS c"
            );
            match scope
                .bind(state.client.query(&sql))
                .fetch_one::<Totals>()
                .await
            {
                Ok(t) => {
                    (answer.total_count, answer.unique_users) = (t.total_count, t.unique_users)
                }
                Err(e) => return unavailable(e),
            }
            let sql = format!(
                "SELECT properties[{{key:String}}] AS group_key, count() AS total_count, \
                        toUInt64(uniqExact(coalesce(user_id, anonymous_id))) AS unique_user_count \
                 FROM events FINAL WHERE {} \
                 GROUP BY group_key ORDER BY group_key",
                scope.where_sql().replace("window_start", "timestamp")
            );
            match scope
                .bind(state.client.query(&sql))
                .param("key", key)
                .fetch_all::<GroupAnswer>()
                .await
            {
                Ok(groups) => answer.grouped_metrics = Some(groups),
                Err(e) => return unavailable(e),
            }
        }
    }
    let mut body = serde_json::to_value(&answer).expect("answers serialize");
    if answer.grouped_metrics.is_none() {
        body.as_object_mut().map(|o| o.remove("grouped_metrics"));
    }
    Json(body).into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RollingParams {
    /// An event name, or a prefix such as `cart.*`.
    name: Option<String>,
    /// Comma-separated lengths, each a number and `m`, `h` or `d`: `5m,1h,24h` (the default).
    windows: Option<String>,
    /// Where the windows end: RFC 3339 or epoch ms. Default: now.
    at: Option<String>,
    tenant: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RollingAnswer {
    name: String,
    /// The end of every window: the end of the minute holding `at`.
    to: String,
    windows: Vec<RollingWindow>,
}

#[derive(Serialize, ToSchema)]
pub struct RollingWindow {
    window: String,
    from: String,
    total_count: u64,
    unique_users: u64,
}

fn rfc3339(ms: i64) -> String {
    weir_core::event::ms_to_rfc3339(ms).unwrap_or_else(|| ms.to_string())
}

/// `5m`, `1h`, `24h`, `7d` as milliseconds: whole minutes, by construction.
fn window_length(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a length such as 5m, 1h or 7d");
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "m" => MINUTE_MS,
        "h" => 60 * MINUTE_MS,
        "d" => 24 * 60 * MINUTE_MS,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if n > 0 && ms <= MAX_ROLLING_MS => Ok(ms),
        _ => Err(format!("{s:?} must be from 1m to 90d")),
    }
}

/// Rolling counts and unique users ending now, over each requested length.
///
/// Windows are whole minutes, as the per-minute table is: a window of
/// length `L` holds the minute containing `at` and the minutes before it,
/// `L / 1m` in all.
#[utoipa::path(
    get, path = "/v1/metrics/rolling", tag = "metrics", params(RollingParams),
    responses(
        (status = 200, description = "One entry per window, in the order asked", body = RollingAnswer),
        (status = 400, description = "An invalid parameter, named", body = crate::api::ErrorAnswer),
        (status = 401, description = "No read key, or an unknown one", body = crate::api::ErrorAnswer),
        (status = 403, description = "A tenant other than the read key's", body = crate::api::ErrorAnswer),
        (status = 503, description = "ClickHouse is unavailable", body = crate::api::ErrorAnswer),
    ),
    security(("bearer" = []), ("read_key_header" = []))
)]
pub async fn rolling(
    State(state): State<ApiState>,
    Extension(scope): Extension<ReadScope>,
    Query(p): Query<RollingParams>,
) -> Response {
    let tenant = match scope.tenant(p.tenant) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut errors = BTreeMap::new();
    let name = required_name(p.name, &mut errors);
    let at = match p.at.as_deref().map(parse_time) {
        None => weir_core::event::now_ms(),
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            errors.insert("at", e);
            0
        }
    };
    let spec = p.windows.unwrap_or_else(|| "5m,1h,24h".into());
    let parsed: Result<Vec<(String, i64)>, String> = spec
        .split(',')
        .map(str::trim)
        .map(|w| window_length(w).map(|ms| (w.to_string(), ms)))
        .collect();
    let windows = match parsed {
        Ok(w) if w.len() > MAX_ROLLING_WINDOWS => {
            errors.insert("windows", format!("at most {MAX_ROLLING_WINDOWS} windows"));
            vec![]
        }
        Ok(w) => w,
        Err(e) => {
            errors.insert("windows", e);
            vec![]
        }
    };
    if !errors.is_empty() {
        return bad_request(errors);
    }
    let to = at.div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS;
    let mut answer = RollingAnswer {
        name: name.clone(),
        to: rfc3339(to),
        windows: vec![],
    };
    for (label, length) in windows {
        let scope = Scope {
            name: Some(name_filter(&name)),
            tenant: tenant.clone(),
            from: to - length,
            to,
        };
        let sql = format!(
            "SELECT toUInt64(sum(count)) AS total_count, toUInt64(uniqExactMerge(users_exact)) AS unique_users \
             FROM {} AS c",
            scope.counts(false)
        );
        match scope
            .bind(state.client.query(&sql))
            .fetch_one::<Totals>()
            .await
        {
            Ok(t) => answer.windows.push(RollingWindow {
                window: label,
                from: rfc3339(to - length),
                total_count: t.total_count,
                unique_users: t.unique_users,
            }),
            Err(e) => return unavailable(e),
        }
    }
    Json(answer).into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActiveUsersParams {
    /// `day` (DAU, the default), `week` (WAU, weeks start on Monday) or `month` (MAU).
    granularity: Option<String>,
    /// Start, inclusive: RFC 3339 or epoch ms. Default: 30 days before `to`.
    from: Option<String>,
    /// End, exclusive: RFC 3339 or epoch ms. Default: now.
    to: Option<String>,
    /// Only users of this event name or `prefix.*`; default: any event.
    name: Option<String>,
    tenant: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ActiveUsersAnswer {
    granularity: String,
    from: String,
    to: String,
    periods: Vec<ActivePeriod>,
}

#[derive(Row, Deserialize, Serialize, ToSchema)]
pub struct ActivePeriod {
    /// The first day of the period (UTC), `YYYY-MM-DD`.
    period_start: String,
    active_users: u64,
}

/// Daily, weekly or monthly active users: distinct users with any event (or
/// any event of `name`) in each calendar period of the range.
#[utoipa::path(
    get, path = "/v1/metrics/active-users", tag = "metrics", params(ActiveUsersParams),
    responses(
        (status = 200, description = "One entry per period with events, oldest first", body = ActiveUsersAnswer),
        (status = 400, description = "An invalid parameter, named", body = crate::api::ErrorAnswer),
        (status = 401, description = "No read key, or an unknown one", body = crate::api::ErrorAnswer),
        (status = 403, description = "A tenant other than the read key's", body = crate::api::ErrorAnswer),
        (status = 503, description = "ClickHouse is unavailable", body = crate::api::ErrorAnswer),
    ),
    security(("bearer" = []), ("read_key_header" = []))
)]
pub async fn active_users(
    State(state): State<ApiState>,
    Extension(scope): Extension<ReadScope>,
    Query(p): Query<ActiveUsersParams>,
) -> Response {
    let tenant = match scope.tenant(p.tenant) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut errors = BTreeMap::new();
    let granularity = p.granularity.unwrap_or_else(|| "day".into());
    let period = match granularity.as_str() {
        "day" => "toDate(window_start)",
        "week" => "toStartOfWeek(window_start, 1)",
        "month" => "toStartOfMonth(window_start)",
        _ => {
            errors.insert("granularity", "must be day, week or month".into());
            ""
        }
    };
    let name = match p.name {
        Some(n) if n.is_empty() => {
            errors.insert("name", "must not be empty".into());
            None
        }
        n => n,
    };
    let now = weir_core::event::now_ms();
    let to_default =
        p.to.as_deref()
            .and_then(|t| parse_time(t).ok())
            .unwrap_or(now);
    let (from, to) = range(
        p.from.as_deref(),
        p.to.as_deref(),
        (to_default - 30 * 24 * 3_600_000, now),
        &mut errors,
    );
    if !errors.is_empty() {
        return bad_request(errors);
    }
    let scope = Scope {
        name: name.as_deref().map(name_filter),
        tenant,
        from,
        to,
    };
    // `period` comes from the fixed list above.
    let sql = format!(
        "SELECT toString({period}) AS period_start, toUInt64(uniqExactMerge(users_exact)) AS active_users \
         FROM {} AS c \
         GROUP BY period_start ORDER BY period_start",
        scope.counts(false)
    );
    match scope
        .bind(state.client.query(&sql))
        .fetch_all::<ActivePeriod>()
        .await
    {
        Ok(periods) => Json(ActiveUsersAnswer {
            granularity,
            from: rfc3339(from),
            to: rfc3339(to),
            periods,
        })
        .into_response(),
        Err(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_lengths_are_whole_minutes_within_bounds() {
        assert_eq!(window_length("5m"), Ok(300_000));
        assert_eq!(window_length("24h"), Ok(86_400_000));
        assert_eq!(window_length("90d"), Ok(MAX_ROLLING_MS));
        for bad in [
            "",
            "m",
            "0m",
            "-5m",
            "5s",
            "91d",
            "1.5h",
            "5 m",
            "99999999999999999d",
        ] {
            assert!(window_length(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grouping_takes_only_the_documented_values() {
        for ok in [
            "channel",
            "name",
            "namespace",
            "minute",
            "hour",
            "day",
            "property:plan",
        ] {
            assert!(grouping(ok).is_ok(), "{ok}");
        }
        for bad in ["", "week", "property:", "name; DROP TABLE events"] {
            assert!(grouping(bad).is_err(), "{bad}");
        }
    }
}
