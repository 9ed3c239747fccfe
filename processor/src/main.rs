//! `processor`: the thin binary around `weir_processor`.

use clap::Parser;
use weir_core::config::CommonArgs;
use weir_core::ops::{self, Readiness};
use weir_core::shutdown;
use weir_core::telemetry::Telemetry;
use weir_processor::config::ProcessorConfig;
use weir_processor::runtime::Processor;

#[derive(Parser)]
#[command(
    name = "processor",
    about = "weir processor: dedup, event-time windows and exactly-once output"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg: ProcessorConfig = args.common.load()?;
    if args.common.print_config_if_asked(&cfg)? {
        return Ok(());
    }
    let telemetry = Telemetry::init("weir-processor", &cfg.telemetry)?;
    let shutdown = shutdown::on_signal();
    let ready = Readiness::default();
    let app = ops::router(ready.clone(), telemetry.metrics.clone());
    let http = tokio::spawn(ops::serve(cfg.listen.clone(), app, shutdown.clone()));
    let result = async {
        // Starting waits on Kafka and the registry; a signal meanwhile just stops.
        let processor = tokio::select! {
            p = Processor::build(cfg) => p?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        processor.run(ready, shutdown.clone()).await
    }
    .await;
    shutdown.cancel();
    let _ = http.await;
    telemetry.shutdown();
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "processor failed");
    }
    result
}
