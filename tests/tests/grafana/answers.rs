//! Running a panel's SQL on ClickHouse and judging the answer: its columns'
//! types for the panel's kind, and values that mean what the panel says.

use super::*;

pub(crate) struct Answer {
    /// (name, ClickHouse type), in SELECT order.
    pub(crate) columns: Vec<(String, String)>,
    pub(crate) rows: Vec<Value>,
}

impl Answer {
    pub(crate) fn numbers(&self, column: &str) -> Vec<Option<f64>> {
        self.rows.iter().map(|r| number(&r[column])).collect()
    }
}

/// A JSON cell as a number; ClickHouse may quote 64-bit integers.
pub(crate) fn number(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str()?.parse().ok())
}

pub(crate) async fn run(stack: &Stack, sql: &str) -> Result<Answer, String> {
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
pub(crate) fn base_type(mut t: &str) -> &str {
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

pub(crate) fn is_time(t: &str) -> bool {
    base_type(t).starts_with("Date")
}

pub(crate) fn is_numeric(t: &str) -> bool {
    let b = base_type(t);
    ["UInt", "Int", "Float", "Decimal", "BFloat16"]
        .iter()
        .any(|p| b.starts_with(p))
}

pub(crate) fn is_string(t: &str) -> bool {
    let b = base_type(t);
    b == "String" || b.starts_with("FixedString") || b.starts_with("Enum")
}

/// The column types each panel type needs from the plugin.
pub(crate) fn check_shape(kind: &str, columns: &[(String, String)]) -> Result<(), String> {
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
pub(crate) fn unit_of<'a>(panel: &'a Value, column: &str) -> Option<&'a str> {
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
pub(crate) fn check_values(panel: &Value, answer: &Answer) -> Result<(), String> {
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
pub(crate) fn check_panel_meaning(
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
