//! Monitoring: the ServiceMonitor reaches the stages, every alert's PromQL
//! uses documented metrics, and the Alertmanager example routes the alerts.

use super::*;

/// The ServiceMonitor scrapes `/metrics` of every stage's Service, on a port
/// those Services name.
pub(crate) fn check_service_monitor(r: &Rendered, p: &mut Problems) {
    let monitors: Vec<&Value> = r.of_kind("ServiceMonitor").collect();
    p.check(monitors.len() == 1, || {
        format!(
            "{}: expected one ServiceMonitor, found {}",
            r.name,
            monitors.len()
        )
    });
    for sm in monitors {
        let ctx = format!("{}: ServiceMonitor {}", r.name, name(sm));
        p.check(
            str_at(sm, "/apiVersion") == Some("monitoring.coreos.com/v1"),
            || format!("{ctx}: must be monitoring.coreos.com/v1"),
        );
        let selector = sm.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
        let selected: Vec<&Value> = r
            .of_kind("Service")
            .filter(|s| label_selector_matches(&selector, &labels_at(s, "/metadata/labels")))
            .collect();
        for stage in STAGES {
            let scraped = selected.iter().any(|s| {
                let sel = labels_at(s, "/spec/selector");
                r.workloads().any(|w| {
                    subset(&sel, &labels_at(w, "/spec/template/metadata/labels"))
                        && array_at(w, "/spec/template/spec/containers")
                            .iter()
                            .any(|c| stage_of(c) == Some(stage))
                })
            });
            p.check(scraped, || format!("{ctx}: selects no Service of {stage}"));
        }
        let endpoints = array_at(sm, "/spec/endpoints");
        p.check(!endpoints.is_empty(), || format!("{ctx}: no endpoints"));
        for ep in endpoints {
            let port = str_at(ep, "/port");
            let path = str_at(ep, "/path").unwrap_or("/metrics");
            p.check(path == "/metrics", || {
                format!("{ctx}: scrapes {path}, not /metrics")
            });
            for s in &selected {
                let named = array_at(s, "/spec/ports")
                    .iter()
                    .any(|pt| port.is_some() && str_at(pt, "/name") == port);
                p.check(named, || {
                    format!(
                        "{ctx}: endpoint port {port:?} is no named port of Service {}",
                        name(s)
                    )
                });
            }
        }
        if let Some(job) = str_at(sm, "/spec/jobLabel") {
            for s in &selected {
                p.check(labels_at(s, "/metadata/labels").contains_key(job), || {
                    format!(
                        "{ctx}: jobLabel {job} is not a label of Service {}",
                        name(s)
                    )
                });
            }
        }
    }
}

pub(crate) const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
pub(crate) const KEYWORDS: [&str; 12] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
];

/// What a PromQL expression reads, and its aggregations that drop `namespace`.
#[derive(Default, Debug)]
pub(crate) struct PromqlScan {
    pub(crate) metrics: BTreeSet<String>,
    pub(crate) drops_namespace: Vec<String>,
}

