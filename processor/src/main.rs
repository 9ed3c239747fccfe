//! `processor`: the thin binary around `weir_processor`.

use weir_core::group_lag::GroupLagWatch;
use weir_core::{ops, service};
use weir_processor::config::ProcessorConfig;
use weir_processor::runtime::Processor;

// glibc malloc took a quarter of ingest's CPU under load (perf, bench-ingest).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ABOUT: &str = "weir processor: dedup, event-time windows and exactly-once output";

/// The processor's commands besides `run`.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Put the events of events.late whose event time is in [--from, --to) back
    /// on events.clean, marked late: the aggregator counts any it has not
    /// counted yet, so a run over events already counted changes nothing
    ReplayLate {
        /// Event time from, inclusive: RFC 3339 or epoch milliseconds.
        #[arg(long)]
        from: String,
        /// Event time to, exclusive: RFC 3339 or epoch milliseconds.
        #[arg(long)]
        to: String,
    },
}

fn epoch_ms(s: &str) -> anyhow::Result<i64> {
    match s.parse::<i64>() {
        Ok(ms) => Ok(ms),
        Err(_) => weir_core::event::rfc3339_ms(s)
            .map_err(|e| anyhow::anyhow!("{s:?} is neither RFC 3339 nor epoch milliseconds: {e}")),
    }
}

/// `processor replay-late`: a repair tool for late events (see `replay`).
async fn replay_late(cfg: ProcessorConfig, from: &str, to: &str) -> anyhow::Result<()> {
    let (from, to) = (epoch_ms(from)?, epoch_ms(to)?);
    anyhow::ensure!(from < to, "--from must be before --to");
    let s = weir_processor::replay::run(&cfg, from, to).await?;
    println!(
        "replay-late: read {} late events, {} in range re-injected",
        s.late_read, s.in_range
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service::run_with(
        "processor",
        ABOUT,
        |cfg: ProcessorConfig, svc| async move {
            let http = tokio::spawn(ops::serve_with(
                cfg.listen.clone(),
                svc.ops_router(),
                svc.shutdown.clone(),
                cfg.http.clone(),
            ));
            let watch = GroupLagWatch::build(&cfg.kafka, cfg.watched_groups())?;
            let watch_every = std::time::Duration::from_millis(cfg.lag_watch.interval_ms);
            let Some(processor) = svc
                .until_shutdown(Processor::build(cfg))
                .await
                .transpose()?
            else {
                return Ok(());
            };
            watch.spawn(watch_every, svc.shutdown.clone());
            let ready = svc.health.component("processor");
            let result = processor.run(ready, svc.shutdown.clone()).await;
            svc.shutdown.cancel();
            let _ = http.await;
            result
        },
        |command, cfg| async move {
            match command {
                Command::ReplayLate { from, to } => replay_late(cfg, &from, &to).await,
            }
        },
    )
    .await
}
