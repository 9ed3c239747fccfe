//! `processor`: the thin binary around `weir_processor`.

use weir_core::{ops, service};
use weir_processor::config::ProcessorConfig;
use weir_processor::runtime::Processor;

// glibc malloc took a quarter of ingest's CPU under load (perf, bench-ingest).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ABOUT: &str = "weir processor: dedup, event-time windows and exactly-once output";

/// `processor replay-late`: counts dead-lettered events after all (see `replay`).
#[derive(clap::Parser)]
#[command(
    name = "processor replay-late",
    about = "Put the events of events.late whose event time is in [--from, --to) back into the \
             counts, once: a second run over the same events changes nothing"
)]
struct ReplayLate {
    #[command(flatten)]
    common: weir_core::config::CommonArgs,
    /// Event time from, inclusive: RFC 3339 or epoch milliseconds.
    #[arg(long)]
    from: String,
    /// Event time to, exclusive: RFC 3339 or epoch milliseconds.
    #[arg(long)]
    to: String,
}

fn epoch_ms(s: &str) -> anyhow::Result<i64> {
    match s.parse::<i64>() {
        Ok(ms) => Ok(ms),
        Err(_) => weir_core::event::rfc3339_ms(s)
            .map_err(|e| anyhow::anyhow!("{s:?} is neither RFC 3339 nor epoch milliseconds: {e}")),
    }
}

async fn replay_late() -> anyhow::Result<()> {
    use clap::Parser;
    let args = ReplayLate::parse_from(
        std::iter::once("processor replay-late".to_string()).chain(std::env::args().skip(2)),
    );
    let cfg: ProcessorConfig = args.common.load()?;
    let telemetry = weir_core::telemetry::Telemetry::init("weir-processor", &cfg.telemetry)?;
    let (from, to) = (epoch_ms(&args.from)?, epoch_ms(&args.to)?);
    anyhow::ensure!(from < to, "--from must be before --to");
    let summary = weir_processor::replay::run(&cfg, from, to).await;
    telemetry.shutdown();
    let s = summary?;
    println!(
        "replay-late: read {} late events, {} in range re-injected, {} window rows corrected",
        s.late_read, s.in_range, s.rows
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("replay-late") {
        return replay_late().await;
    }
    service::run("processor", ABOUT, |cfg: ProcessorConfig, svc| async move {
        let http = tokio::spawn(ops::serve_with(
            cfg.listen.clone(),
            svc.ops_router(),
            svc.shutdown.clone(),
            cfg.http.clone(),
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