/// A small PromQL scanner: string literals, label matchers and ranges are
/// skipped, a name followed by `(` is a function, keywords are keywords, and
/// every other name is a metric. Aggregations must be written
/// `sum by (namespace, ...) (...)`, which keeps the label an
/// AlertmanagerConfig routes on.
pub(crate) fn scan_promql(expr: &str) -> PromqlScan {
    let chars: Vec<char> = expr.chars().collect();
    let mut scan = PromqlScan::default();
    let skip_to = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                Some(_) if c == '\\' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == open => depth += 1,
                None if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                None => {}
            }
            i += 1;
        }
        i
    };
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let ident_at = |i: usize| -> String {
        chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_' || **c == ':')
            .collect()
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if c == '{' {
            i = skip_to(i, '{', '}');
        } else if c == '[' {
            i = skip_to(i, '[', ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let ident = ident_at(i);
            i += ident.len();
            let j = next_non_space(i);
            let lower = ident.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) && chars.get(j) == Some(&'(')
                {
                    i = skip_to(j, '(', ')');
                }
            } else if AGGREGATIONS.contains(&lower.as_str()) {
                let modifier = if chars.get(j).is_some_and(|c| c.is_ascii_alphabetic()) {
                    ident_at(j).to_ascii_lowercase()
                } else {
                    String::new()
                };
                let list_start = next_non_space(j + modifier.len());
                let labels: String = if chars.get(list_start) == Some(&'(') {
                    chars[list_start..skip_to(list_start, '(', ')')]
                        .iter()
                        .collect()
                } else {
                    String::new()
                };
                let has_namespace = labels
                    .trim_matches(|c| c == '(' || c == ')')
                    .split(',')
                    .any(|l| l.trim() == "namespace");
                let keeps = match modifier.as_str() {
                    "by" => has_namespace,
                    "without" => !has_namespace,
                    _ => false,
                };
                if !keeps {
                    scan.drops_namespace
                        .push(format!("{ident} {modifier}{labels}"));
                }
            } else if chars.get(j) != Some(&'(') {
                scan.metrics.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    scan
}

pub(crate) fn documented(metric: &str, readme: &BTreeSet<String>) -> bool {
    PROMETHEUS_SERIES.contains(&metric)
        || readme.contains(metric)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| metric.strip_suffix(s).is_some_and(|m| readme.contains(m)))
}

pub(crate) fn is_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// The alerts: the required ones exist, each is well-formed, reads only
/// documented metrics and keeps `namespace`. Returns each alert's labels.
pub(crate) fn check_prometheus_rule(
    r: &Rendered,
    readme: &BTreeSet<String>,
    p: &mut Problems,
) -> Vec<(String, BTreeMap<String, String>)> {
    let rules: Vec<&Value> = r.of_kind("PrometheusRule").collect();
    p.check(rules.len() == 1, || {
        format!(
            "{}: expected one PrometheusRule, found {}",
            r.name,
            rules.len()
        )
    });
    let mut alerts = vec![];
    for pr in rules {
        let ctx = format!("{}: PrometheusRule {}", r.name, name(pr));
        p.check(
            str_at(pr, "/apiVersion") == Some("monitoring.coreos.com/v1"),
            || format!("{ctx}: must be monitoring.coreos.com/v1"),
        );
        let groups = array_at(pr, "/spec/groups");
        p.check(!groups.is_empty(), || format!("{ctx}: no groups"));
        for g in groups {
            p.check(str_at(g, "/name").is_some_and(|n| !n.is_empty()), || {
                format!("{ctx}: a group without a name")
            });
            for rule in array_at(g, "/rules") {
                let Some(alert) = str_at(rule, "/alert") else {
                    p.check(str_at(rule, "/record").is_some(), || {
                        format!("{ctx}: a rule that is neither alert nor record")
                    });
                    continue;
                };
                let actx = format!("{ctx} alert {alert}");
                let expr = str_at(rule, "/expr").unwrap_or_default();
                p.check(!expr.trim().is_empty(), || format!("{actx}: no expr"));
                let scan = scan_promql(expr);
                p.check(!scan.metrics.is_empty(), || {
                    format!("{actx}: reads no metric")
                });
                for m in &scan.metrics {
                    p.check(documented(m, readme), || {
                        format!("{actx}: metric {m} is not in docs/operations.md's metrics table")
                    });
                }
                for agg in &scan.drops_namespace {
                    p.fail(format!(
                        "{actx}: `{agg}` drops the namespace label; write `by (namespace, ...)`"
                    ));
                }
                if let Some(f) = rule.get("for") {
                    p.check(f.as_str().is_some_and(is_duration), || {
                        format!("{actx}: `for: {f}` is not a duration")
                    });
                }
                let labels = labels_at(rule, "/labels");
                let severity = labels.get("severity").map(String::as_str);
                p.check(
                    matches!(severity, Some("critical" | "warning" | "info")),
                    || {
                        format!(
                            "{actx}: severity must be critical, warning or info, is {severity:?}"
                        )
                    },
                );
                for a in ["summary", "description"] {
                    p.check(
                        str_at(rule, &format!("/annotations/{a}")).is_some_and(|s| !s.is_empty()),
                        || format!("{actx}: no {a} annotation"),
                    );
                }
                alerts.push((alert.to_string(), labels));
            }
        }
    }
    let names: BTreeSet<&str> = alerts.iter().map(|(a, _)| a.as_str()).collect();
    for required in REQUIRED_ALERTS {
        p.check(names.contains(required), || {
            format!("{}: the PrometheusRule lacks alert {required}", r.name)
        });
    }
    p.check(names.len() == alerts.len(), || {
        format!("{}: alert names repeat", r.name)
    });
    alerts
}

