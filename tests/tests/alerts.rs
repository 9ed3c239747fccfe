//! weir's alert rules, checked by the real Prometheus tools: promtool checks
//! the rules and every Prometheus config weir ships, and runs the rules' unit
//! tests (`deploy/prometheus/rules.test.yml`); every alert has a firing and
//! a quiet case there, a runbook in docs/runbooks.md, and the Kubernetes
//! `PrometheusRule` is the rule file rendered, not a second copy.
//! (`alerts_fire.rs` fires them on the running stack.)

use serde_yaml::Value;
use std::collections::BTreeSet;
use std::process::Command;
use weir_tests::monitoring::{
    check_rendered, monitoring_tool, render_prometheus_rule, rules_source, K8S_RULE, RULES,
};
use weir_tests::repo_root;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Every alert of the rule file, with its labels and annotations.
fn alerts() -> Vec<Value> {
    let rules: Value = serde_yaml::from_str(&rules_source()).expect("rules.yml is YAML");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn name(alert: &Value) -> &str {
    alert["alert"].as_str().expect("an alert name")
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let out = run(Command::new(monitoring_tool("promtool"))
        .args(["check", "rules", RULES])
        .current_dir(repo_root()));
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{out}"
    );
    let out = run(Command::new(monitoring_tool("promtool"))
        .args(["test", "rules", "deploy/prometheus/rules.test.yml"])
        .current_dir(repo_root()));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_prometheus_and_alertmanager_config_weir_ships_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new(repo_root().join("deploy/local/monitoring-config.sh")).arg(dir.path()));
    run(Command::new(monitoring_tool("promtool"))
        .args(["check", "config"])
        .arg(dir.path().join("prometheus.yml")));
    run(Command::new(monitoring_tool("amtool"))
        .arg("check-config")
        .arg(dir.path().join("alertmanager.yml")));
    // Compose's, with the paths its containers mount rewritten to the files.
    let root = repo_root();
    let compose = |file: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(root.join("deploy/compose").join(file)).unwrap();
        assert!(text.contains(from), "{file} no longer mounts {from}");
        let path = dir.path().join(format!("compose-{file}"));
        std::fs::write(
            &path,
            text.replace(from, &root.join(to).display().to_string()),
        )
        .unwrap();
        path
    };
    let out = run(Command::new(monitoring_tool("promtool"))
        .args(["check", "config"])
        .arg(compose(
            "prometheus.yml",
            "/etc/prometheus/rules.yml",
            "deploy/prometheus/rules.yml",
        )));
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{out}"
    );
    run(Command::new(monitoring_tool("amtool"))
        .arg("check-config")
        .arg(compose(
            "alertmanager.yml",
            "/etc/alertmanager/email.tmpl",
            "deploy/prometheus/email.tmpl",
        )));
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let tests: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/prometheus/rules.test.yml")).unwrap(),
    )
    .unwrap();
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in tests["tests"].as_sequence().expect("tests") {
        // Namespaces of the input series: one the case expects no alert in
        // is a quiet case beside the firing one.
        let namespaces: BTreeSet<String> = case["input_series"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|s| s["series"].as_str())
            .filter_map(|s| s.split("namespace=\"").nth(1))
            .filter_map(|s| s.split('"').next())
            .map(str::to_string)
            .collect();
        for t in case["alert_rule_test"]
            .as_sequence()
            .expect("alert_rule_test")
        {
            let alert = t["alertname"].as_str().expect("alertname").to_string();
            let expected = t["exp_alerts"].as_sequence().expect("exp_alerts");
            if expected.is_empty() {
                quiet.insert(alert.clone());
            }
            let alerting: BTreeSet<String> = expected
                .iter()
                .filter_map(|e| e["exp_labels"]["namespace"].as_str())
                .map(str::to_string)
                .collect();
            if !expected.is_empty() {
                firing.insert(alert.clone());
                if namespaces.iter().any(|n| !alerting.contains(n)) {
                    quiet.insert(alert);
                }
            }
        }
    }
    for alert in alerts() {
        assert!(
            firing.contains(name(&alert)),
            "{}: no firing case",
            name(&alert)
        );
        assert!(
            quiet.contains(name(&alert)),
            "{}: no quiet case",
            name(&alert)
        );
    }
}

/// Every alert says which stage it is about and links its runbook entry,
/// which exists.
#[test]
fn every_alert_has_a_stage_and_a_runbook() {
    let runbooks = std::fs::read_to_string(repo_root().join("docs/runbooks.md")).unwrap();
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    for alert in alerts() {
        let n = name(&alert);
        assert!(
            alert["labels"]["stage"].as_str().is_some(),
            "{n}: no stage label"
        );
        assert_eq!(alert["labels"]["system"].as_str(), Some("weir"), "{n}");
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            url,
            format!(
                "https://github.com/weir-dev/weir/blob/main/docs/runbooks.md#{}",
                n.to_lowercase()
            ),
            "{n}: runbook_url"
        );
        assert!(
            anchors.contains(&n.to_lowercase()),
            "{n}: no `## {n}` in docs/runbooks.md"
        );
    }
}

/// The Kubernetes `PrometheusRule` is the rule file rendered.
#[test]
fn the_kubernetes_rule_is_rendered_from_the_rule_file() {
    let on_disk = check_rendered(
        K8S_RULE,
        &render_prometheus_rule(&rules_source()),
        RULES,
        "alerts",
    );
    let doc: Value = serde_yaml::from_str(&on_disk).unwrap();
    assert_eq!(doc["kind"].as_str(), Some("PrometheusRule"));
    let source: Value = serde_yaml::from_str(&rules_source()).unwrap();
    assert_eq!(doc["spec"]["groups"], source["groups"]);
}
