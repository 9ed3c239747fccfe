//! Aggregator benchmark on the real local stack (a bench, not a timed test).
//!
//! `cargo build --release --bins && cargo run --release -p weir-tests --bin bench-aggregator -- [EVENTS] [QUERY_EVENTS]`
//!
//! Prints, in one run against the same broker and ClickHouse:
//! - the aggregator's rows/s from Kafka into ClickHouse, over `EVENTS`
//!   (default 200,000) events preloaded into `events.clean` plus their
//!   per-minute window aggregates in `aggregates.1m`, as the processor would
//!   have written them (the processor is not part of this measurement);
//! - a raw insert of the same rows (`EventRow`, `AggregateRow`) with the
//!   `clickhouse` crate, through the aggregator's own client, in batches of
//!   the same size, into a fresh database with the same schema;
//! - a raw consume of the same two topics (the aggregator's consumer
//!   settings, `recv` and `detach`, no decode, no insert);
//! - the aggregator's ratio to the slower of those two physical limits,
//!   `min(raw consume, raw insert)` (goal >= 0.9), and to the raw insert
//!   alone, each the median of three rounds that alternate all three;
//! - p50, p99 and max latency of `/v1/metrics?group_by=hour` over
//!   `QUERY_EVENTS` (default 10,000,000) events spread over 7 days, loaded
//!   with SQL straight into `events` and, grouped per minute, into
//!   `event_counts_1m`;
//! - for scale, the aggregator's decoding alone.
//!
//! Both rates count distinct rows as queries see them (`FINAL`): a batch the
//! aggregator re-reads after its consumers' start-up rebalance is inserted
//! twice but stored once. Both are taken between the second and the last
//! change seen: the aggregator's first batch carries its start-up and
//! consumer-group join, and its last, partial batch waits out the batch
//! interval; neither is throughput.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use weir_aggregator::clickhouse_sink::{AggregateRow, ClickHouseSink, EventRow};
use weir_aggregator::config::ClickHouseConfig;
use weir_core::event::{Context, PropertyValue};
use weir_core::topics::{ensure_topics, TopicSpec, Topics};
use weir_core::{Event, WindowAggregate};
use weir_tests::load::{now_ms, Lcg, READ_KEY, TENANT};
use weir_tests::{Stack, Stage};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 3;
/// Rows per insert, for the aggregator (`clickhouse.batch_rows`) and the raw insert alike.
const BATCH_ROWS: usize = 50_000;
/// Long enough that every batch but the last fills up by rows, not by time.
const BATCH_INTERVAL_MS: &str = "3000";
const PARTITIONS: i32 = 4;
const USERS: u64 = 100_000;
const QUERY_DAYS: i64 = 7;
const QUERY_CALLS: usize = 200;
const WARMUP_CALLS: usize = 5;
/// Topics the query-phase aggregator reads: empty, so that it only serves queries.
const IDLE_CLEAN: &str = "bench.idle.clean";
const IDLE_AGGREGATES: &str = "bench.idle.aggregates";

/// Six namespaces of six names. Name `k` gets a share of `sqrt((k+1)/36) -
/// sqrt(k/36)` (index = 36·u² for uniform u), so traffic is head-heavy as in
/// real products: `shop.view` has 1/6 of all events, `shop.*` about 41 %.
const NAMES: [&str; 36] = [
    "shop.view",
    "shop.cart_add",
    "shop.cart_remove",
    "shop.checkout",
    "shop.purchase",
    "shop.search",
    "app.open",
    "app.close",
    "app.crash",
    "app.update",
    "app.login",
    "app.logout",
    "video.play",
    "video.pause",
    "video.seek",
    "video.complete",
    "video.buffer",
    "video.error",
    "mail.send",
    "mail.open",
    "mail.click",
    "mail.bounce",
    "mail.unsubscribe",
    "mail.spam",
    "auth.signup",
    "auth.signin",
    "auth.reset",
    "auth.mfa",
    "auth.fail",
    "auth.delete",
    "pay.intent",
    "pay.success",
    "pay.fail",
    "pay.refund",
    "pay.dispute",
    "pay.payout",
];
const CHANNELS: [&str; 3] = ["web", "mobile", "desktop"];
/// The `/v1/metrics` names timed: the heaviest name and the heaviest prefix.
const QUERY_NAMES: [&str; 2] = ["shop.view", "shop.*"];

fn skewed_name(rng: &mut Lcg) -> &'static str {
    let u = rng.below(1_000_000) as f64 / 1e6;
    NAMES[(NAMES.len() as f64 * u * u) as usize]
}

/// The read key to send to the query API: the stack's, when it configures
/// one (`auth.read_keys`, for tenant `TENANT`); none when it does not.
fn read_key(stack: &Stack) -> Option<&'static str> {
    stack
        .env()
        .iter()
        .any(|(k, _)| k == "WEIR_AUTH__READ_KEYS")
        .then_some(READ_KEY)
}

