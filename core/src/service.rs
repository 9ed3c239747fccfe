//! The shell every stage binary runs in: flags and config, telemetry, the
//! shutdown signal and health. A stage's `main` is one call to `run` (or
//! `run_with`, for a stage with commands besides running).

use crate::config::CommonArgs;
use crate::health::{Health, HealthCheck};
use crate::ops;
use crate::shutdown;
use crate::telemetry::{Telemetry, TelemetryConfig};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use tokio_util::sync::CancellationToken;

/// How often the shell polls each dependency's health check.
pub const HEALTH_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

/// A stage's whole configuration.
pub trait StageConfig: Serialize + DeserializeOwned + Default {
    fn telemetry(&self) -> &TelemetryConfig;
}

/// What a running stage gets from the shell.
pub struct Service {
    /// The stage's components; `/readyz` is ready when all are.
    pub health: Health,
    pub shutdown: CancellationToken,
    pub metrics: PrometheusHandle,
}

impl Service {
    /// `/healthz`, `/readyz` and `/metrics` for this stage.
    pub fn ops_router(&self) -> axum::Router {
        ops::router(self.health.clone(), self.metrics.clone())
    }

    /// Polls a dependency into `/readyz` until shutdown.
    pub fn poll(&self, check: impl HealthCheck) {
        self.health
            .poll(check, HEALTH_POLL_INTERVAL, self.shutdown.clone());
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

/// A stage's command line: the flags every binary takes, and its commands.
/// With no command, the stage runs.
#[derive(Debug, Parser)]
struct Cli<X: Subcommand> {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command<X>>,
}

#[derive(Debug, Subcommand)]
enum Command<X: Subcommand> {
    /// Run the stage until SIGTERM or SIGINT (the default).
    Run,
    #[command(flatten)]
    Stage(X),
}

/// The commands of a stage that only runs.
#[derive(Debug, Subcommand)]
pub enum NoCommands {}

/// Parses flags, loads `C`, starts telemetry and runs `stage` until it returns.
pub async fn run<C, F, Fut>(name: &'static str, about: &'static str, stage: F) -> anyhow::Result<()>
where
    C: StageConfig,
    F: FnOnce(C, Service) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_with(name, about, stage, |never: NoCommands, _: C| async move {
        match never {}
    })
    .await
}

/// `run`, for a stage with commands of its own (`X`, clap subcommands listed
/// in `--help` beside `run`): one of them runs `command` with the loaded
/// config and telemetry, instead of the stage.
pub async fn run_with<C, X, F, Fut, G, GFut>(
    name: &'static str,
    about: &'static str,
    stage: F,
    command: G,
) -> anyhow::Result<()>
where
    C: StageConfig,
    X: Subcommand,
    F: FnOnce(C, Service) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
    G: FnOnce(X, C) -> GFut,
    GFut: Future<Output = anyhow::Result<()>>,
{
    let matches = Cli::<X>::command().name(name).about(about).get_matches();
    let cli = Cli::<X>::from_arg_matches(&matches)?;
    let cfg: C = cli.common.load()?;
    if cli.common.print_config_if_asked(&cfg)? {
        return Ok(());
    }
    let telemetry = Telemetry::init(&format!("weir-{name}"), cfg.telemetry())?;
    let result = match cli.command {
        None | Some(Command::Run) => {
            let service = Service {
                health: Health::default(),
                shutdown: shutdown::on_signal(),
                metrics: telemetry.metrics.clone(),
            };
            stage(cfg, service).await
        }
        Some(Command::Stage(x)) => command(x, cfg).await,
    };
    telemetry.shutdown();
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "{name} failed");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Subcommand, PartialEq)]
    enum Extra {
        /// Does the extra thing.
        ReplayLate {
            #[arg(long)]
            from: String,
        },
    }

    #[test]
    fn commands_are_listed_and_flags_go_before_or_after_them() {
        let help = Cli::<Extra>::command().render_help().to_string();
        assert!(
            help.contains("run") && help.contains("replay-late"),
            "{help}"
        );
        let cli = Cli::<Extra>::try_parse_from(["p", "replay-late", "--from", "0", "--set", "a=b"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Stage(Extra::ReplayLate { .. }))
        ));
        assert_eq!(cli.common.overrides, ["a=b"]);
        let cli = Cli::<NoCommands>::try_parse_from(["p", "--print-config"]).unwrap();
        assert!(cli.command.is_none() && cli.common.print_config);
        assert!(Cli::<NoCommands>::try_parse_from(["p", "replay-late"]).is_err());
    }
}
