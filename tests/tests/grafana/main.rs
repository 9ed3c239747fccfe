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

mod answers;
mod demo_data;
mod grafana_side;
mod macros;
mod structure;

use answers::*;
use demo_data::*;
use grafana_side::*;
use macros::*;
use structure::*;

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
