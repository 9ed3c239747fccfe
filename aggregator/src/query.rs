//! What every query route shares: the API state, the read scope a key
//! grants, the error answers, and the parsing of the parameters several
//! routes take (times, names). `api` builds the router from the routes;
//! the routes (`events_api`, `metrics_api`, `activity_api`) import from here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::ToSchema;
use weir_core::api_keys::ApiKeys;

#[derive(Clone)]
pub struct ApiState {
    pub client: clickhouse::Client,
    /// `None` when auth is off.
    pub read_keys: Option<Arc<ApiKeys>>,
}

/// Whose data a request may read: the read key's tenant, or anyone's when
/// auth is off.
#[derive(Debug, Clone)]
pub struct ReadScope(pub(crate) Option<String>);

impl ReadScope {
    /// The tenant a query is bounded to, given the `tenant` the client asked
    /// for. A key cannot widen its scope to another tenant.
    pub fn tenant(&self, asked: Option<String>) -> Result<Option<String>, OtherTenant> {
        match (&self.0, asked) {
            (None, asked) => Ok(asked),
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(asked)) if *own == asked => Ok(Some(asked)),
            (Some(_), Some(_)) => Err(OtherTenant),
        }
    }
}

/// A request for a tenant its read key does not read: 403.
#[derive(Debug)]
pub struct OtherTenant;

impl IntoResponse for OtherTenant {
    fn into_response(self) -> Response {
        error(
            StatusCode::FORBIDDEN,
            "tenant",
            "this read key reads its own tenant only".into(),
        )
    }
}

/// The error body of every query route: `{"error": {"<param>": "<reason>"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorAnswer {
    #[schema(example = json!({"from": "must be RFC 3339 or epoch milliseconds"}))]
    pub error: BTreeMap<String, String>,
}

/// The error answers every query route documents.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only documents the answers
pub enum QueryErrors {
    /// An invalid parameter, named
    #[response(status = 400)]
    BadRequest(ErrorAnswer),
    /// No read key, or an unknown one
    #[response(status = 401)]
    Unauthorized(ErrorAnswer),
    /// A tenant other than the read key's
    #[response(status = 403)]
    Forbidden(ErrorAnswer),
    /// ClickHouse is unavailable
    #[response(status = 503)]
    Unavailable(ErrorAnswer),
}

pub(crate) fn error(status: StatusCode, param: &str, reason: String) -> Response {
    (status, Json(json!({ "error": { param: reason } }))).into_response()
}

/// A 400 naming each invalid parameter (static names, or names a client sent).
pub(crate) fn bad_request<K: Serialize + Ord>(errors: BTreeMap<K, String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": errors }))).into_response()
}

/// A query ClickHouse could not answer: 503, the cause in the log only.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "query failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "query",
        "ClickHouse is unavailable".into(),
    )
}

/// The times RFC 3339 can write: 0000-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999Z, in epoch milliseconds.
pub const TIME_RANGE_MS: std::ops::RangeInclusive<i64> = -62_167_219_200_000..=253_402_300_799_999;

/// RFC 3339 or epoch milliseconds, within `TIME_RANGE_MS`. The bound keeps
/// every time computed from a parsed one (whole hours, the end of a minute,
/// a rolling window's start, a default range) far from i64 overflow: epoch
/// milliseconds near `i64::MIN` or `MAX` overflowed them (found by `fuzz/`
/// aggregator_query).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let ms = match s.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => weir_core::event::rfc3339_ms(s)
            .map_err(|_| "must be RFC 3339 or epoch milliseconds".to_string())?,
    };
    if !TIME_RANGE_MS.contains(&ms) {
        return Err(format!(
            "must be RFC 3339 or epoch milliseconds from {} to {} (years 0000 to 9999)",
            TIME_RANGE_MS.start(),
            TIME_RANGE_MS.end()
        ));
    }
    Ok(ms)
}

/// A `name` parameter: an exact event name, or `prefix.*`. Returns the SQL
/// condition and the value to bind as `{name:String}`.
pub(crate) fn name_filter(name: &str) -> (&'static str, String) {
    match name.strip_suffix(".*") {
        Some(prefix) => ("startsWith(name, {name:String})", format!("{prefix}.")),
        None => ("name = {name:String}", name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_bounded_to_what_rfc3339_writes() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("-1"), Ok(-1));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("0000-01-01T00:00:00Z"),
            Ok(*TIME_RANGE_MS.start())
        );
        assert_eq!(
            parse_time("9999-12-31T23:59:59.999Z"),
            Ok(*TIME_RANGE_MS.end())
        );
        // Found by fuzz/ (aggregator_query): these overflowed the range
        // arithmetic of /v1/metrics, /v1/metrics/rolling and active-users.
        for bad in [
            "-9223372036854775808",
            "9223372036854775807",
            "253402300800000",
            "-62167219200001",
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00+23:59",
            "yesterday",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
