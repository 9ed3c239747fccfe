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
//!   the same size, into a fresh database with the same schema; and the
//!   ratio, the median of three alternating rounds;
//! - p50, p99 and max latency of `/v1/metrics?group_by=hour` over
//!   `QUERY_EVENTS` (default 10,000,000) events spread over 7 days, loaded
//!   with SQL straight into `events` and, grouped per minute, into
//!   `event_counts_1m`;
//! - for scale, the aggregator's read path alone (its consumer settings, no
//!   decode, no insert) and its decoding alone, which bound its rate.
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

fn aggregator(stack: &Stack, instance: &str, extra: &[(&str, &str)]) -> Stage {
    let mut env = vec![("RUST_LOG", "warn")];
    env.extend_from_slice(extra);
    stack.stage("aggregator", instance, &env)
}

/// The rows the aggregator should end up inserting, as the raw insert
/// writes them.
struct Preloaded {
    events: Vec<EventRow>,
    aggregates: Vec<AggregateRow>,
    /// The Avro records in `events.clean`.
    payloads: Vec<Vec<u8>>,
    avro_bytes: usize,
}

impl Preloaded {
    fn rows(&self) -> usize {
        self.events.len() + self.aggregates.len()
    }
}

/// Produces `payloads` (key, partition, Avro) to `topic`; returns each
/// record's offset.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    payloads: &[(String, i32, Vec<u8>)],
) -> anyhow::Result<Vec<i64>> {
    let mut offsets = Vec::with_capacity(payloads.len());
    for chunk in payloads.chunks(10_000) {
        let sends = chunk.iter().map(|(key, partition, payload)| {
            producer.send(
                FutureRecord::to(topic)
                    .key(key.as_str())
                    .partition(*partition)
                    .payload(payload.as_slice()),
                Duration::from_secs(60),
            )
        });
        for delivery in futures::future::join_all(sends).await {
            let d = delivery.map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))?;
            offsets.push(d.offset);
        }
    }
    Ok(offsets)
}

