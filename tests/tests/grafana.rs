//! The Grafana dashboard in `deploy/grafana/` against real ClickHouse.
//!
//! Every panel's SQL is taken from `dashboards/weir.json`, its dashboard
//! variables are substituted as Grafana's frontend does and the ClickHouse
//! plugin's macros as grafana-clickhouse-datasource's backend does
//! (`pkg/macros/macros.go`, with the argument parsing of the plugin SDK's
//! `sqlutil`), and it runs on the schema the real aggregator migrated, loaded
//! with three days of demo data. Each panel must answer rows whose column types
//! fit its visualisation, and a few values are checked against what the demo
//! data implies. The provisioning files the dashboard depends on are checked
//! too. A macro, variable syntax or panel type this file does not know fails
//! the test rather than being skipped, so the dashboard cannot outgrow it.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use weir_tests::{repo_root, Stack};

const PLUGIN: &str = "grafana-clickhouse-datasource";
const DASHBOARDS_PATH: &str = "/var/lib/grafana/dashboards/weir";
/// The aggregator's ReplacingMergeTree tables: a replayed batch leaves old rows
/// beside new ones until a merge, so a read without FINAL can count twice.
const REPLACING_TABLES: &[&str] = &["events", "event_counts_1m", "dead_letters"];

/// Days of demo data, ending at the test's `now`.
const DAYS: u64 = 3;
/// The demo's pipeline lag (inserted_at - received_at) stays within these.
const LAG_MIN_MS: f64 = 20.0;
const LAG_MAX_MS: f64 = 3019.0;

// ---------------------------------------------------------------------------
// Demo data
// ---------------------------------------------------------------------------

