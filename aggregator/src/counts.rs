//! Where the metrics routes read counts from: per-window rows of
//! `event_counts_1m` for the partial hours at either end of a range, and of
//! the hourly rollup `event_counts_1h` for the whole hours between, under the
//! request's name and tenant filters.
//!
//! Unique users are `uniqExact` states merged across rows, so any range
//! counts each user once, never summed per window, and exactly at any
//! cardinality (`uniqCombined64` estimates past a few thousand users).

use crate::query::{parse_time, TIME_RANGE_MS};
use clickhouse::Row;
use serde::Deserialize;
use std::collections::BTreeMap;

pub(crate) const MINUTE_MS: i64 = 60_000;

/// The rows a query reads, by the same filters every metrics route takes.
pub(crate) struct Scope {
    pub name: Option<(&'static str, String)>,
    pub tenant: Option<String>,
    pub from: i64,
    pub to: i64,
}

const HOUR_MS: i64 = 3_600_000;
/// 2100-01-01: beyond what the hourly rollup's `DateTime` holds, a range is
/// open-ended anyway.
const FAR_FUTURE_MS: i64 = 4_102_444_800_000;

impl Scope {
    /// The event time range, for the `events` table.
    pub fn where_sql(&self) -> String {
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
    pub fn counts(&self, minutes: bool) -> String {
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

    pub fn bind(&self, mut q: clickhouse::query::Query) -> clickhouse::query::Query {
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
pub(crate) struct Totals {
    pub total_count: u64,
    pub unique_users: u64,
}

impl Scope {
    /// The count and the exact unique users of the whole range.
    pub async fn totals(&self, client: &clickhouse::Client) -> clickhouse::error::Result<Totals> {
        let sql = format!(
            "SELECT toUInt64(sum(count)) AS total_count, toUInt64(uniqExactMerge(users_exact)) AS unique_users \
             FROM {} AS c",
            self.counts(false)
        );
        self.bind(client.query(&sql)).fetch_one::<Totals>().await
    }
}

/// The range of a query without `from` or `to`: all of event time that
/// RFC 3339 can write, so that the answer can name its bounds.
pub(crate) const OPEN_RANGE: (i64, i64) = (0, *TIME_RANGE_MS.end());

/// Parses `from`/`to` into `errors`, with defaults; `to` must follow `from`.
pub(crate) fn range(
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

pub(crate) fn required_name(
    name: Option<String>,
    errors: &mut BTreeMap<&'static str, String>,
) -> String {
    let name = name.unwrap_or_default();
    if name.is_empty() {
        errors.insert(
            "name",
            "is required: an event name, or a prefix such as cart.*".to_string(),
        );
    }
    name
}

pub(crate) fn rfc3339(ms: i64) -> String {
    weir_core::event::ms_to_rfc3339(ms).unwrap_or_else(|| ms.to_string())
}
