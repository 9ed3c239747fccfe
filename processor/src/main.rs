//! `processor`: the thin binary around `weir_processor`.

use weir_core::{ops, service};
use weir_processor::config::ProcessorConfig;
use weir_processor::runtime::Processor;

// glibc malloc took a quarter of ingest's CPU under load (perf, bench-ingest).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ABOUT: &str = "weir processor: dedup, event-time windows and exactly-once output";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service::run("processor", ABOUT, |cfg: ProcessorConfig, svc| async move {
        let http = tokio::spawn(ops::serve(
            cfg.listen.clone(),
            svc.ops_router(),
            svc.shutdown.clone(),
        ));
        let Some(processor) = svc
            .until_shutdown(Processor::build(cfg))
            .await
            .transpose()?
        else {
            return Ok(());
        };
        let result = processor.run(svc.ready.clone(), svc.shutdown.clone()).await;
        svc.shutdown.cancel();
        let _ = http.await;
        result
    })
    .await
}