/// Fills `events.clean` with `n` events of the last hour and `aggregates.1m`
/// with their one-minute windows per (name, channel, partition), each
/// window emitted once and final.
async fn preload(stack: &Stack, n: usize) -> anyhow::Result<Preloaded> {
    let codec = stack.codec();
    codec.register().await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.brokers())
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let mut rng = Lcg::new(7);
    let start = now_ms() - 3_600_000;
    let mut events = Vec::with_capacity(n);
    let mut event_records = Vec::with_capacity(n);
    for i in 0..n {
        let user = rng.below(USERS);
        let timestamp = start + (i as i64) * 3_600_000 / n as i64;
        let e = Event {
            event_id: format!("bench-{i}"),
            name: skewed_name(&mut rng).into(),
            timestamp,
            received_at: timestamp + 40,
            sent_at: None,
            tenant: TENANT.into(),
            schema_version: weir_core::event::SCHEMA_VERSION,
            user_id: Some(format!("user-{user}")),
            anonymous_id: None,
            session_id: None,
            customer_id: None,
            channel: Some(CHANNELS[rng.below(3) as usize].into()),
            service: None,
            properties: [
                ("sku", PropertyValue::String(format!("SKU-{}", i % 5_000))),
                ("price", PropertyValue::Double(19.99)),
                ("qty", PropertyValue::Long(2)),
                (
                    "page",
                    PropertyValue::String("/products/blue-t-shirt".into()),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            user_properties: Default::default(),
            context: Some(Context {
                url: Some("https://shop.example/products/blue-t-shirt".into()),
                user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
                ..Default::default()
            }),
            items: vec![],
            description: None,
        };
        let partition = (user % PARTITIONS as u64) as i32;
        event_records.push((e.event_id.clone(), partition, codec.encode_event(&e).await?));
        events.push((e, partition));
    }
    let avro_bytes = event_records.iter().map(|r| r.2.len()).sum::<usize>() / n.max(1);
    let offsets = produce(&producer, "events.clean", &event_records).await?;

    type Window = (String, String, i64, i32);
    let mut windows: BTreeMap<Window, (i64, BTreeSet<String>, i64)> = BTreeMap::new();
    for ((e, partition), &offset) in events.iter().zip(&offsets) {
        let key = (
            e.name.clone(),
            e.channel.clone().unwrap_or_default(),
            e.timestamp - e.timestamp.rem_euclid(60_000),
            *partition,
        );
        let w = windows.entry(key).or_default();
        w.0 += 1;
        w.1.extend(e.user_key().map(str::to_string));
        w.2 = w.2.max(offset);
    }
    let mut aggregates = Vec::with_capacity(windows.len());
    let mut window_records = Vec::with_capacity(windows.len());
    for ((name, channel, window_start, partition), (count, users, seq)) in windows {
        let a = WindowAggregate {
            tenant: TENANT.into(),
            name,
            channel,
            window_start,
            window_end: window_start + 60_000,
            input_partition: partition,
            count,
            users: users.into_iter().collect(),
            emitted_seq: seq,
            is_final: true,
        };
        let key = format!("{}/{}/{}/{}", a.name, a.channel, a.window_start, partition);
        window_records.push((key, partition, codec.encode_aggregate(&a).await?));
        aggregates.push(AggregateRow::from(a));
    }
    produce(&producer, "aggregates.1m", &window_records).await?;
    Ok(Preloaded {
        events: events
            .into_iter()
            .zip(offsets)
            .map(|((e, partition), offset)| EventRow::new(e, partition, offset))
            .collect(),
        aggregates,
        payloads: event_records.into_iter().map(|r| r.2).collect(),
        avro_bytes,
    })
}

/// Events/s of what the aggregator does per record before the insert:
/// decode through the codec (schema cached after the first) and build the
/// row, in one task as in its consume loop. That loop decodes a batch, then
/// inserts it, so this rate bounds the aggregator's, and shows how much of
/// the gap to the raw insert is decoding.
async fn decode_rate(stack: &Stack, payloads: &[Vec<u8>]) -> anyhow::Result<f64> {
    let codec = stack.codec();
    codec.decode_event(Some(&payloads[0])).await?;
    let started = Instant::now();
    for (offset, p) in payloads.iter().enumerate() {
        let e = codec.decode_event(Some(p)).await?;
        std::hint::black_box(EventRow::new(e, 0, offset as i64));
    }
    Ok(payloads.len() as f64 / started.elapsed().as_secs_f64())
}

/// Records/s of the aggregator's read path alone: the same consumer
/// settings, `recv` and `detach` of every record of both topics, no decode
/// and no insert; from the first record, so without the group join.
async fn consume_rate(stack: &Stack, total: usize) -> anyhow::Result<f64> {
    let kafka = weir_core::kafka::KafkaConfig {
        brokers: stack.brokers(),
        ..Default::default()
    };
    let consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", "bench-consume"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
        ])
        .create()?;
    consumer.subscribe(&["events.clean", "aggregates.1m"])?;
    let mut started = None;
    for _ in 0..total {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
        started.get_or_insert_with(Instant::now);
        std::hint::black_box(m.detach());
    }
    Ok(total as f64 / started.map_or(1.0, |s| s.elapsed().as_secs_f64()))
}

/// Rows/s over the full batches after the first, from `(when, rows)` at
/// each insert seen; `None` with fewer than three inserts.
fn steady_rate(points: &[(Instant, usize)]) -> Option<f64> {
    let [(t0, r0), .., (t1, r1), _] = points else {
        return None;
    };
    Some((r1 - r0) as f64 / t1.duration_since(*t0).as_secs_f64())
}

/// ClickHouse client without a database, for creating and dropping them.
fn clickhouse(stack: &Stack) -> clickhouse::Client {
    clickhouse::Client::default().with_url(format!("http://127.0.0.1:{}", stack.clickhouse_port))
}

async fn count(stack: &Stack, database: &str, table: &str) -> anyhow::Result<u64> {
    Ok(clickhouse(stack)
        .with_database(database)
        .query(&format!("SELECT count() FROM {table} FINAL"))
        .fetch_one::<u64>()
        .await?)
}

