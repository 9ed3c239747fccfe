//! `ingest`: the thin binary around `weir_ingest`.

use clap::Parser;
use weir_core::config::CommonArgs;
use weir_core::ops::{self, Readiness};
use weir_core::shutdown;
use weir_core::telemetry::Telemetry;
use weir_ingest::config::IngestConfig;

#[derive(Parser)]
#[command(name = "ingest", about = "weir ingest: the HTTP event gateway")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg: IngestConfig = args.common.load()?;
    if args.common.print_config_if_asked(&cfg)? {
        return Ok(());
    }
    let telemetry = Telemetry::init("weir-ingest", &cfg.telemetry)?;
    let shutdown = shutdown::on_signal();
    let ready = Readiness::default();
    let result = async {
        let state = tokio::select! {
            s = weir_ingest::build(&cfg) => s?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let app = weir_ingest::http::router(state)
            .merge(ops::router(ready.clone(), telemetry.metrics.clone()));
        ready.set(true);
        // Graceful shutdown waits for in-flight requests, so every 2xx'd event is in Kafka.
        ops::serve(cfg.listen.clone(), app, shutdown.clone()).await
    }
    .await;
    telemetry.shutdown();
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "ingest failed");
    }
    result
}
