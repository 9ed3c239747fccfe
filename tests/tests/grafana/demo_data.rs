//! The demo data the dashboard is run on: three days of events, windows and
//! dead letters, with the totals a correct panel shows.

use super::*;

/// Three days of data for two tenants, as the aggregator would have written
/// it: per-minute windows (plus superseded emissions of the last hour, which
/// FINAL must drop), one event every 30 s with its lag, and a dead letter of
/// each kind every 8 minutes.
pub(crate) fn demo_data(now: i64) -> Vec<String> {
    let windows = 4 * 1440 * DAYS;
    let counts = |rows: u64, count: &str, users: &str, seq: u8| {
        format!(
            "INSERT INTO event_counts_1m_in (tenant, name, channel, window_start, window_end, \
             input_partition, count, user_ids, emitted_seq, is_final)
             SELECT
                 ['acme', 'globex'][1 + number % 2] AS tenant,
                 ['shop.page_view', 'shop.cart_add', 'shop.checkout', 'app.open'][1 + (intDiv(number, 4) + intDiv(number % 4, 2)) % 4] AS name,
                 ['web', 'mobile'][1 + intDiv(number, 4) % 2] AS channel,
                 toDateTime64(toStartOfMinute(toDateTime({now})) - 60 * (1 + intDiv(number, 4)), 3, 'UTC') AS window_start,
                 window_start + INTERVAL 1 MINUTE AS window_end,
                 toUInt32(number % 4) AS input_partition,
                 toUInt64({count}) AS count,
                 {users} AS user_ids,
                 toUInt64({seq}) AS emitted_seq,
                 toUInt8({seq} = 2) AS is_final
             FROM numbers({rows})"
        )
    };
    vec![
        // The users drift by 25 ids a day, so DAU, WAU and MAU differ.
        counts(
            windows,
            "5 + number * 7 % 13",
            "arrayMap(j -> concat('u', toString(intDiv(number, 4 * 1440) * 25 + (number * 11 + j * 3) % 60)), range(1 + number % 5))",
            2,
        ),
        counts(4 * 60, "1000", "['replayed-user']", 1),
        format!(
            "INSERT INTO events (tenant, event_id, name, namespace, timestamp, received_at, user_id, \
             anonymous_id, session_id, customer_id, channel, service, properties, user_properties, \
             context, items, description, kafka_partition, kafka_offset, inserted_at)
             SELECT
                 ['acme', 'globex'][1 + number % 2] AS tenant,
                 concat('demo-', toString(number)) AS event_id,
                 ['shop.page_view', 'shop.cart_add', 'shop.checkout', 'app.open'][1 + intDiv(number, 2) % 4] AS name,
                 splitByChar('.', name)[1] AS namespace,
                 toDateTime64({now} - 30 * (number + 1), 3, 'UTC') AS timestamp,
                 timestamp + toIntervalMillisecond(150) AS received_at,
                 if(number % 10 = 0, NULL, concat('u', toString(number % 60))) AS user_id,
                 if(number % 10 = 0, concat('anon-', toString(number)), NULL) AS anonymous_id,
                 NULL AS session_id,
                 NULL AS customer_id,
                 ['web', 'mobile'][1 + number % 2] AS channel,
                 'demo' AS service,
                 map('plan', ['free', 'pro'][1 + number % 2]) AS properties,
                 map() AS user_properties,
                 '{{}}' AS context,
                 '[]' AS items,
                 '' AS description,
                 toUInt32(number % 4) AS kafka_partition,
                 toUInt64(number) AS kafka_offset,
                 received_at + toIntervalMillisecond({min} + number * 37 % {span}) AS inserted_at
             FROM numbers({rows})",
            rows = 2 * 1440 * DAYS,
            min = LAG_MIN_MS as u64,
            span = (LAG_MAX_MS - LAG_MIN_MS) as u64 + 1,
        ),
        format!(
            "INSERT INTO dead_letters (kind, reason, kafka_partition, kafka_offset, dead_lettered_at, event_id, name)
             SELECT
                 ['late', 'invalid'][1 + number % 2] AS kind,
                 if(kind = 'late', 'event time behind the watermark by more than the allowed lateness',
                    'undecodable Avro payload') AS reason,
                 toUInt32(number % 4) AS kafka_partition,
                 toUInt64(number) AS kafka_offset,
                 toDateTime64({now} - 240 * (number + 1), 3, 'UTC') AS dead_lettered_at,
                 concat('dead-', toString(number)) AS event_id,
                 ['shop.page_view', 'shop.cart_add'][1 + intDiv(number, 2) % 2] AS name
             FROM numbers({rows})",
            rows = 360 * DAYS,
        ),
    ]
}

/// What the "Events" stat must show for tenant `acme` (even `number`s): the
/// final emissions of the demo windows starting inside [from, to]. Computed
/// from the generator rather than asked of ClickHouse, so it also proves the
/// superseded emissions (count 1000) are not summed.
pub(crate) fn expected_events(now: i64, from: i64, to: i64) -> u64 {
    let minute = now - now.rem_euclid(60);
    (0..4 * 1440 * DAYS)
        .filter(|n| n % 2 == 0)
        .filter(|n| {
            let start = minute - 60 * (1 + (n / 4) as i64);
            start >= from && start <= to
        })
        .map(|n| 5 + n * 7 % 13)
        .sum()
}
