//! `archiver`: the thin binary around `weir_archiver`.

use weir_archiver::compaction::{Compactor, Leader};
use weir_archiver::config::ArchiverConfig;
use weir_archiver::runtime::Archiver;
use weir_archiver::store::ArchiveStore;
use weir_core::{ops, service};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ABOUT: &str = "weir archiver: every counted event in object storage, compacted hourly";

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Rebuild ClickHouse's events, minute counts and hourly rollup for a
    /// range from the archive. Idempotent.
    Backfill {
        /// Start of the range (RFC 3339), inclusive, a whole minute.
        #[arg(long)]
        from: String,
        /// End of the range (RFC 3339), exclusive, a whole minute.
        #[arg(long)]
        to: String,
        /// Allow a range that ended less than an hour ago (stop the
        /// processor first).
        #[arg(long)]
        allow_recent: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service::run_with(
        "archiver",
        ABOUT,
        |cfg: ArchiverConfig, svc| async move {
            let store = ArchiveStore::build(&cfg.store)?;
            svc.poll(store.health());
            let ready = svc.health.component("consumer");
            let http = tokio::spawn(ops::serve_with(
                cfg.listen.clone(),
                svc.ops_router(),
                svc.shutdown.clone(),
                cfg.http.clone(),
            ));
            let leader = Leader::default();
            let compactor = cfg.compaction.enabled.then(|| {
                let c = Compactor {
                    store: store.clone(),
                    cfg: cfg.compaction.clone(),
                    topic: cfg.topics.clean.clone(),
                };
                tokio::spawn(c.run(leader.clone(), svc.shutdown.clone()))
            });
            let archiver = Archiver::build(cfg, store, leader)?;
            let result = archiver.run(ready, svc.shutdown.clone()).await;
            svc.shutdown.cancel();
            if let Some(c) = compactor {
                c.await?;
            }
            http.await??;
            result
        },
        |command: Command, cfg: ArchiverConfig| async move {
            let Command::Backfill {
                from,
                to,
                allow_recent,
            } = command;
            let parse = |flag: &str, v: &str| {
                weir_core::event::rfc3339_ms(v)
                    .map_err(|e| anyhow::anyhow!("--{flag} {v:?} is not an RFC 3339 time: {e}"))
            };
            let (from_ms, to_ms) = (parse("from", &from)?, parse("to", &to)?);
            let store = ArchiveStore::build(&cfg.store)?;
            let report =
                weir_archiver::backfill::run(&store, &cfg.clickhouse, from_ms, to_ms, allow_recent)
                    .await?;
            println!(
                "backfilled {} events from {from} to {to} in {:.1} s",
                report.events, report.seconds
            );
            Ok(())
        },
    )
    .await
}
