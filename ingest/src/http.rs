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

#[cfg(test)]
mod tests {
    //! The real router on a `MemorySink`: what the gateway answers and hands
    //! on, without a broker. The real-stack tests prove the rest.
    use super::*;
    use crate::config::IngestConfig;
    use crate::sink::MemorySink;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    fn gateway() -> (Router, Arc<MemorySink>) {
        let mut cfg = IngestConfig::default();
        cfg.auth.write_keys = "router-key-1:acme".into();
        let sink = Arc::new(MemorySink::new());
        let gateway = crate::gateway(&cfg, sink.clone()).unwrap();
        (router(gateway.http), sink)
    }

    async fn post(app: &Router, path: &str, key: Option<&str>, body: &str) -> (StatusCode, Value) {
        let mut req = Request::post(path).header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn a_batch_is_answered_per_event_and_only_valid_events_reach_the_sink() {
        let (app, sink) = gateway();
        let batch = json!({"events": [
            {"event_id": "a", "name": "cart.add", "user_id": "u1"},
            {"event_id": "b", "name": "cart.add", "colour": "red"},
        ]});
        let (status, v) = post(
            &app,
            "/v1/events/batch",
            Some("router-key-1"),
            &batch.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["accepted"][0]["event_id"], "a");
        assert_eq!(v["rejected"][0]["message"], "colour: unknown field");
        let published = sink.take();
        assert_eq!(published.len(), 1);
        assert_eq!(
            (
                published[0].0.event_id.as_str(),
                published[0].0.tenant.as_str()
            ),
            ("a", "acme"),
            "the key's tenant is stamped"
        );
    }

    #[tokio::test]
    async fn refusals_are_specific_and_publish_nothing() {
        let (app, sink) = gateway();
        let one = r#"{"name": "cart.add"}"#;
        for (path, key, body, status, code) in [
            ("/v1/events", None, one, 401, "unauthorized"),
            ("/v1/events", Some("wrong-key-1"), one, 401, "unauthorized"),
            (
                "/v1/events",
                Some("router-key-1"),
                "{\"name\": ",
                400,
                "malformed_json",
            ),
            (
                "/v1/events",
                Some("router-key-1"),
                r#"{"user_id": "u"}"#,
                400,
                "invalid_event",
            ),
            (
                "/v1/events/batch",
                Some("router-key-1"),
                r#"{"events": []}"#,
                400,
                "invalid_batch",
            ),
        ] {
            let (got, v) = post(&app, path, key, body).await;
            assert_eq!(got.as_u16(), status, "{path} {body}: {v}");
            assert_eq!(v["error"]["code"], code, "{path} {body}: {v}");
        }
        assert!(sink.take().is_empty());
    }
}
