//! `aggregator`: the thin binary around `weir_aggregator`.

use std::sync::Arc;
use weir_aggregator::api;
use weir_aggregator::clickhouse_sink::ClickHouseSink;
use weir_aggregator::config::AggregatorConfig;
use weir_aggregator::runtime::Aggregator;
use weir_core::api_keys::KeyKind;
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
            // Configuration mistakes fail before any network wait.
            anyhow::ensure!(cfg.consumers >= 1, "consumers must be at least 1");
            let read_keys = cfg.auth.keys(KeyKind::Read)?.map(Arc::new);
            if read_keys.is_none() {
                tracing::warn!("read-key auth is off; the query API answers anyone");
            }
            let Some(sink) = svc
                .until_shutdown(ClickHouseSink::build(&cfg.clickhouse, &cfg.namespaces))
                .await
                .transpose()?
            else {
                return Ok(());
            };
            // Every consumer's component exists before the first check can
            // answer, so /readyz is never ready while consumers still start.
            let consumers: Vec<_> = (0..cfg.consumers)
                .map(|n| svc.health.component(format!("consumer-{n}")))
                .collect();
            svc.poll(sink.health());
            let app = api::router(weir_aggregator::query::ApiState {
                client: sink.client().clone(),
                read_keys,
            })
            .merge(svc.ops_router());
            let http = tokio::spawn(ops::serve_with(
                cfg.listen.clone(),
                app,
                svc.shutdown.clone(),
                cfg.http.clone(),
            ));
            let mut runs = tokio::task::JoinSet::new();
            for (n, ready) in consumers.into_iter().enumerate() {
                let mut one = cfg.clone();
                one.instance_id = format!("{}-{n}", cfg.instance_id);
                let aggregator = Aggregator::build(one, sink.clone()).await?;
                runs.spawn(aggregator.run(ready, svc.shutdown.clone()));
            }
            let mut result = Ok(());
            while let Some(done) = runs.join_next().await {
                // One consumer failing stops the others: the process restarts whole.
                if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r) {
                    svc.shutdown.cancel();
                    result = result.and(Err(e));
                }
            }
            svc.shutdown.cancel();
            http.await??;
            result
        },
    )
    .await
}
