//! `archiver backfill --from --to`: rebuilds ClickHouse's `events`, minute
//! counts and hourly rollup for a range from the archive (see the
//! aggregator's `restore`). Running it twice changes nothing.

use crate::reader;
use crate::store::ArchiveStore;
use weir_aggregator::clickhouse_sink::{ClickHouseSink, EventRow};
use weir_aggregator::config::ClickHouseConfig;

/// How recent a range may end: the processor may still emit windows
/// younger than this, and a restore's rows would hide those emissions.
pub const MIN_AGE_MS: i64 = 3_600_000;

/// What a backfill did.
#[derive(Debug)]
pub struct Report {
    pub events: usize,
    pub seconds: f64,
}

/// Backfills `[from_ms, to_ms)`. `allow_recent` skips the check that the
/// range ended at least an hour ago.
pub async fn run(
    store: &ArchiveStore,
    clickhouse: &ClickHouseConfig,
    from_ms: i64,
    to_ms: i64,
    allow_recent: bool,
) -> anyhow::Result<Report> {
    anyhow::ensure!(from_ms < to_ms, "--from must be before --to");
    let minute = 60_000;
    anyhow::ensure!(
        from_ms % minute == 0 && to_ms % minute == 0,
        "--from and --to must be whole minutes (the counts are per minute)"
    );
    let now = weir_core::event::now_ms();
    anyhow::ensure!(
        allow_recent || to_ms <= now - MIN_AGE_MS,
        "--to is less than an hour ago: the processor may still emit those windows, \
         and a backfill would hide what it emits (pass --allow-recent if it is stopped)"
    );
    let started = std::time::Instant::now();
    let events = reader::read_range(store, from_ms, to_ms).await?;
    let rows: Vec<EventRow> = events.iter().map(|e| e.to_row()).collect();
    let sink = ClickHouseSink::build(clickhouse, &[]).await?;
    sink.restore_range(&rows, from_ms, to_ms).await?;
    Ok(Report {
        events: rows.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
