//! Health, readiness and metrics endpoints, merged into each stage's router.
//!
//! `/healthz` answers while the process runs; `/readyz` answers 200 only while
//! the stage's dependencies are reachable (the stage flips `Readiness`);
//! `/metrics` is the Prometheus text format.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether the stage can do its work right now.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct OpsState {
    ready: Readiness,
    metrics: PrometheusHandle,
}

pub fn router<S>(ready: Readiness, metrics: PrometheusHandle) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<OpsState>| async move { s.metrics.render() }),
        )
        .with_state(OpsState { ready, metrics })
}

async fn readyz(State(s): State<OpsState>) -> (StatusCode, &'static str) {
    if s.ready.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves `app` on `addr` until `shutdown` is cancelled.
pub async fn serve(
    addr: String,
    app: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "http listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
