//! Activity over time: rolling counts and unique users ending now
//! (`GET /v1/metrics/rolling`), and daily, weekly or monthly active users
//! (`GET /v1/metrics/active-users`), from the same counts as `/v1/metrics`
//! (see `counts`).

use crate::counts::{range, required_name, rfc3339, Scope, MINUTE_MS};
use crate::query::{
    bad_request, name_filter, parse_time, unavailable, ApiState, QueryErrors, ReadScope,
};
use crate::strict_query::StrictQuery;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// The longest rolling window: the per-minute table is kept that long at least.
const MAX_ROLLING_MS: i64 = 90 * 24 * 3_600_000;
const MAX_ROLLING_WINDOWS: usize = 12;

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

/// `5m`, `1h`, `24h`, `7d` as milliseconds: whole minutes, by construction.
fn window_length(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a length such as 5m, 1h or 7d");
    // The unit is the last character, which need not be one byte long.
    let unit_at = s.char_indices().next_back().map_or(0, |(i, _)| i);
    let (n, unit) = s.split_at(unit_at);
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
        QueryErrors,
    ),
    security(("bearer" = []), ("read_key_header" = []))
)]
pub async fn rolling(
    State(state): State<ApiState>,
    Extension(scope): Extension<ReadScope>,
    StrictQuery(p): StrictQuery<RollingParams>,
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
        match scope.totals(&state.client).await {
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
        QueryErrors,
    ),
    security(("bearer" = []), ("read_key_header" = []))
)]
pub async fn active_users(
    State(state): State<ApiState>,
    Extension(scope): Extension<ReadScope>,
    StrictQuery(p): StrictQuery<ActiveUsersParams>,
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
    fn a_multibyte_last_character_is_refused_not_split() {
        // Found by fuzz/ (aggregator_query): `windows=5%E2%82%AC` panicked
        // slicing inside the character.
        for bad in ["5€", "0\u{FFFD}", "€", "1hé"] {
            assert!(window_length(bad).is_err(), "{bad:?}");
        }
    }
}
