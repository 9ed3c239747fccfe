//! The shell every stage binary runs in: flags and config, telemetry, the
//! shutdown signal and readiness. A stage's `main` is one call to `run`.

use crate::config::CommonArgs;
use crate::ops::{self, Readiness};
use crate::shutdown;
use crate::telemetry::{Telemetry, TelemetryConfig};
use clap::{CommandFactory, FromArgMatches};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use tokio_util::sync::CancellationToken;

/// A stage's whole configuration.
pub trait StageConfig: Serialize + DeserializeOwned + Default {
    fn telemetry(&self) -> &TelemetryConfig;
}

/// What a running stage gets from the shell.
pub struct Service {
    pub ready: Readiness,
    pub shutdown: CancellationToken,
    pub metrics: PrometheusHandle,
}

impl Service {
    /// `/healthz`, `/readyz` and `/metrics` for this stage.
    pub fn ops_router(&self) -> axum::Router {
        ops::router(self.ready.clone(), self.metrics.clone())
    }

    /// Awaits `fut`, or returns `None` if shutdown comes first: starting up
    /// waits on other services, and a signal meanwhile should just stop.
    pub async fn until_shutdown<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            v = fut => Some(v),
            _ = self.shutdown.cancelled() => None,
        }
    }
}

/// Parses flags, loads `C`, starts telemetry and runs `stage` until it returns.
pub async fn run<C, F, Fut>(name: &'static str, about: &'static str, stage: F) -> anyhow::Result<()>
where
    C: StageConfig,
    F: FnOnce(C, Service) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let matches = CommonArgs::command().name(name).about(about).get_matches();
    let args = CommonArgs::from_arg_matches(&matches)?;
    let cfg: C = args.load()?;
    if args.print_config_if_asked(&cfg)? {
        return Ok(());
    }
    let telemetry = Telemetry::init(&format!("weir-{name}"), cfg.telemetry())?;
    let service = Service {
        ready: Readiness::default(),
        shutdown: shutdown::on_signal(),
        metrics: telemetry.metrics.clone(),
    };
    let result = stage(cfg, service).await;
    telemetry.shutdown();
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "{name} failed");
    }
    result
}
