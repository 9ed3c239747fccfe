//! The query API's router: its routes, read-key auth and the OpenAPI spec
//! generated from the handlers.
//!
//! Each route is registered once, through `OpenApiRouter`, so `/openapi.json`
//! cannot drift from what is served. A request passes `require_read_key`
//! first; the key's tenant then bounds every query it makes. Every value a
//! client sends reaches ClickHouse as a query parameter, never spliced into
//! SQL (see `events_api` and `metrics_api`). What the routes share lives in
//! `query`.

use crate::query::{error, ApiState, ReadScope};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weir_core::api_keys::AuthError;

/// The routes of the query API, with `/openapi.json` and `/docs`.
pub fn router(state: ApiState) -> Router {
    let (router, mut spec) = OpenApiRouter::new()
        .routes(routes!(crate::events_api::events))
        .routes(routes!(crate::metrics_api::metrics))
        .routes(routes!(crate::activity_api::rolling))
        .routes(routes!(crate::activity_api::active_users))
        .routes(routes!(crate::legacy_api::stream_metrics))
        .routes(routes!(crate::legacy_api::read))
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
         it reads its own tenant's data only. Write keys do not read. Every route refuses a \
         parameter it does not list with a 400 naming it, and answers times in RFC 3339 \
         (epoch milliseconds are accepted on input). The `legacy` routes answer in the shapes \
         of the systems weir replaces.",
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
