//! The late lane's cost, on the whole real pipeline (a bench, not a timed test).
//!
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin bench-late -- [EVENTS]`
//!
//! Two runs, each on a fresh local stack (ingest, processor, aggregator):
//! every event on time, then 5 % of them 1 to 60 minutes late and 1 % 1 to
//! 6 days old, the rest on time. Each run posts EVENTS (default 40,000)
//! distinct events through ingest, four batches of 500 in flight, and waits
//! until the query API counts them all (and checks it counts each once). It
//! prints, per run, events/s from the first post until the last event is
//! counted, the ratio of the mixed run to the on-time one (goal >= 0.9), and
//! the p50 / p99 / max time from ingest's acknowledgement (`received_at`)
//! until ClickHouse stored the event (`inserted_at`), for on-time and late
//! events apart. An on-time event is counted by its window row, which the
//! processor commits in the same transaction as its `events.clean` copy; a
//! late event is counted by the late lane's recomputation, in the same
//! aggregator batch that stores it.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use weir_tests::load::{now_ms, post_batches, Lcg};
use weir_tests::Pipeline;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

/// `n` distinct events; with `mixed`, 5 % minutes late and 1 % days old.
fn events(run: &str, n: usize, mixed: bool) -> Vec<Value> {
    let mut rng = Lcg::new(42);
    let now = now_ms();
    (0..n)
        .map(|i| {
            let roll = rng.below(100);
            let ts = match roll {
                0..=4 if mixed => now - MINUTE - rng.below(59 * MINUTE as u64) as i64,
                5 if mixed => now - DAY - rng.below(5 * DAY as u64) as i64,
                _ => now - rng.below(2_000) as i64,
            };
            let name = ["shop.view", "shop.cart_add", "shop.checkout"][i % 3];
            json!({
                "event_id": format!("{run}-{i}"),
                "name": name,
                "user_id": format!("user-{}", rng.below(5_000)),
                "timestamp": ts, "channel": "web",
                "properties": {"sku": "SKU-12345", "price": 19.99},
            })
        })
        .collect()
}

struct Run {
    events_per_sec: f64,
    /// (late, p50, p99, max, events) of `inserted_at - received_at`, ms.
    lag: Vec<(u8, f64, f64, f64, u64)>,
}

async fn run(label: &str, n: usize, mixed: bool) -> anyhow::Result<Run> {
    let p = Pipeline::start().await;
    // Every partition's watermark at now first, so old events are late for it.
    let warm = events(&format!("{label}-warm"), 2_000, false);
    p.post(&warm).await;
    let load = events(label, n, mixed);
    let url = p.ingest.url("");
    let started = Instant::now();
    let mut posters = vec![];
    for part in load.chunks(n.div_ceil(4)) {
        let (url, part) = (url.clone(), part.to_vec());
        posters.push(tokio::spawn(
            async move { post_batches(&url, &part, 500).await },
        ));
    }
    let mut acked = 0;
    for poster in posters {
        acked += poster.await??.len();
    }
    anyhow::ensure!(acked == n, "ingest acknowledged {acked} of {n}");
    let want = (n + warm.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let m = p.metrics("name=shop.*").await;
        let total = m["total_count"].as_u64().unwrap_or(0);
        anyhow::ensure!(total <= want, "counted {total}, more than the {want} sent");
        if total == want {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "counted {total} of {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let rows = p
        .stack
        .clickhouse_query(&format!(
            "SELECT late, quantileExact(0.5)(d), quantileExact(0.99)(d), max(d), count() FROM \
             (SELECT late, toUnixTimestamp64Milli(inserted_at) - toUnixTimestamp64Milli(received_at) AS d \
              FROM events FINAL WHERE event_id LIKE '{label}-%' AND event_id NOT LIKE '{label}-warm-%') \
             GROUP BY late ORDER BY late"
        ))
        .await?;
    let lag = rows
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
                f.get(4)?.parse().ok()?,
            ))
        })
        .collect();
    Ok(Run {
        events_per_sec: n as f64 / secs,
        lag,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(40_000);
    println!("bench-late: {n} events per run, posted through ingest, counted by the query API");
    let on_time = run("ontime", n, false).await?;
    let mixed = run("mixed", n, true).await?;
    for (label, r) in [("all on time", &on_time), ("5% late, 1% days old", &mixed)] {
        println!("  {label:<22} {:>8.0} events/s", r.events_per_sec);
        for (late, p50, p99, max, count) in &r.lag {
            let kind = if *late == 1 { "late" } else { "on time" };
            println!(
                "    ack -> counted, {kind:<8} p50 {p50:>6.0} ms  p99 {p99:>6.0} ms  max {max:>6.0} ms  ({count} events)"
            );
        }
    }
    println!(
        "  throughput ratio (mixed / on time): {:.2}  (goal >= 0.9)",
        mixed.events_per_sec / on_time.events_per_sec
    );
    Ok(())
}
