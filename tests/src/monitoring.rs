//! Monitoring for the tests: weir's rule file (`deploy/prometheus/rules.yml`,
//! the one source) and its rendering into the Kubernetes `PrometheusRule`,
//! and the tools `deploy/local/install.sh` puts in the cache (promtool,
//! Prometheus, Alertmanager, an SMTP server).

use crate::repo_root;
use std::path::PathBuf;

/// Where the rule file is rendered for Kubernetes.
pub const K8S_RULE: &str = "deploy/k8s/base/prometheusrule.yaml";
/// The rule file, the one source.
pub const RULES: &str = "deploy/prometheus/rules.yml";

/// The tools cache (`$WEIR_TOOLS`, default `~/.cache/weir/tools`).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("WEIR_TOOLS").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").expect("HOME or WEIR_TOOLS"))
                .join(".cache/weir/tools")
        },
        PathBuf::from,
    )
}

/// `promtool`, `prometheus`, `alertmanager` or `amtool` from the cache.
pub fn monitoring_tool(name: &str) -> PathBuf {
    let path = tools_dir().join("monitoring/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run deploy/local/install.sh",
        path.display()
    );
    path
}

/// The `PrometheusRule` for the Prometheus Operator, from the rule file: its
/// groups become the resource's `spec`, unchanged.
pub fn render_prometheus_rule(rules: &str) -> String {
    let groups = rules
        .find("\ngroups:")
        .map(|at| &rules[at + 1..])
        .expect("rules.yml has a top-level `groups:`");
    let mut out = String::from(
        "# GENERATED from deploy/prometheus/rules.yml, the one source of weir's alerts:\n\
         # edit that file, then `WEIR_BLESS=1 cargo test -p weir-tests --test alerts`\n\
         # rewrites this one (the test fails while they differ).\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: weir\n  labels:\n    app.kubernetes.io/name: weir\n    \
         app.kubernetes.io/part-of: weir\n\
         spec:\n",
    );
    for line in groups.lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The rule file as it is in the repository.
pub fn rules_source() -> String {
    std::fs::read_to_string(repo_root().join(RULES)).expect("deploy/prometheus/rules.yml")
}
