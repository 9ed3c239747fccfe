//! `aggregator`: the thin binary around `weir_aggregator`.

use clap::Parser;
use weir_aggregator::api;
use weir_aggregator::clickhouse_sink::ClickHouseSink;
use weir_aggregator::config::AggregatorConfig;
use weir_aggregator::runtime::Aggregator;
use weir_core::config::CommonArgs;
use weir_core::ops::{self, Readiness};
use weir_core::shutdown;
use weir_core::telemetry::Telemetry;

#[derive(Parser)]
#[command(
    name = "aggregator",
    about = "weir aggregator: ClickHouse materialisation and the query API"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg: AggregatorConfig = args.common.load()?;
    if args.common.print_config_if_asked(&cfg)? {
        return Ok(());
    }
    let telemetry = Telemetry::init("weir-aggregator", &cfg.telemetry)?;
    let shutdown = shutdown::on_signal();
    let ready = Readiness::default();
    let result = async {
        let sink = tokio::select! {
            s = ClickHouseSink::build(&cfg.clickhouse) => s?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let app = api::router(api::ApiState {
            client: sink.client().clone(),
        })
        .merge(ops::router(ready.clone(), telemetry.metrics.clone()));
        let http = tokio::spawn(ops::serve(cfg.listen.clone(), app, shutdown.clone()));
        let aggregator = Aggregator::build(cfg.clone(), sink).await?;
        let result = aggregator.run(ready, shutdown.clone()).await;
        shutdown.cancel();
        http.await??;
        result
    }
    .await;
    telemetry.shutdown();
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "aggregator failed");
    }
    result
}