/// Three days of data for two tenants, as the aggregator would have written
/// it: per-minute windows (plus superseded emissions of the last hour, which
/// FINAL must drop), one event every 30 s with its lag, and a dead letter of
/// each kind every 8 minutes.
fn demo_data(now: i64) -> Vec<String> {
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
fn expected_events(now: i64, from: i64, to: i64) -> u64 {
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

// ---------------------------------------------------------------------------
// Grafana's side: time range, interval, dashboard variables
// ---------------------------------------------------------------------------

/// A Grafana duration ("30s", "1m", "24h", "30d", "1w") in milliseconds.
fn duration_ms(s: &str) -> Result<i64, String> {
    let unit_at = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {s:?} has no unit"))?;
    let n: i64 = s[..unit_at]
        .parse()
        .map_err(|_| format!("duration {s:?} has no count"))?;
    let unit = match &s[unit_at..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        other => {
            return Err(format!(
                "duration unit {other:?} in {s:?} is not supported here"
            ))
        }
    };
    Ok(n * unit)
}

/// Grafana's `roundInterval` (`@grafana/data` rangeutil): the "nice" bucket
/// width nearest to range / max data points.
fn round_interval(ms: i64) -> i64 {
    const LADDER: &[(i64, i64)] = &[
        (10, 1),
        (15, 10),
        (35, 20),
        (75, 50),
        (150, 100),
        (350, 200),
        (750, 500),
        (1_500, 1_000),
        (3_500, 2_000),
        (7_500, 5_000),
        (12_500, 10_000),
        (17_500, 15_000),
        (25_000, 20_000),
        (45_000, 30_000),
        (90_000, 60_000),
        (210_000, 120_000),
        (450_000, 300_000),
        (750_000, 600_000),
        (1_050_000, 900_000),
        (1_500_000, 1_200_000),
        (2_700_000, 1_800_000),
        (5_400_000, 3_600_000),
        (9_000_000, 7_200_000),
        (16_200_000, 10_800_000),
        (32_400_000, 21_600_000),
        (86_400_000, 43_200_000),
        (604_800_000, 86_400_000),
        (1_814_400_000, 604_800_000),
        (3_628_800_000, 2_592_000_000),
    ];
    LADDER
        .iter()
        .find(|(below, _)| ms < *below)
        .map_or(31_536_000_000, |(_, interval)| *interval)
}

/// The interval Grafana sends with a panel's query (`calculateInterval`):
/// range / maxDataPoints rounded, never below the panel's min interval.
fn grafana_interval_ms(
    from: i64,
    to: i64,
    max_data_points: i64,
    min_interval: Option<&str>,
) -> Result<i64, String> {
    let low = min_interval.map(duration_ms).transpose()?.unwrap_or(1);
    Ok(round_interval((to - from) * 1000 / max_data_points).max(low))
}

/// The time range and interval of one query, in whole seconds as the plugin's
/// macros use them.
#[derive(Clone, Copy, Debug)]
struct QueryRange {
    from: i64,
    to: i64,
    interval_ms: i64,
}

/// The dashboard's range: `to` is "now", `from` is "now-<duration>".
fn dashboard_range(dashboard: &Value, now: i64) -> Result<(i64, i64), String> {
    let time = &dashboard["time"];
    if time["to"] != "now" {
        return Err(format!("time.to {} is not \"now\"", time["to"]));
    }
    let from = time["from"].as_str().unwrap_or_default();
    let ago = from
        .strip_prefix("now-")
        .ok_or_else(|| format!("time.from {from:?} is not now-<duration>"))?;
    Ok((now - duration_ms(ago)? / 1000, now))
}

/// A panel's query range: the dashboard's, or `timeFrom` back from its end.
fn panel_range(panel: &Value, dashboard: (i64, i64)) -> Result<QueryRange, String> {
    if panel.get("timeShift").is_some_and(|v| !v.is_null()) {
        return Err("timeShift is not supported by this test".into());
    }
    let (mut from, to) = dashboard;
    if let Some(relative) = panel["timeFrom"].as_str() {
        from = to - duration_ms(relative)? / 1000;
    }
    // Without maxDataPoints Grafana uses the panel's width in pixels.
    let points = panel["maxDataPoints"].as_i64().unwrap_or(1000);
    let interval_ms = grafana_interval_ms(from, to, points, panel["interval"].as_str())?;
    Ok(QueryRange {
        from,
        to,
        interval_ms,
    })
}

/// Grafana's template substitution (frontend, before the query reaches the
/// plugin): `$var`, `${var}` and `${var:format}`. `$__name` is left for the
/// macros; a variable or format this dashboard does not define is an error
/// rather than left in the SQL.
fn substitute_variables(sql: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, format, used) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {:?}", &rest[at..]))?;
            let (name, format) = match braced[..end].split_once(':') {
                Some((n, f)) => (n, Some(f)),
                None => (&braced[..end], None),
            };
            (name, format, end + 2)
        } else {
            let len = after.find(|c| !is_word(c)).unwrap_or(after.len());
            (&after[..len], None, len)
        };
        if name.is_empty() || (name.starts_with("__") && !after.starts_with('{')) {
            // A lone "$" stays; "$__name" is a plugin macro, expanded later
            // by the backend.
            out.push('$');
            rest = after;
            continue;
        }
        let value = vars
            .get(name)
            .ok_or_else(|| format!("unknown template variable {:?}", &rest[at..at + 1 + used]))?;
        out.push_str(&match format {
            // The plugin's own formatter leaves a single value as it is.
            None | Some("raw") => value.clone(),
            Some("sqlstring") => format!("'{}'", value.replace('\'', "''")),
            Some("singlequote") => format!("'{}'", value.replace('\'', "\\'")),
            Some(other) => return Err(format!("variable format {other:?} is not supported here")),
        });
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------
// The plugin's side: macros
// ---------------------------------------------------------------------------

/// The bracketed argument list right after a macro name, as the plugin SDK's
/// `sqlutil.parseArgs` reads it: only when "(" follows immediately, commas
/// split at the top level only, arguments trimmed. Returns the arguments and
/// how many bytes they took.
fn macro_args(tail: &str) -> Result<(Vec<String>, usize), String> {
    if !tail.starts_with('(') {
        return Ok((vec![], 0));
    }
    let (mut args, mut arg, mut depth) = (vec![], String::new(), 0);
    for (i, c) in tail.char_indices() {
        match c {
            '(' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            ')' => {
                depth -= 1;
                if depth == 0 {
                    args.push(arg.trim().to_string());
                    return Ok((args, i + 1));
                }
            }
            ',' if depth == 1 => {
                args.push(arg.trim().to_string());
                arg.clear();
                continue;
            }
            _ => {}
        }
        arg.push(c);
    }
    Err(format!("macro arguments {tail:?} have no closing bracket"))
}

/// grafana-clickhouse-datasource's macro expansion (`pkg/macros/macros.go`),
/// for the macros this dashboard uses. A macro name is the longest run of word
/// characters after `$__`, as the SDK's `\$__name\b` matches it, so
/// `$__timeFilter_ms` is never read as `$__timeFilter`.
fn expand_macros(sql: &str, range: &QueryRange) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let (name, tail) = after.split_at(len);
        let (args, used) = macro_args(tail)?;
        let column = || match args.as_slice() {
            [column] => Ok(column.clone()),
            _ => Err(format!("$__{name} expects 1 argument, got {}", args.len())),
        };
        // math.Max(query.Interval.Seconds(), 1), truncated to an integer.
        let interval_s = (range.interval_ms / 1000).max(1);
        let (from, to) = (range.from, range.to);
        out.push_str(&match name {
            "timeFilter" => {
                let c = column()?;
                format!("{c} >= toDateTime({from}) AND {c} <= toDateTime({to})")
            }
            "fromTime" => format!("toDateTime({from})"),
            "toTime" => format!("toDateTime({to})"),
            "interval_s" => interval_s.to_string(),
            "timeInterval" => format!(
                "toStartOfInterval(toDateTime({}), INTERVAL {interval_s} second)",
                column()?
            ),
            _ => {
                return Err(format!(
                    "unknown macro $__{name}: teach this test how grafana-clickhouse-datasource expands it"
                ))
            }
        });
        rest = &tail[used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every read of a replacing table must say FINAL right after the table name.
fn check_final(sql: &str) -> Result<(), String> {
    let tokens: Vec<&str> = sql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter(|t| !t.is_empty())
        .collect();
    for (i, pair) in tokens.windows(2).enumerate() {
        let table = pair[1].strip_prefix("weir.").unwrap_or(pair[1]);
        let reads = ["FROM", "JOIN"]
            .iter()
            .any(|k| pair[0].eq_ignore_ascii_case(k));
        if reads
            && REPLACING_TABLES.contains(&table)
            && !tokens
                .get(i + 2)
                .is_some_and(|t| t.eq_ignore_ascii_case("FINAL"))
        {
            return Err(format!(
                "reads {table} without FINAL (replayed rows would count twice)"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Running queries and judging the answers
// ---------------------------------------------------------------------------

struct Answer {
    /// (name, ClickHouse type), in SELECT order.
    columns: Vec<(String, String)>,
    rows: Vec<Value>,
}

impl Answer {
    fn numbers(&self, column: &str) -> Vec<Option<f64>> {
        self.rows.iter().map(|r| number(&r[column])).collect()
    }
}

/// A JSON cell as a number; ClickHouse may quote 64-bit integers.
fn number(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.parse().ok())
}

async fn run(stack: &Stack, sql: &str) -> Result<Answer, String> {
    let text = stack
        .clickhouse_query(&format!("{sql}\nFORMAT JSON"))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text:.300}"))?;
    let columns = v["meta"]
        .as_array()
        .ok_or("no meta in the answer")?
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (field("name"), field("type"))
        })
        .collect();
    let rows = v["data"].as_array().cloned().unwrap_or_default();
    Ok(Answer { columns, rows })
}

/// The type inside Nullable(...) and LowCardinality(...).
fn base_type(mut t: &str) -> &str {
    loop {
        let inner = ["Nullable(", "LowCardinality("]
            .iter()
            .find_map(|w| t.strip_prefix(w)?.strip_suffix(')'));
        match inner {
            Some(i) => t = i,
            None => return t,
        }
    }
}

fn is_time(t: &str) -> bool {
    base_type(t).starts_with("Date")
}

fn is_numeric(t: &str) -> bool {
    let b = base_type(t);
    ["UInt", "Int", "Float", "Decimal", "BFloat16"]
        .iter()
        .any(|p| b.starts_with(p))
}

fn is_string(t: &str) -> bool {
    let b = base_type(t);
    b == "String" || b.starts_with("FixedString") || b.starts_with("Enum")
}

/// The column types each panel type needs from the plugin.
fn check_shape(kind: &str, columns: &[(String, String)]) -> Result<(), String> {
    let numeric = columns.iter().filter(|(_, t)| is_numeric(t)).count();
    match kind {
        // The plugin turns a long frame (time, label strings..., values...)
        // into one series per label set.
        "timeseries" => {
            let (first, others) = columns.split_first().ok_or("no columns")?;
            if !is_time(&first.1) {
                return Err(format!(
                    "the first column of a time series must be a Date/DateTime, not {first:?}"
                ));
            }
            if let Some(bad) = others.iter().find(|(_, t)| !is_numeric(t) && !is_string(t)) {
                return Err(format!(
                    "column {bad:?} is neither a value nor a series name"
                ));
            }
            if numeric == 0 {
                return Err("a time series needs a numeric column".into());
            }
        }
        "stat" => {
            if let Some(bad) = columns.iter().find(|(_, t)| !is_numeric(t)) {
                return Err(format!("a stat shows numbers; column {bad:?} is not one"));
            }
            if columns.is_empty() {
                return Err("no columns".into());
            }
        }
        "table" => {
            if numeric == 0 {
                return Err(format!("a table with no numeric column: {columns:?}"));
            }
        }
        other => {
            return Err(format!(
                "no type rules for panel type {other:?}; add them here"
            ))
        }
    }
    Ok(())
}

/// The unit Grafana will show a column in: a byName override, else the default.
fn unit_of<'a>(panel: &'a Value, column: &str) -> Option<&'a str> {
    let config = &panel["fieldConfig"];
    let overridden = config["overrides"].as_array().and_then(|overrides| {
        overrides
            .iter()
            .filter(|o| o["matcher"]["id"] == "byName" && o["matcher"]["options"] == column)
            .flat_map(|o| o["properties"].as_array().into_iter().flatten())
            .find(|p| p["id"] == "unit")
            .and_then(|p| p["value"].as_str())
    });
    overridden.or_else(|| config["defaults"]["unit"].as_str())
}

/// What the numbers must look like: present, never negative, not all zero
/// (all zero means a filter matched nothing), percentages within 0..100 and
/// lags within the demo's bounds (so milliseconds really are milliseconds).
fn check_values(panel: &Value, answer: &Answer) -> Result<(), String> {
    let mut any_positive = false;
    for (name, t) in answer.columns.iter().filter(|(_, t)| is_numeric(t)) {
        let unit = unit_of(panel, name);
        for value in answer.numbers(name) {
            let v = value.ok_or_else(|| format!("{name} ({t}) has a null or non-number"))?;
            if v < 0.0 {
                return Err(format!("{name} is negative: {v}"));
            }
            if unit == Some("percent") && v > 100.0 {
                return Err(format!("{name} is a percentage above 100: {v}"));
            }
            if unit == Some("ms") && !(LAG_MIN_MS..=LAG_MAX_MS).contains(&v) {
                return Err(format!(
                    "{name} = {v} ms is outside the demo's lag of {LAG_MIN_MS}..={LAG_MAX_MS} ms"
                ));
            }
            any_positive |= v > 0.0;
        }
    }
    if !any_positive {
        return Err("every value is zero".into());
    }
    Ok(())
}

/// Checks that only make sense for one panel, found by its title.
fn check_panel_meaning(
    title: &str,
    answer: &Answer,
    range: &QueryRange,
    now: i64,
) -> Result<(), String> {
    match title {
        "Events" => {
            let want = expected_events(now, range.from, range.to) as f64;
            let got = answer.numbers("events");
            if got != [Some(want)] {
                return Err(format!("events = {got:?}, the demo data has {want}"));
            }
        }
        "DAU / WAU / MAU" => {
            let (dau, wau, mau) = (
                answer.numbers("dau"),
                answer.numbers("wau"),
                answer.numbers("mau"),
            );
            for ((d, w), m) in dau.iter().zip(&wau).zip(&mau) {
                if !(d <= w && w <= m) {
                    return Err(format!("not dau <= wau <= mau: {d:?} {w:?} {m:?}"));
                }
            }
            // The demo's users drift daily, so a trailing week holds more of them.
            if !dau.iter().zip(&wau).any(|(d, w)| w > d) {
                return Err("WAU never exceeds DAU, though the demo's users change daily".into());
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The dashboard's structure and its provisioning
// ---------------------------------------------------------------------------

/// All panels, including those nested in (collapsed) rows.
fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = vec![];
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        out.extend(all_panels(&p["panels"]));
    }
    out
}

fn title(panel: &Value) -> String {
    format!(
        "panel {} {:?}",
        panel["id"],
        panel["title"].as_str().unwrap_or_default()
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The provisioning files, checked as text (no YAML parser here): the data
/// source is the ClickHouse plugin over HTTP on database weir, and the
/// dashboard provider reads the directory the README mounts the dashboards
/// at. Returns the data source's uid.
fn check_provisioning(grafana: &Path) -> String {
    let datasource = read(&grafana.join("provisioning/datasources/clickhouse.yaml"));
    let setting = |text: &str, key: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    for (key, want) in [
        ("apiVersion", "1"),
        ("type", PLUGIN),
        ("protocol", "http"),
        ("defaultDatabase", "weir"),
        // The plugin reads it with a string type assertion; a number panics.
        ("dialTimeout", "\"10\""),
    ] {
        assert_eq!(
            setting(&datasource, key).as_deref(),
            Some(want),
            "datasources/clickhouse.yaml: {key}"
        );
    }
    for key in ["host", "port", "username", "password"] {
        let value = setting(&datasource, key).unwrap_or_default();
        assert!(
            value.starts_with("${WEIR_CLICKHOUSE_"),
            "datasources/clickhouse.yaml: {key} should come from a WEIR_CLICKHOUSE_* variable, is {value:?}"
        );
    }
    let uid = setting(&datasource, "uid").expect("datasources/clickhouse.yaml: a fixed uid");

    let provider = read(&grafana.join("provisioning/dashboards/weir.yaml"));
    for (key, want) in [
        ("apiVersion", "1"),
        ("type", "file"),
        ("path", DASHBOARDS_PATH),
    ] {
        assert_eq!(
            setting(&provider, key).as_deref(),
            Some(want),
            "dashboards/weir.yaml: {key}"
        );
    }
    uid
}

/// Structure that needs no database: unique ids, a layout, the provisioned
/// data source everywhere, plugin query settings that match the panel type,
/// and FINAL on every replacing table.
fn check_structure(dashboard: &Value, uid: &str) -> Vec<String> {
    let mut failures = vec![];
    let mut ids = BTreeSet::new();
    let uses_datasource = |v: &Value| v["type"] == PLUGIN && v["uid"] == uid;
    for panel in all_panels(&dashboard["panels"]) {
        let mut fail = |msg: String| failures.push(format!("{}: {msg}", title(panel)));
        if !ids.insert(panel["id"].to_string()) || !panel["id"].is_u64() {
            fail(format!("id {} is missing or not unique", panel["id"]));
        }
        let grid = &panel["gridPos"];
        let sizes: Vec<Option<u64>> = ["x", "y", "w", "h"]
            .iter()
            .map(|k| grid[k].as_u64())
            .collect();
        if sizes.iter().any(Option::is_none) || sizes[0].unwrap_or(0) + sizes[2].unwrap_or(0) > 24 {
            fail(format!(
                "gridPos {grid} is not a place on the 24-column grid"
            ));
        }
        if panel["type"] == "row" {
            continue;
        }
        if !uses_datasource(&panel["datasource"]) {
            fail(format!(
                "datasource {} is not {PLUGIN} {uid}",
                panel["datasource"]
            ));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            fail("no queries".into());
        }
        let series = panel["type"] == "timeseries";
        for t in &targets {
            if !t["datasource"].is_null() && !uses_datasource(&t["datasource"]) {
                fail(format!("query datasource {} is not {uid}", t["datasource"]));
            }
            // Format 0 asks the plugin for time series frames, 1 for a table.
            let want = if series {
                (0, "timeseries")
            } else {
                (1, "table")
            };
            if t["editorType"] != "sql" || t["format"] != want.0 || t["queryType"] != want.1 {
                fail(format!(
                    "query wants editorType sql, format {} and queryType {}, has {}, {}, {}",
                    want.0, want.1, t["editorType"], t["format"], t["queryType"]
                ));
            }
            match t["rawSql"].as_str() {
                Some(sql) if !sql.trim().is_empty() => {
                    if let Err(e) = check_final(sql) {
                        fail(format!("{e}\n--- SQL ---\n{sql}"));
                    }
                }
                _ => fail("a query without rawSql".into()),
            }
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if !uses_datasource(&var["datasource"]) {
            failures.push(format!("variable {}: datasource is not {uid}", var["name"]));
        }
    }
    failures
}

/// Resolves the dashboard's variables the way Grafana does on load: a query
/// variable runs its query over the dashboard's range and, with no saved
/// value, takes the first answer.
async fn resolve_variables(
    stack: &Stack,
    dashboard: &Value,
    range: &QueryRange,
) -> Result<BTreeMap<String, String>, String> {
    let mut vars = BTreeMap::new();
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = var["name"].as_str().ok_or("a variable without a name")?;
        if var["type"] != "query" {
            return Err(format!(
                "variable {name}: type {} is not supported here",
                var["type"]
            ));
        }
        // The plugin accepts a legacy plain-string query too.
        let raw = var["query"]["rawSql"]
            .as_str()
            .or(var["query"].as_str())
            .ok_or_else(|| format!("variable {name}: no rawSql"))?;
        check_final(raw).map_err(|e| format!("variable {name}: {e}"))?;
        let sql = expand_macros(&substitute_variables(raw, &vars)?, range)?;
        let answer = run(stack, &sql)
            .await
            .map_err(|e| format!("variable {name}: {e}\n--- SQL ---\n{sql}"))?;
        let first = answer
            .columns
            .first()
            .map(|c| c.0.clone())
            .unwrap_or_default();
        let options: Vec<String> = answer
            .rows
            .iter()
            .map(|r| match &r[&first] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let saved = var["current"]["value"]
            .as_str()
            .filter(|v| options.iter().any(|o| o == v));
        let value = saved
            .map(str::to_string)
            .or_else(|| options.first().cloned())
            .ok_or_else(|| {
                format!("variable {name}: its query found no values\n--- SQL ---\n{sql}")
            })?;
        println!("variable {name} = {value:?} (options {options:?})");
        vars.insert(name.to_string(), value);
    }
    Ok(vars)
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_answers_typed_rows_on_the_migrated_schema() {
    let grafana = repo_root().join("deploy/grafana");
    let uid = check_provisioning(&grafana);
    let dashboard: Value = serde_json::from_str(&read(&grafana.join("dashboards/weir.json")))
        .expect("dashboards/weir.json is JSON");
    let structure = check_structure(&dashboard, &uid);
    assert!(structure.is_empty(), "{}", structure.join("\n\n"));

    let stack = Stack::start().await;
    // The real aggregator applies the migrations at start-up.
    let aggregator = stack.stage("aggregator", "0", &[]);
    aggregator.wait_ready().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    for sql in demo_data(now) {
        stack
            .clickhouse_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("demo data: {e:#}\n--- SQL ---\n{sql}"));
    }

    let whole = dashboard_range(&dashboard, now).expect("the dashboard's time range");
    let variable_range = QueryRange {
        from: whole.0,
        to: whole.1,
        interval_ms: grafana_interval_ms(whole.0, whole.1, 1000, None).unwrap(),
    };
    let vars = resolve_variables(&stack, &dashboard, &variable_range)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        vars.get("tenant").map(String::as_str),
        Some("acme"),
        "the tenant variable should default to the first demo tenant"
    );

    let mut failures = vec![];
    let mut ran = 0;
    for panel in all_panels(&dashboard["panels"]) {
        if panel["type"] == "row" {
            continue;
        }
        let kind = panel["type"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let raw = target["rawSql"].as_str().unwrap_or_default();
            let mut sql = raw.to_string();
            let outcome: Result<Answer, String> = async {
                let range = panel_range(panel, whole)?;
                sql = expand_macros(&substitute_variables(raw, &vars)?, &range)?;
                let answer = run(&stack, &sql).await?;
                if answer.rows.is_empty() {
                    return Err("no rows".into());
                }
                check_shape(kind, &answer.columns)?;
                check_values(panel, &answer)?;
                check_panel_meaning(
                    panel["title"].as_str().unwrap_or_default(),
                    &answer,
                    &range,
                    now,
                )?;
                Ok(answer)
            }
            .await;
            ran += 1;
            match outcome {
                Ok(answer) => println!(
                    "ok   {} ({kind}): {} rows, {:?}",
                    title(panel),
                    answer.rows.len(),
                    answer.columns
                ),
                Err(e) => {
                    println!("FAIL {}: {e}", title(panel));
                    failures.push(format!(
                        "{} {}: {e}\n--- SQL as sent ---\n{sql}",
                        title(panel),
                        target["refId"]
                    ));
                }
            }
        }
    }
    assert!(ran >= 8, "only {ran} panel queries found");
    assert!(
        failures.is_empty(),
        "{} of {ran} panel queries failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The substitutions, against the plugin's documented expansions (its README:
/// `$__timeFilter(time)` -> `time >= toDateTime(1415792726) AND time <=
/// toDateTime(1447328726)`) and the SDK's argument parsing rules.
#[test]
fn macros_expand_as_the_clickhouse_plugin_does() {
    let range = QueryRange {
        from: 1415792726,
        to: 1447328726,
        interval_ms: 60_000,
    };
    let expand = |sql: &str| expand_macros(sql, &range);
    assert_eq!(
        expand("WHERE $__timeFilter(time)").unwrap(),
        "WHERE time >= toDateTime(1415792726) AND time <= toDateTime(1447328726)"
    );
    assert_eq!(
        expand("$__timeFilter( toDateTime(a, 'UTC') )").unwrap(),
        "toDateTime(a, 'UTC') >= toDateTime(1415792726) AND toDateTime(a, 'UTC') <= toDateTime(1447328726)"
    );
    assert_eq!(
        expand("t >= $__fromTime AND t <= $__toTime").unwrap(),
        "t >= toDateTime(1415792726) AND t <= toDateTime(1447328726)"
    );
    // Arguments only when "(" follows at once: a later call is not consumed.
    assert_eq!(
        expand("$__fromTime - toIntervalDay(1)").unwrap(),
        "toDateTime(1415792726) - toIntervalDay(1)"
    );
    assert_eq!(
        expand("SELECT $__timeInterval(ts) AS t, n / $__interval_s").unwrap(),
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second) AS t, n / 60"
    );
    let sub_second = QueryRange {
        interval_ms: 500,
        ..range
    };
    assert_eq!(expand_macros("$__interval_s", &sub_second).unwrap(), "1");
    // A longer name is another macro, not $__timeFilter with a suffix.
    assert!(expand("$__timeFilter_ms(t)")
        .unwrap_err()
        .contains("$__timeFilter_ms"));
    assert!(expand("$__interval").unwrap_err().contains("unknown macro"));
    assert!(expand("$__timeFilter(a, b)").is_err());
    assert!(expand("$__timeFilter(t").is_err());
}

#[test]
fn variables_substitute_as_grafana_does() {
    let vars = BTreeMap::from([("tenant".to_string(), "o'brien".to_string())]);
    let sub = |sql: &str| substitute_variables(sql, &vars);
    assert_eq!(sub("t = ${tenant:sqlstring}").unwrap(), "t = 'o''brien'");
    assert_eq!(sub("t = '$tenant'").unwrap(), "t = 'o'brien'");
    assert_eq!(sub("t = '${tenant}'").unwrap(), "t = 'o'brien'");
    assert_eq!(
        sub("$__timeFilter(t) AND $__interval_s").unwrap(),
        "$__timeFilter(t) AND $__interval_s"
    );
    assert!(sub("$other").is_err());
    assert!(sub("${tenant:csv}").is_err());
    assert!(sub("${__from}").is_err());
}

#[test]
fn intervals_follow_grafanas_ladder() {
    let day = 86_400;
    assert_eq!(grafana_interval_ms(0, day, 1440, Some("1m")), Ok(60_000));
    assert_eq!(
        grafana_interval_ms(0, 7 * day, 1440, Some("1m")),
        Ok(300_000)
    );
    // The panel's min interval is a floor.
    assert_eq!(grafana_interval_ms(0, 3600, 1440, Some("1m")), Ok(60_000));
    assert_eq!(grafana_interval_ms(0, 3600, 1440, None), Ok(2_000));
    assert_eq!(
        grafana_interval_ms(0, 30 * day, 1440, Some("1d")),
        Ok(86_400_000)
    );
}

#[test]
fn final_is_required_on_replacing_tables() {
    assert!(check_final("SELECT 1 FROM event_counts_1m FINAL WHERE x").is_ok());
    assert!(check_final("SELECT 1 FROM weir.events FINAL").is_ok());
    assert!(check_final("SELECT 1 FROM event_counts_1m WHERE x").is_err());
    assert!(check_final("SELECT 1 FROM a JOIN dead_letters ON 1").is_err());
    assert!(check_final("INSERT INTO event_counts_1m_in SELECT 1").is_ok());
}
