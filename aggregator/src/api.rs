//! The query API's router: its routes, read-key auth, the OpenAPI spec
//! generated from the handlers, and the answers every handler shares.
//!
//! Each route is registered once, through `OpenApiRouter`, so `/openapi.json`
//! cannot drift from what is served. A request passes `require_read_key`
//! first; the key's tenant then bounds every query it makes. Every value a
//! client sends reaches ClickHouse as a query parameter, never spliced into
//! SQL (see `events_api` and `metrics_api`).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weir_core::api_keys::{ApiKeys, AuthError};

#[derive(Clone)]
pub struct ApiState {
    pub client: clickhouse::Client,
    /// `None` when auth is off.
    pub read_keys: Option<Arc<ApiKeys>>,
}

/// The routes of the query API, with `/openapi.json` and `/docs`.
pub fn router(state: ApiState) -> Router {
    let (router, mut spec) = OpenApiRouter::new()
        .routes(routes!(crate::events_api::events))
        .routes(routes!(crate::metrics_api::metrics))
        .routes(routes!(crate::activity_api::rolling))
        .routes(routes!(crate::activity_api::active_users))
        // Only matched routes: an unknown path is a 404 whatever the key.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_read_key,
        ))
        .with_state(state)
        .split_for_parts();
    spec.info = weir_core::api_docs::info(
        "weir query API",
        "Reads what the aggregator materialised in ClickHouse: the event history and exact \
         counts and unique users. Send a read key as `Authorization: Bearer` or `X-Read-Key`; \
         it reads its own tenant's data only. Write keys do not read.",
    );
    let components = spec.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "read_key_header",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Read-Key"))),
    );
    router.merge(weir_core::api_docs::router(spec))
}

/// Whose data a request may read: the read key's tenant, or anyone's when
/// auth is off.
#[derive(Debug, Clone)]
pub struct ReadScope(Option<String>);

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

async fn require_read_key(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let scope = match &state.read_keys {
        None => ReadScope(None),
        Some(keys) => match keys.tenant(req.headers()) {
            Ok(tenant) => ReadScope(Some(tenant.to_string())),
            Err(e) => {
                let reason = match e {
                    AuthError::Missing => {
                        "a read key is required: Authorization: Bearer <key>, or X-Read-Key"
                    }
                    AuthError::Invalid => "unknown read key",
                };
                metrics::counter!("weir_aggregator_query_unauthorized_total").increment(1);
                return error(StatusCode::UNAUTHORIZED, "auth", reason.into());
            }
        },
    };
    req.extensions_mut().insert(scope);
    next.run(req).await
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

fn error(status: StatusCode, param: &str, reason: String) -> Response {
    (status, Json(json!({ "error": { param: reason } }))).into_response()
}

pub(crate) fn bad_request(errors: BTreeMap<&'static str, String>) -> Response {
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
