//! The ClickHouse plugin's side: its macros expanded as the plugin does, and
//! `FINAL` on every replacing table.

use super::*;

/// The bracketed argument list right after a macro name, as the plugin SDK's
/// `sqlutil.parseArgs` reads it: only when "(" follows immediately, commas
/// split at the top level only, arguments trimmed. Returns the arguments and
/// how many bytes they took.
pub(crate) fn macro_args(tail: &str) -> Result<(Vec<String>, usize), String> {
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
pub(crate) fn expand_macros(sql: &str, range: &QueryRange) -> Result<String, String> {
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
pub(crate) fn check_final(sql: &str) -> Result<(), String> {
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
