//! Health, readiness and metrics endpoints, merged into each stage's router.
//!
//! `/healthz` answers while the process runs; `/readyz` answers 200 only while
//! every component of the stage is ready (see `health`) and lists them;
//! `/metrics` is the Prometheus text format. `serve` runs a stage's router
//! within the limits of `HttpConfig`, and gives every 404 and 405 that has
//! no body of its own a JSON error body, so a client that mistypes a path or
//! a method reads why, in the same shape as every other error.

use crate::health::Health;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
struct OpsState {
    health: Health,
    metrics: PrometheusHandle,
    process: std::sync::Arc<metrics_process::Collector>,
}

pub fn router<S>(health: Health, metrics: PrometheusHandle) -> Router<S> {
    // The process's own figures (process_resident_memory_bytes, CPU seconds,
    // open fds, ...), read from /proc at each scrape, as every Prometheus
    // client library exports them.
    let process = metrics_process::Collector::default();
    process.describe();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<OpsState>| async move {
                s.process.collect();
                s.metrics.render()
            }),
        )
        .with_state(OpsState {
            health,
            metrics,
            process: std::sync::Arc::new(process),
        })
}

/// `{"ready": bool, "components": {"<name>": {"state": "ready" | "starting" |
/// "not_ready", "reason": ...}}}`, 200 when ready and 503 otherwise.
async fn readyz(State(s): State<OpsState>) -> Response {
    let ready = s.health.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": ready, "components": s.health.report() });
    (status, Json(body)).into_response()
}

/// The `[http]` section: limits of the HTTP/1.1 server every stage runs,
/// against clients that send too much or too slowly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A connection gets this long to send a request's line and headers,
    /// counted from the connection's start or the end of its previous
    /// request; later, it is closed without an answer. So it also bounds how
    /// long an idle keep-alive connection stays open. 0 turns it off.
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this long of its headers; later
    /// gets 408. Applied by the routes that read a body (ingest's). 0 turns
    /// it off.
    pub body_read_timeout_ms: u64,
    /// The request line and headers, in bytes; more gets 431 and the
    /// connection is closed.
    pub max_header_bytes: usize,
    /// Headers in one request; more gets 431.
    pub max_headers: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
        }
    }
}

impl HttpConfig {
    fn timeout(ms: u64) -> Option<Duration> {
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    pub fn header_read_timeout(&self) -> Option<Duration> {
        Self::timeout(self.header_read_timeout_ms)
    }

    pub fn body_read_timeout(&self) -> Option<Duration> {
        Self::timeout(self.body_read_timeout_ms)
    }
}

/// Serves `app` on `addr` until `shutdown` is cancelled, with the default
/// `HttpConfig`.
pub async fn serve(
    addr: String,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    serve_with(addr, app, shutdown, HttpConfig::default()).await
}

/// Serves `app` over HTTP/1.1 on `addr` until `shutdown` is cancelled, within
/// `http`'s limits. On shutdown it stops accepting, lets each connection
/// finish its open request, and returns once all have closed.
pub async fn serve_with(
    addr: String,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
    http: HttpConfig,
) -> anyhow::Result<()> {
    let app = app.layer(axum::middleware::from_fn(json_route_errors));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "http listening");
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_read_timeout())
        .max_headers(http.max_headers)
        .max_header_size(http.max_header_bytes);
    // Each connection holds a receiver; all dropped means all closed.
    let (closed_tx, closed_rx) = watch::channel(());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let (shutdown, closed_rx) = (shutdown.clone(), closed_rx.clone());
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            // Timeouts, oversize headers and clients that went away end here.
            if let Err(e) = result {
                tracing::debug!(error = %e, "http connection ended");
            }
            drop(closed_rx);
        });
    }
    drop(listener);
    drop(closed_rx);
    closed_tx.closed().await;
    Ok(())
}

