//! The dashboard's structure and its provisioning: data source, uids,
//! variables and the files Grafana loads.

use super::*;

/// All panels, including those nested in (collapsed) rows.
pub(crate) fn all_panels(panels: &Value) -> Vec<&Value> {
    let mut out = vec![];
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        out.extend(all_panels(&p["panels"]));
    }
    out
}

pub(crate) fn title(panel: &Value) -> String {
    format!(
        "panel {} {:?}",
        panel["id"],
        panel["title"].as_str().unwrap_or_default()
    )
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The provisioning files, checked as text (no YAML parser here): the data
/// source is the ClickHouse plugin over HTTP on database weir, and the
/// dashboard provider reads the directory the README mounts the dashboards
/// at. Returns the data source's uid.
pub(crate) fn check_provisioning(grafana: &Path) -> String {
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
pub(crate) fn check_structure(dashboard: &Value, uid: &str) -> Vec<String> {
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
pub(crate) async fn resolve_variables(
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