/// `deploy/k8s/alertmanager-example.yaml`: its routes reach receivers it
/// defines, the e-mail receiver is complete, and its matchers catch every
/// weir alert.
pub(crate) fn check_alertmanager_example(
    alerts: &[(String, BTreeMap<String, String>)],
    p: &mut Problems,
) {
    let path = repo_root().join("deploy/k8s/alertmanager-example.yaml");
    let docs = parse_docs(&std::fs::read_to_string(&path).expect("alertmanager-example.yaml"));
    let configs: Vec<&Value> = docs
        .iter()
        .filter(|d| kind(d) == "AlertmanagerConfig")
        .collect();
    p.check(configs.len() == 1, || {
        format!(
            "alertmanager-example.yaml: expected one AlertmanagerConfig, found {}",
            configs.len()
        )
    });
    for amc in configs {
        let ctx = format!(
            "alertmanager-example.yaml: AlertmanagerConfig {}",
            name(amc)
        );
        p.check(
            str_at(amc, "/apiVersion").is_some_and(|v| {
                v == "monitoring.coreos.com/v1alpha1" || v == "monitoring.coreos.com/v1beta1"
            }),
            || format!("{ctx}: unexpected apiVersion"),
        );
        let receivers: BTreeMap<&str, &Value> = array_at(amc, "/spec/receivers")
            .iter()
            .filter_map(|r| Some((str_at(r, "/name")?, r)))
            .collect();
        let route = amc.pointer("/spec/route").cloned().unwrap_or(Value::Null);
        let mut routes = vec![&route];
        routes.extend(array_at(&route, "/routes"));
        for rt in routes {
            let receiver = str_at(rt, "/receiver").unwrap_or_default();
            p.check(receivers.contains_key(receiver), || {
                format!("{ctx}: a route sends to receiver {receiver:?}, which is not defined")
            });
        }
        let top = str_at(&route, "/receiver").unwrap_or_default();
        let emails = receivers
            .get(top)
            .map(|r| array_at(r, "/emailConfigs"))
            .unwrap_or_default();
        p.check(!emails.is_empty(), || {
            format!("{ctx}: receiver {top:?} sends no e-mail")
        });
        for e in emails {
            for field in ["to", "from", "smarthost"] {
                p.check(str_at(e, &format!("/{field}")).is_some(), || {
                    format!("{ctx}: an e-mail config without {field}")
                });
            }
            if let Some(secret) = str_at(e, "/authPassword/name") {
                let key = str_at(e, "/authPassword/key").unwrap_or_default();
                let defined = docs.iter().any(|d| {
                    kind(d) == "Secret"
                        && name(d) == secret
                        && ["/stringData", "/data"]
                            .iter()
                            .any(|ptr| d.pointer(&format!("{ptr}/{key}")).is_some())
                });
                p.check(defined, || {
                    format!("{ctx}: authPassword names Secret {secret} key {key}, which the file does not define")
                });
            }
        }
        for m in array_at(&route, "/matchers") {
            let label = str_at(m, "/name").unwrap_or_default();
            let value = str_at(m, "/value").unwrap_or_default();
            let op = str_at(m, "/matchType").unwrap_or("=");
            p.check(op == "=", || {
                format!("{ctx}: this test reads `=` matchers only, not {op:?}")
            });
            for (alert, labels) in alerts {
                p.check(labels.get(label).map(String::as_str) == Some(value), || {
                    format!("{ctx}: matcher {label}={value} misses alert {alert}")
                });
            }
        }
    }
}