async fn drop_database(stack: &Stack, database: &str) -> anyhow::Result<()> {
    clickhouse(stack)
        .query(&format!("DROP DATABASE IF EXISTS `{database}`"))
        .execute()
        .await?;
    Ok(())
}

/// Checks that `database` holds exactly the preloaded rows, then drops it,
/// so that every round inserts into equally empty tables.
async fn check_and_drop(stack: &Stack, database: &str, rows: &Preloaded) -> anyhow::Result<()> {
    let events = count(stack, database, "events").await?;
    let windows = count(stack, database, "event_counts_1m").await?;
    anyhow::ensure!(
        events == rows.events.len() as u64 && windows == rows.aggregates.len() as u64,
        "{database} holds {events} events and {windows} windows, expected {} and {}",
        rows.events.len(),
        rows.aggregates.len()
    );
    drop_database(stack, database).await
}

/// Inserts the preloaded rows with the `clickhouse` crate in batches of
/// `BATCH_ROWS`, each batch mixing events and windows in the proportion the
/// topics hold them, as the aggregator's batches do. Returns rows/s.
async fn raw_insert(stack: &Stack, round: usize, rows: &Preloaded) -> anyhow::Result<f64> {
    let database = format!("bench_raw_{round}");
    drop_database(stack, &database).await?;
    // The aggregator's own client and schema set-up, so that only the
    // pipeline around the insert differs between the two runs.
    let sink = ClickHouseSink::build(
        &ClickHouseConfig {
            url: format!("http://127.0.0.1:{}", stack.clickhouse_port),
            database: database.clone(),
            ..Default::default()
        },
        &[],
    )
    .await?;
    let client = sink.client();
    let (total, n) = (rows.rows(), rows.events.len());
    let split = |x: usize| x * n / total;
    let mut points = vec![];
    let mut lo = 0;
    while lo < total {
        let hi = (lo + BATCH_ROWS).min(total);
        let mut insert = client.insert::<EventRow>("events").await?;
        for r in &rows.events[split(lo)..split(hi)] {
            insert.write(r).await?;
        }
        insert.end().await?;
        let mut insert = client.insert::<AggregateRow>("event_counts_1m_in").await?;
        for r in &rows.aggregates[lo - split(lo)..hi - split(hi)] {
            insert.write(r).await?;
        }
        insert.end().await?;
        points.push((Instant::now(), hi));
        lo = hi;
    }
    check_and_drop(stack, &database, rows).await?;
    steady_rate(&points).ok_or_else(|| anyhow::anyhow!("too few batches: raise EVENTS"))
}

/// A reading of the rows counter that is not between the two increments of
/// one flush (events, then windows).
/// Distinct rows stored, as queries see them: a batch re-read after a
/// rebalance (the aggregator's consumers join one after another) is inserted
/// again and replaces itself, so the aggregator's own row counter can run
/// ahead of what is stored.
async fn rows_stored(stack: &Stack, database: &str) -> anyhow::Result<usize> {
    Ok(
        (count(stack, database, "events").await?
            + count(stack, database, "event_counts_1m").await?) as usize,
    )
}

