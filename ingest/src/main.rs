//! `ingest`: the thin binary around `weir_ingest`.

use weir_core::{ops, service};
use weir_ingest::config::IngestConfig;

// glibc malloc took a quarter of ingest's CPU under load (perf, bench-ingest).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ABOUT: &str = "weir ingest: the HTTP event gateway";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service::run("ingest", ABOUT, |cfg: IngestConfig, svc| async move {
        let Some(gateway) = svc
            .until_shutdown(weir_ingest::build(&cfg))
            .await
            .transpose()?
        else {
            return Ok(());
        };
        for check in gateway.sink.clone().health_checks() {
            svc.poll(check);
        }
        weir_core::group_lag::GroupLagWatch::build(&cfg.kafka, cfg.watched_groups())?.spawn(
            std::time::Duration::from_millis(cfg.lag_watch.interval_ms),
            svc.shutdown.clone(),
        );
        let app = weir_ingest::http::router(gateway.http.clone()).merge(svc.ops_router());
        if !cfg.grpc_listen.is_empty() {
            let addr: std::net::SocketAddr = cfg.grpc_listen.parse()?;
            let grpc = weir_ingest::grpc::service(gateway.admission.clone());
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
        // Shutdown: stop accepting, let open requests finish (each waits for
        // Kafka, so every 2xx'd event is in Kafka), flush the producer, exit;
        // all within shutdown_timeout_ms.
        let budget = std::time::Duration::from_millis(cfg.shutdown_timeout_ms);
        let signalled = {
            let token = svc.shutdown.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                std::time::Instant::now()
            })
        };
        let serve = ops::serve_with(cfg.listen.clone(), app, svc.shutdown.clone(), cfg.http.clone());
        let deadline = async {
            svc.shutdown.cancelled().await;
            tokio::time::sleep(budget).await;
        };
        tokio::select! {
            served = serve => served?,
            _ = deadline => tracing::warn!(
                timeout_ms = cfg.shutdown_timeout_ms,
                "requests still open at the shutdown deadline; their clients get no answer and resend"
            ),
        }
        let spent = signalled.await.map_or(budget, |at| at.elapsed());
        let left = budget.saturating_sub(spent).max(std::time::Duration::from_millis(500));
        let flushed = gateway.sink.flush(left).await;
        tracing::info!(flushed, in_flight = gateway.sink.in_flight(), "ingest stopped");
        Ok(())
    })
    .await
}