/// One round's three rates: raw consume (records/s), raw insert and the
/// aggregator (rows/s); a record is a row.
struct Round {
    consume: f64,
    raw: f64,
    agg: f64,
}

fn aggregator(stack: &Stack, instance: &str, extra: &[(&str, &str)]) -> Stage {
    let mut env = vec![("RUST_LOG", "warn")];
    env.extend_from_slice(extra);
    stack.stage("aggregator", instance, &env)
}

mod insert;
mod query;

use insert::*;
use query::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let query_events: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let stack = Stack::start().await;
    let read_key = read_key(&stack);
    let kafka = weir_core::kafka::KafkaConfig {
        brokers: stack.brokers(),
        ..Default::default()
    };
    let topics = Topics::default();
    // Every topic an aggregator may subscribe to, so none waits on a missing one.
    let specs: Vec<TopicSpec> = [
        topics.clean.as_str(),
        topics.aggregates.as_str(),
        topics.late.as_str(),
        topics.invalid.as_str(),
        IDLE_CLEAN,
        IDLE_AGGREGATES,
    ]
    .into_iter()
    .map(|name| TopicSpec {
        name,
        partitions: PARTITIONS,
        compacted: false,
    })
    .collect();
    ensure_topics(&kafka, &specs).await?;
    let rows = preload(&stack, n).await?;

    // Alternate the two so that a noisy neighbour hits both alike; the
    // ratio is the median of the rounds.
    let mut rounds = vec![];
    for round in 0..ROUNDS {
        let consume = consume_rate(&stack, round, rows.rows()).await?;
        let raw = raw_insert(&stack, round, &rows).await?;
        let agg = aggregator_round(&stack, round, &rows).await?;
        eprintln!(
            "round {round}: raw consume {consume:.0} records/s, raw insert {raw:.0} rows/s, aggregator {agg:.0} rows/s"
        );
        rounds.push(Round { consume, raw, agg });
    }
    let median = |f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v)
    };
    let (ratio_limit, ratios_limit) = median(|r| r.agg / r.consume.min(r.raw));
    let (ratio, ratios) = median(|r| r.agg / r.raw);
    let decode = decode_rate(&stack, &rows.payloads).await?;

    let stage = aggregator(
        &stack,
        "query",
        &[
            ("WEIR_GROUP_ID", "bench-aggregator-query"),
            ("WEIR_TOPICS__CLEAN", IDLE_CLEAN),
            ("WEIR_TOPICS__AGGREGATES", IDLE_AGGREGATES),
        ],
    );
    // Ready means its migrations have created the tables the load fills.
    stage.wait_ready().await;
    let data = load_query_data(&stack, query_events).await?;
    let mut latencies = vec![];
    for name in QUERY_NAMES {
        latencies.push(time_metrics(&stack, &stage, read_key, &data, name, query_events).await?);
    }

    println!(
        "weir aggregator benchmark: {n} events ({} B Avro) in events.clean and their {} one-minute windows in aggregates.1m, \
         {PARTITIONS} partitions each, batches of {BATCH_ROWS} rows, {} cores",
        rows.avro_bytes,
        rows.aggregates.len(),
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    println!(
        "| round | raw consume records/s | raw insert rows/s | aggregator rows/s | ratio to min(consume, insert) | ratio to raw insert |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            i + 1,
            r.consume,
            r.raw,
            r.agg,
            r.agg / r.consume.min(r.raw),
            r.agg / r.raw
        );
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "ratio aggregator / min(raw consume, raw insert): {ratio_limit:.2} (median of {ROUNDS} alternating rounds, sorted: {}; goal >= 0.9)",
        list(&ratios_limit)
    );
    println!(
        "ratio aggregator / raw insert: {ratio:.2} (sorted: {})",
        list(&ratios)
    );
    println!(
        "for scale, in the bench process: decoding alone (Codec::decode_event + EventRow::new) {decode:.0} events/s"
    );
    println!(
        "/v1/metrics?group_by=hour over {query_events} events ({QUERY_DAYS} days, {} names, {USERS} users; \
         {} rows in event_counts_1m; loaded in {:.0} s, merges done {}), {QUERY_CALLS} sequential calls each, read key {}:",
        NAMES.len(),
        data.windows,
        data.load_secs,
        data.settle_secs
            .map_or("still running after 180 s".into(), |s| format!("{s:.0} s later")),
        if read_key.is_some() { "on" } else { "off (no query auth)" }
    );
    println!("| name | share of events | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for l in &latencies {
        println!(
            "| `{}` | {:.1} % | {:.1} | {:.1} | {:.1} |",
            l.name,
            l.share * 100.0,
            l.p50_ms,
            l.p99_ms,
            l.max_ms
        );
    }
    let worst = latencies.iter().map(|l| l.p99_ms).fold(0.0, f64::max);
    println!("worst p99: {worst:.1} ms (goal < 500 ms)");
    Ok(())
}