/// Runs an aggregator with a fresh consumer group and database over the
/// preloaded topics until it has inserted every row. Returns rows/s.
async fn aggregator_round(stack: &Stack, round: usize, rows: &Preloaded) -> anyhow::Result<f64> {
    let database = format!("bench_agg_{round}");
    drop_database(stack, &database).await?;
    let group = format!("bench-aggregator-{round}");
    let batch_rows = BATCH_ROWS.to_string();
    let stage = aggregator(
        stack,
        &format!("round-{round}"),
        &[
            ("WEIR_GROUP_ID", &group),
            ("WEIR_CLICKHOUSE__DATABASE", &database),
            ("WEIR_CLICKHOUSE__BATCH_ROWS", &batch_rows),
            ("WEIR_CLICKHOUSE__BATCH_INTERVAL_MS", BATCH_INTERVAL_MS),
        ],
    );
    stage.wait_ready().await;
    let target = rows.rows();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut points = vec![];
    let mut last = 0;
    while last < target {
        anyhow::ensure!(
            Instant::now() < deadline,
            "aggregator stalled at {last}/{target} rows:\n{}",
            stage.proc.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rows_stored(stack, &database).await?;
        if now != last {
            points.push((Instant::now(), now));
            last = now;
        }
    }
    drop(stage);
    check_and_drop(stack, &database, rows).await?;
    steady_rate(&points).ok_or_else(|| anyhow::anyhow!("too few batches: raise EVENTS"))
}

/// What was loaded for the query phase.
struct QueryData {
    from: i64,
    to: i64,
    windows: u64,
    load_secs: f64,
    /// Until background merges had finished, after the load; `None` if
    /// they had not after three minutes.
    settle_secs: Option<f64>,
}

/// Loads `n` events spread evenly over the `QUERY_DAYS` days before the
/// current hour, with the bench's name skew, 3 channels and `USERS` users,
/// straight into `events`; then their one-minute windows per (name,
/// channel, partition), computed from those rows, into `event_counts_1m`
/// through its input table, as the aggregator would have inserted them.
async fn load_query_data(stack: &Stack, n: u64) -> anyhow::Result<QueryData> {
    let to = now_ms() / 3_600_000 * 3_600_000;
    let from = to - QUERY_DAYS * 86_400_000;
    let names = NAMES.map(|n| format!("'{n}'")).join(",");
    let channels = CHANNELS.map(|c| format!("'{c}'")).join(",");
    let started = Instant::now();
    stack
        .clickhouse_query(&format!(
            "INSERT INTO events (tenant, event_id, name, namespace, timestamp, received_at, user_id, \
               anonymous_id, session_id, customer_id, channel, service, properties, user_properties, \
               context, items, description, kafka_partition, kafka_offset) \
             SELECT '{TENANT}', concat('q-', toString(number)), \
               [{names}][1 + toUInt32({len} * pow((cityHash64(number, 1) % 1000000) / 1e6, 2))] AS nm, \
               splitByChar('.', nm)[1], \
               fromUnixTimestamp64Milli(toInt64({from} + intDiv(number * {span}, {n})), 'UTC') AS ts, ts, \
               concat('user-', toString(cityHash64(number, 2) % {USERS})) AS uid, NULL, NULL, NULL, \
               [{channels}][1 + cityHash64(number, 3) % {nch}], '', \
               map('sku', concat('SKU-', toString(number % 5000)), 'price', '19.99', 'qty', '2', \
                   'page', '/products/blue-t-shirt'), map(), \
               '{{\"url\":\"https://shop.example/products/blue-t-shirt\",\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64)\"}}', \
               '', '', toUInt32(cityHash64(uid) % {PARTITIONS}), number \
             FROM numbers({n})",
            len = NAMES.len(),
            span = to - from,
            nch = CHANNELS.len(),
        ))
        .await?;
    stack
        .clickhouse_query(&format!(
            "INSERT INTO event_counts_1m_in (tenant, name, channel, window_start, window_end, \
               input_partition, count, user_ids, emitted_seq, is_final) \
             SELECT tenant, name, channel, toDateTime64(toStartOfMinute(timestamp), 3, 'UTC') AS ws, \
               ws + toIntervalMinute(1), kafka_partition, count(), \
               arraySort(groupUniqArray(assumeNotNull(coalesce(user_id, anonymous_id)))), \
               max(kafka_offset), 1 \
             FROM events WHERE tenant = '{TENANT}' \
             GROUP BY tenant, name, channel, ws, kafka_partition"
        ))
        .await?;
    // The hourly rollup, as the aggregator keeps it for the hours it touches.
    let sink = ClickHouseSink::build(
        &ClickHouseConfig {
            url: format!("http://127.0.0.1:{}", stack.clickhouse_port),
            ..Default::default()
        },
        &[],
    )
    .await?;
    sink.refresh_range(from, to + 3_600_000).await?;
    let load_secs = started.elapsed().as_secs_f64();
    // Time the queries on a table at rest, not against the merges the load set off.
    let loaded = Instant::now();
    let mut settle_secs = None;
    while loaded.elapsed() < Duration::from_secs(180) {
        if stack
            .clickhouse_query("SELECT count() FROM system.merges")
            .await?
            == "0"
        {
            settle_secs = Some(loaded.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let windows = stack
        .clickhouse_query("SELECT count() FROM event_counts_1m")
        .await?
        .parse()?;
    Ok(QueryData {
        from,
        to,
        windows,
        load_secs,
        settle_secs,
    })
}

struct Latency {
    name: &'static str,
    share: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Times `QUERY_CALLS` sequential calls of `/v1/metrics` for `name`,
/// grouped by hour over the whole loaded range, after checking one answer
/// against the table itself.
async fn time_metrics(
    stack: &Stack,
    stage: &Stage,
    read_key: Option<&str>,
    data: &QueryData,
    name: &'static str,
    events: u64,
) -> anyhow::Result<Latency> {
    let client = reqwest::Client::new();
    let url = stage.url(&format!(
        "/v1/metrics?name={name}&from={}&to={}&group_by=hour",
        data.from, data.to
    ));
    let call = || {
        let mut req = client.get(&url).timeout(Duration::from_secs(60));
        if let Some(key) = read_key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    let filter = match name.strip_suffix(".*") {
        Some(prefix) => format!("startsWith(name, '{prefix}.')"),
        None => format!("name = '{name}'"),
    };
    let expected: u64 = stack
        .clickhouse_query(&format!(
            "SELECT count() FROM events FINAL WHERE {filter} AND tenant = '{TENANT}' \
             AND timestamp >= fromUnixTimestamp64Milli({}, 'UTC') \
             AND timestamp < fromUnixTimestamp64Milli({}, 'UTC')",
            data.from, data.to
        ))
        .await?
        .parse()?;
    let answer = call().await?;
    anyhow::ensure!(
        answer.status().is_success(),
        "/v1/metrics answered {}: {}",
        answer.status(),
        answer.text().await.unwrap_or_default()
    );
    let body: serde_json::Value = answer.json().await?;
    let hours = body["grouped_metrics"].as_array().map_or(0, Vec::len) as i64;
    anyhow::ensure!(
        body["total_count"] == expected && hours == (data.to - data.from) / 3_600_000,
        "/v1/metrics for {name} answered {} in {hours} hours, expected {expected} in {}",
        body["total_count"],
        (data.to - data.from) / 3_600_000
    );
    for _ in 0..WARMUP_CALLS {
        call().await?.error_for_status()?;
    }
    let mut lat = Vec::with_capacity(QUERY_CALLS);
    for _ in 0..QUERY_CALLS {
        let t = Instant::now();
        call().await?.error_for_status()?.bytes().await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Ok(Latency {
        name,
        share: expected as f64 / events as f64,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        max_ms: lat[lat.len() - 1],
    })
}

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
        let raw = raw_insert(&stack, round, &rows).await?;
        let agg = aggregator_round(&stack, round, &rows).await?;
        eprintln!("round {round}: raw insert {raw:.0} rows/s, aggregator {agg:.0} rows/s");
        rounds.push((raw, agg));
    }
    let mut ratios: Vec<f64> = rounds.iter().map(|(r, a)| a / r).collect();
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let decode = decode_rate(&stack, &rows.payloads).await?;
    let consume = consume_rate(&stack, rows.rows()).await?;

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
    println!("| round | raw insert rows/s | aggregator rows/s | ratio |");
    println!("|---|---|---|---|");
    for (i, (raw, agg)) in rounds.iter().enumerate() {
        println!("| {} | {raw:.0} | {agg:.0} | {:.2} |", i + 1, agg / raw);
    }
    let all: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "ratio aggregator / raw insert: {ratio:.2} (median of {ROUNDS} alternating rounds: {}; goal >= 0.50)",
        all.join(", ")
    );
    println!(
        "for scale, in the bench process, one task each: the aggregator's read path alone (StreamConsumer recv + detach, \
         both topics) {consume:.0} records/s; decoding alone (Codec::decode_event + EventRow::new) {decode:.0} events/s"
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
