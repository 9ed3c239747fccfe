//! The query half: 10 M events loaded with SQL, and `/v1/metrics` latency
//! over them.

use super::*;

/// What was loaded for the query phase.
pub(crate) struct QueryData {
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) windows: u64,
    pub(crate) load_secs: f64,
    /// Until background merges had finished, after the load; `None` if
    /// they had not after three minutes.
    pub(crate) settle_secs: Option<f64>,
}

/// Loads `n` events spread evenly over the `QUERY_DAYS` days before the
/// current hour, with the bench's name skew, 3 channels and `USERS` users,
/// straight into `events`; then their one-minute windows per (name,
/// channel, partition), computed from those rows, into `event_counts_1m`
/// through its input table, as the aggregator would have inserted them.
pub(crate) async fn load_query_data(stack: &Stack, n: u64) -> anyhow::Result<QueryData> {
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

pub(crate) struct Latency {
    pub(crate) name: &'static str,
    pub(crate) share: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

/// Times `QUERY_CALLS` sequential calls of `/v1/metrics` for `name`,
/// grouped by hour over the whole loaded range, after checking one answer
/// against the table itself.
pub(crate) async fn time_metrics(
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
