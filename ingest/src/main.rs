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
        let app = weir_ingest::http::router(state.clone()).merge(svc.ops_router());
        if !cfg.grpc_listen.is_empty() {
            let addr: std::net::SocketAddr = cfg.grpc_listen.parse()?;
            let grpc = weir_ingest::grpc::service(state.clone());
            let shutdown = svc.shutdown.clone();
            tokio::spawn(async move {
                tracing::info!(%addr, "gRPC listening");
                let server = tonic::transport::Server::builder().add_service(grpc);
                if let Err(e) = server
                    .serve_with_shutdown(addr, shutdown.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "gRPC server failed");
                }
            });
        }
        // Ready only while Kafka and the registry answer, checked every few seconds.
        let (ready, shutdown) = (svc.ready.clone(), svc.shutdown.clone());
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                ready.set(state.publisher.dependencies_up().await);
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(3)) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        });
        // Graceful shutdown waits for in-flight requests, so every 2xx'd event is in Kafka.
        ops::serve(cfg.listen.clone(), app, svc.shutdown.clone()).await
    })
    .await
}
