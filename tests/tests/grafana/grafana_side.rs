//! Grafana's side of a panel's query: the time range, the interval, and the
//! dashboard's variables substituted as Grafana does.

use super::*;

/// A Grafana duration ("30s", "1m", "24h", "30d", "1w") in milliseconds.
pub(crate) fn duration_ms(s: &str) -> Result<i64, String> {
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
pub(crate) fn round_interval(ms: i64) -> i64 {
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
pub(crate) fn grafana_interval_ms(
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
pub(crate) struct QueryRange {
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) interval_ms: i64,
}

/// The dashboard's range: `to` is "now", `from` is "now-<duration>".
pub(crate) fn dashboard_range(dashboard: &Value, now: i64) -> Result<(i64, i64), String> {
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
pub(crate) fn panel_range(panel: &Value, dashboard: (i64, i64)) -> Result<QueryRange, String> {
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
pub(crate) fn substitute_variables(
    sql: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
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