/// Gives a bodiless 404 (no such route) or 405 (the route exists, the method
/// does not) a JSON body: `{"error": {"code": "not_found" |
/// "method_not_allowed", "message": ...}}`. Answers that carry their own body
/// pass as they are; a 405 keeps its `Allow` header.
async fn json_route_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let code = match response.status() {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        _ => return response,
    };
    if response.body().size_hint().exact() != Some(0) {
        return response;
    }
    let message = if code == "not_found" {
        format!("no route {path}; /openapi.json lists the routes")
    } else {
        format!("{path} does not take {method}; the Allow header lists what it takes")
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// A failed accept: the peer's own trouble is ignored; anything else (such
/// as running out of file descriptors) is logged and waited out.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_util::sync::CancellationToken;

    /// Serves a one-route app with `http`'s limits; returns its address.
    async fn start(http: HttpConfig, shutdown: CancellationToken) -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let app = Router::new().route("/", get(|| async { "hi" }));
        let (a, s) = (addr.clone(), shutdown.clone());
        tokio::spawn(async move { serve_with(a, app, s, http).await.unwrap() });
        for _ in 0..100 {
            if TcpStream::connect(&addr).await.is_ok() {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not start");
    }

    /// Writes `request` and reads until the server closes or `within` passes:
    /// the answer's bytes and whether the connection was closed.
    async fn exchange(addr: &str, request: &[u8], within: Duration) -> (String, bool) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(request).await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
        (String::from_utf8_lossy(&out).into_owned(), read.is_ok())
    }

    #[tokio::test]
    async fn oversize_and_too_many_headers_get_431() {
        let http = HttpConfig {
            max_header_bytes: 4096,
            max_headers: 20,
            ..Default::default()
        };
        let addr = start(http, CancellationToken::new()).await;
        let ok = exchange(
            &addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(
            ok.0.starts_with("HTTP/1.1 200") && ok.0.ends_with("hi"),
            "{ok:?}"
        );
        let big = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(5000)
        );
        let (answer, _) = exchange(&addr, big.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\nhost: x\r\n{many}\r\n");
        let (answer, _) = exchange(&addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    #[tokio::test]
    async fn unfinished_headers_and_idle_connections_are_closed_in_time() {
        let http = HttpConfig {
            header_read_timeout_ms: 300,
            ..Default::default()
        };
        let shutdown = CancellationToken::new();
        let addr = start(http, shutdown.clone()).await;
        for request in [&b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: "[..], b""] {
            let started = std::time::Instant::now();
            let (answer, closed) = exchange(&addr, request, Duration::from_secs(5)).await;
            assert!(closed && answer.is_empty(), "{answer:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        // Shutdown waits for no idle connection and ends the server.
        let _idle = TcpStream::connect(&addr).await.unwrap();
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(TcpStream::connect(&addr).await.is_err(), "still accepting");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_answer_json() {
        let addr = start(HttpConfig::default(), CancellationToken::new()).await;
        let (answer, _) = exchange(
            &addr,
            b"GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(
            answer.contains("content-type: application/json"),
            "{answer}"
        );
        assert!(
            answer.ends_with(r#"{"error":{"code":"not_found","message":"no route /nowhere; /openapi.json lists the routes"}}"#),
            "{answer}"
        );
        let (answer, _) = exchange(
            &addr,
            b"DELETE / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        assert!(answer.contains("allow: GET"), "{answer}");
        assert!(
            answer.contains(r#""code":"method_not_allowed""#),
            "{answer}"
        );
    }

    #[test]
    fn zero_turns_a_timeout_off() {
        let off = HttpConfig {
            header_read_timeout_ms: 0,
            body_read_timeout_ms: 0,
            ..Default::default()
        };
        assert_eq!(off.header_read_timeout(), None);
        assert_eq!(off.body_read_timeout(), None);
        assert_eq!(
            HttpConfig::default().header_read_timeout(),
            Some(Duration::from_secs(10))
        );
    }
}
