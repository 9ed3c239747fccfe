//! The gateway's HTTP shell: the event routes (`routes`), their OpenAPI spec
//! and Swagger UI, behind the layers every request passes: CORS, request
//! counting, the caller's trace, and the in-flight request limit.
//!
//! A request's journey: `routes` (the path) → `handlers` (auth, body,
//! parse) → `admission` (validate, limits, publish to the `EventSink`) →
//! `answers` (the reply to any refusal).

use crate::answers::overloaded;
use crate::handlers::HttpState;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;
use std::sync::Arc;
use tracing::Instrument;
use weir_core::trace_context;

/// The CORS policy for `origins` (`*`, a comma-separated list, or empty for none).
pub fn cors(origins: &str) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = origins.trim();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins == "*" {
        AllowOrigin::any()
    } else {
        let list = origins
            .split(',')
            .map(|o| HeaderValue::from_str(o.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("cors_allowed_origins: {e}"))?;
        AllowOrigin::list(list)
    };
    let headers = [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::HeaderName::from_static("x-write-key"),
    ];
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::POST, axum::http::Method::OPTIONS])
            .allow_headers(headers)
            .max_age(std::time::Duration::from_secs(3600)),
    ))
}

/// The event API, its OpenAPI spec and Swagger UI, behind the in-flight
/// request limit and the CORS policy.
pub fn router(state: Arc<HttpState>) -> Router {
    let limit = state.requests.clone();
    let cors = state.cors.clone();
    let (api, spec) = crate::routes::api(state);
    let router = api
        .merge(weir_core::api_docs::router(spec))
        .layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| {
                let limit = limit.clone();
                async move {
                    // A permit per request in flight; none left means overload, said at once.
                    match limit.try_acquire_owned() {
                        Ok(_permit) => next.run(req).await,
                        Err(_) => overloaded("too many requests in flight"),
                    }
                }
            },
        ))
        .layer(axum::middleware::from_fn(trace_request))
        .layer(axum::middleware::from_fn(count_requests));
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Opens the request's span as a child of the caller's `traceparent`. The
/// parent must be set before a span starts, so this cannot wait for the
/// handler's own span, which becomes this one's child.
async fn trace_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let span =
        tracing::info_span!("http_request", method = %req.method(), path = %req.uri().path());
    let incoming = req
        .headers()
        .get(trace_context::HEADER)
        .and_then(|v| v.to_str().ok());
    trace_context::join(&span, incoming);
    next.run(req).instrument(span).await
}

/// Counts every request by route and status, and times it.
async fn count_requests(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("weir_ingest_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("weir_ingest_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
