//! `aggregator`: the thin binary around `weir_aggregator`.

use weir_aggregator::api;
use weir_aggregator::clickhouse_sink::ClickHouseSink;
use weir_aggregator::config::AggregatorConfig;
use weir_aggregator::runtime::Aggregator;
use weir_core::{ops, service};

// glibc malloc took a quarter of ingest's CPU under load (perf, bench-ingest).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ABOUT: &str = "weir aggregator: ClickHouse materialisation and the query API";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service::run(
        "aggregator",
        ABOUT,
        |cfg: AggregatorConfig, svc| async move {
            let Some(sink) = svc
                .until_shutdown(ClickHouseSink::build(&cfg.clickhouse))
                .await
                .transpose()?
            else {
                return Ok(());
            };
            let app = api::router(api::ApiState {
                client: sink.client().clone(),
            })
            .merge(svc.ops_router());
            let http = tokio::spawn(ops::serve(cfg.listen.clone(), app, svc.shutdown.clone()));
            let aggregator = Aggregator::build(cfg, sink).await?;
            let result = aggregator
                .run(svc.ready.clone(), svc.shutdown.clone())
                .await;
            svc.shutdown.cancel();
            http.await??;
            result
        },
    )
    .await
}
