//! The insert half: preloaded topics, the raw insert baseline, the
//! aggregator's rounds, and the read path's own rates.

use super::*;

/// The rows the aggregator should end up inserting, as the raw insert
/// writes them.
pub(crate) struct Preloaded {
    pub(crate) events: Vec<EventRow>,
    pub(crate) aggregates: Vec<AggregateRow>,
    /// The Avro records in `events.clean`.
    pub(crate) payloads: Vec<Vec<u8>>,
    pub(crate) avro_bytes: usize,
}

impl Preloaded {
    pub(crate) fn rows(&self) -> usize {
        self.events.len() + self.aggregates.len()
    }
}

/// Produces `payloads` (key, partition, Avro) to `topic`; returns each
/// record's offset.
pub(crate) async fn produce(
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
pub(crate) async fn preload(stack: &Stack, n: usize) -> anyhow::Result<Preloaded> {
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
pub(crate) async fn decode_rate(stack: &Stack, payloads: &[Vec<u8>]) -> anyhow::Result<f64> {
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
pub(crate) async fn consume_rate(stack: &Stack, round: usize, total: usize) -> anyhow::Result<f64> {
    let kafka = weir_core::kafka::KafkaConfig {
        brokers: stack.brokers(),
        ..Default::default()
    };
    let consumer: StreamConsumer = kafka
        .client_config(&[
            ("group.id", &format!("bench-consume-{round}")),
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
pub(crate) fn steady_rate(points: &[(Instant, usize)]) -> Option<f64> {
    let [(t0, r0), .., (t1, r1), _] = points else {
        return None;
    };
    Some((r1 - r0) as f64 / t1.duration_since(*t0).as_secs_f64())
}

/// ClickHouse client without a database, for creating and dropping them.
pub(crate) fn clickhouse(stack: &Stack) -> clickhouse::Client {
    clickhouse::Client::default().with_url(format!("http://127.0.0.1:{}", stack.clickhouse_port))
}

pub(crate) async fn count(stack: &Stack, database: &str, table: &str) -> anyhow::Result<u64> {
    Ok(clickhouse(stack)
        .with_database(database)
        .query(&format!("SELECT count() FROM {table} FINAL"))
        .fetch_one::<u64>()
        .await?)
}

pub(crate) async fn drop_database(stack: &Stack, database: &str) -> anyhow::Result<()> {
    clickhouse(stack)
        .query(&format!("DROP DATABASE IF EXISTS `{database}`"))
        .execute()
        .await?;
    Ok(())
}

/// Checks that `database` holds exactly the preloaded rows, then drops it,
/// so that every round inserts into equally empty tables.
pub(crate) async fn check_and_drop(
    stack: &Stack,
    database: &str,
    rows: &Preloaded,
) -> anyhow::Result<()> {
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
pub(crate) async fn raw_insert(
    stack: &Stack,
    round: usize,
    rows: &Preloaded,
) -> anyhow::Result<f64> {
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
pub(crate) async fn rows_stored(stack: &Stack, database: &str) -> anyhow::Result<usize> {
    Ok(
        (count(stack, database, "events").await?
            + count(stack, database, "event_counts_1m").await?) as usize,
    )
}

/// Runs an aggregator with a fresh consumer group and database over the
/// preloaded topics until it has inserted every row. Returns rows/s.
pub(crate) async fn aggregator_round(
    stack: &Stack,
    round: usize,
    rows: &Preloaded,
) -> anyhow::Result<f64> {
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
