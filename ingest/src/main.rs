//! `ingest`: the thin binary around `weir_ingest`.

use weir_core::{ops, service};
use weir_ingest::config::IngestConfig;

const ABOUT: &str = "weir ingest: the HTTP event gateway";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service::run("ingest", ABOUT, |cfg: IngestConfig, svc| async move {
        let Some(state) = svc
            .until_shutdown(weir_ingest::build(&cfg))
            .await
            .transpose()?
        else {
            return Ok(());
        };
        let app = weir_ingest::http::router(state).merge(svc.ops_router());
        svc.ready.set(true);
        // Graceful shutdown waits for in-flight requests, so every 2xx'd event is in Kafka.
        ops::serve(cfg.listen.clone(), app, svc.shutdown.clone()).await
    })
    .await
}
