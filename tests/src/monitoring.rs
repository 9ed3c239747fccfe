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
    indent_into(&mut out, groups, "  ");
    out
}

/// Appends `text` to `out` with `prefix` before every line but empty ones
/// (a YAML block's body).
fn indent_into(out: &mut String, text: &str, prefix: &str) {
    for line in text.lines() {
        if !line.is_empty() {
            out.push_str(prefix);
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// Checks that the generated file at `path` (from the repository root) is
/// `rendered`; with `WEIR_BLESS` set, writes it first. Returns what is on
/// disk. `test` is the test target that rewrites it.
pub fn check_rendered(path: &str, rendered: &str, source: &str, test: &str) -> String {
    let file = repo_root().join(path);
    if std::env::var_os("WEIR_BLESS").is_some() {
        std::fs::write(&file, rendered).unwrap();
    }
    let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "{path} differs from {source} rendered: edit {source}, then run \
         `WEIR_BLESS=1 cargo test -p weir-tests --test {test}`"
    );
    on_disk
}

/// The rule file as it is in the repository.
pub fn rules_source() -> String {
    std::fs::read_to_string(repo_root().join(RULES)).expect("deploy/prometheus/rules.yml")
}

/// The rule file with every duration (`for:`, range selectors, `offset`)
/// divided by `divisor`, whole seconds at least: the end-to-end alert test
/// runs an hour of alerting in a minute. Thresholds are left as they are.
pub fn scale_durations(rules: &str, divisor: u64) -> String {
    fn scaled(num: &str, unit: &str, divisor: u64) -> String {
        let n: u64 = num.parse().expect("a duration");
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            other => panic!("duration unit {other} in the rule file"),
        };
        format!("{}s", (secs / divisor).max(1))
    }
    // Replaces every `<digits><unit>` in `text` (units s, m, h, d; `ms` is
    // not used by the rules).
    fn scale_all(text: &str, divisor: u64) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < chars.len() {
            let starts = chars[i].is_ascii_digit()
                && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'));
            if starts {
                let mut j = i;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
                let unit_ok = j < chars.len()
                    && "smhd".contains(chars[j])
                    && (j + 1 == chars.len() || !chars[j + 1].is_alphanumeric());
                if unit_ok {
                    let num: String = chars[i..j].iter().collect();
                    out.push_str(&scaled(&num, &chars[j].to_string(), divisor));
                    i = j + 1;
                    continue;
                }
                out.extend(&chars[i..j]);
                i = j;
                continue;
            }
            out.push(chars[i]);
            i += 1;
        }
        out
    }
    let mut out = String::new();
    let mut in_expr = false;
    for line in rules.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with("expr:") {
            in_expr = true;
        } else if in_expr && !trimmed.is_empty() && indent <= 4 {
            in_expr = false;
        }
        let scaled_line = if trimmed.starts_with('#') {
            line.to_string()
        } else if let Some(v) = trimmed.strip_prefix("for: ") {
            format!("{}for: {}", &line[..indent], scale_all(v, divisor))
        } else if in_expr {
            // Only inside `[...]` and after `offset`: numbers elsewhere in an
            // expression are thresholds.
            let mut s = String::new();
            let mut rest = line;
            while let Some(open) = rest.find('[') {
                let close = rest[open..].find(']').map_or(rest.len(), |c| open + c + 1);
                s.push_str(&rest[..open]);
                s.push_str(&scale_all(&rest[open..close], divisor));
                rest = &rest[close..];
            }
            s.push_str(rest);
            match s.find("offset ") {
                Some(at) => {
                    let (head, tail) = s.split_at(at + "offset ".len());
                    let end = tail.find(' ').unwrap_or(tail.len());
                    format!("{head}{}{}", scale_all(&tail[..end], divisor), &tail[end..])
                }
                None => s,
            }
        } else {
            line.to_string()
        };
        out.push_str(&scaled_line);
        out.push('\n');
    }
    out
}

/// Where each stage serves `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub ingest: Vec<u16>,
    pub processor: Vec<u16>,
    pub aggregator: Vec<u16>,
    pub archiver: Vec<u16>,
}

/// An alert e-mail as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub subject: String,
    /// The text part (`deploy/prometheus/email.tmpl`'s `weir.email.text`).
    pub text: String,
}

/// Prometheus, Alertmanager and an SMTP server, configured by
/// `deploy/local/monitoring-config.sh` with weir's rule file (its durations
/// divided by `time_divisor`) and started by `deploy/local/part.sh`.
pub struct Monitoring {
    pub prometheus: crate::stack::Proc,
    pub alertmanager: crate::stack::Proc,
    pub smtp: crate::stack::Proc,
    pub prometheus_port: u16,
    pub mail_dir: PathBuf,
}

impl Monitoring {
    pub async fn start(dir: &std::path::Path, targets: &Targets, time_divisor: u64) -> Self {
        use crate::stack::{free_port, Proc};
        let (prometheus_port, alertmanager_port, smtp_port) =
            (free_port(), free_port(), free_port());
        let config = dir.join("monitoring");
        let list = |ports: &[u16]| {
            ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let status =
            std::process::Command::new(repo_root().join("deploy/local/monitoring-config.sh"))
                .arg(&config)
                .env("WEIR_SCRAPE_INGEST", list(&targets.ingest))
                .env("WEIR_SCRAPE_PROCESSOR", list(&targets.processor))
                .env("WEIR_SCRAPE_AGGREGATOR", list(&targets.aggregator))
                .env("WEIR_SCRAPE_ARCHIVER", list(&targets.archiver))
                .env(
                    "WEIR_ALERTMANAGER",
                    format!("127.0.0.1:{alertmanager_port}"),
                )
                .env("WEIR_SMTP", format!("127.0.0.1:{smtp_port}"))
                .env("WEIR_SCRAPE_INTERVAL", "1s")
                .env("WEIR_ALERT_GROUP_WAIT", "1s")
                .env("WEIR_ALERT_GROUP_INTERVAL", "2s")
                .status()
                .expect("monitoring-config.sh runs");
        assert!(status.success(), "monitoring-config.sh failed");
        std::fs::write(
            config.join("rules.yml"),
            scale_durations(&rules_source(), time_divisor),
        )
        .unwrap();
        let part = |name: &str, port: u16, data: &str, with_config: bool| {
            let mut cmd = vec![
                repo_root()
                    .join("deploy/local/part.sh")
                    .display()
                    .to_string(),
                name.to_string(),
                port.to_string(),
                dir.join(data).display().to_string(),
            ];
            if with_config {
                cmd.push(config.display().to_string());
            }
            Proc::spawn(name, cmd, vec![], dir.join(format!("{name}.log")))
        };
        let smtp = part("smtp", smtp_port, "mail", false);
        let alertmanager = part("alertmanager", alertmanager_port, "alertmanager", true);
        let prometheus = part("prometheus", prometheus_port, "prometheus", true);
        let m = Self {
            prometheus,
            alertmanager,
            smtp,
            prometheus_port,
            mail_dir: dir.join("mail"),
        };
        for (url, proc) in [
            (
                format!("http://127.0.0.1:{alertmanager_port}/-/ready"),
                &m.alertmanager,
            ),
            (
                format!("http://127.0.0.1:{prometheus_port}/-/ready"),
                &m.prometheus,
            ),
        ] {
            crate::stack::wait_http(&url, std::time::Duration::from_secs(60), proc).await;
        }
        m
    }

    /// A GET of Prometheus's HTTP API (`/api/v1/<path>`), as JSON.
    async fn api(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/api/v1/{path}",
                self.prometheus_port
            ))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await?
            .json()
            .await?)
    }

    /// An instant query's result vector.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let body = self
            .api(&format!("query?query={}", crate::load::urlencode(promql)))
            .await?;
        anyhow::ensure!(body["status"] == "success", "{promql}: {body}");
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The names of the alerting rules Prometheus has loaded.
    pub async fn alert_rules(&self) -> anyhow::Result<Vec<String>> {
        let body = self.api("rules?type=alert").await?;
        Ok(body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect())
    }

    /// The alerts Prometheus holds now: (name, state, labels).
    pub async fn alerts(&self) -> anyhow::Result<Vec<(String, String, serde_json::Value)>> {
        let body = self.api("alerts").await?;
        Ok(body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    a["state"].as_str().unwrap_or_default().to_string(),
                    a["labels"].clone(),
                )
            })
            .collect())
    }

    /// Every e-mail received so far, oldest first.
    pub fn mails(&self) -> Vec<Mail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.mail_dir.join("new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        files
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|raw| {
                let mail = mailparse::parse_mail(&raw).ok()?;
                let subject = mail
                    .headers
                    .iter()
                    .find(|h| h.get_key() == "Subject")?
                    .get_value();
                let text = std::iter::once(&mail)
                    .chain(mail.subparts.iter())
                    .find(|p| p.ctype.mimetype == "text/plain")?
                    .get_body()
                    .ok()?;
                Some(Mail { subject, text })
            })
            .collect()
    }
}

/// The dashboards weir ships (`deploy/grafana/dashboards/`), file name and
/// JSON text, sorted by name.
pub fn dashboards() -> Vec<(String, String)> {
    let dir = repo_root().join("deploy/grafana/dashboards");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("deploy/grafana/dashboards")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Where the dashboards are rendered for Kubernetes.
pub const K8S_DASHBOARDS: &str = "deploy/k8s/base/grafana-dashboards.yaml";

/// A ConfigMap of the dashboards for Grafana's dashboard sidecar (the
/// Grafana Helm chart's, which loads ConfigMaps labelled
/// `grafana_dashboard: "1"`): each file under its name, as it is.
pub fn render_dashboards_configmap(dashboards: &[(String, String)]) -> String {
    let mut out = String::from(
        "# GENERATED from deploy/grafana/dashboards/*.json, the one source of weir's\n\
         # dashboards: edit those, then `WEIR_BLESS=1 cargo test -p weir-tests --test\n\
         # ops_dashboard` rewrites this file (the test fails while they differ).\n\
         # Grafana's dashboard sidecar loads ConfigMaps with the grafana_dashboard\n\
         # label; the data sources they use are weir-prometheus and weir-clickhouse\n\
         # (deploy/grafana/provisioning/datasources/).\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: weir-grafana-dashboards\n  labels:\n    grafana_dashboard: \"1\"\n    \
         app.kubernetes.io/name: weir\n    app.kubernetes.io/part-of: weir\n\
         data:\n",
    );
    for (name, json) in dashboards {
        out.push_str(&format!("  {name}: |\n"));
        indent_into(&mut out, json, "    ");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_scale_in_for_ranges_and_offsets_but_thresholds_do_not() {
        let rules = "  - alert: A\n    expr: |\n      rate(x[5m]) > 600\n      and deriv(y[10m:1m]) > 0\n      and z offset 15m\n    for: 15m\n    labels:\n      severity: warning\n    annotations:\n      summary: \"for 5m\"\n";
        let s = scale_durations(rules, 60);
        assert!(s.contains("rate(x[5s]) > 600"), "{s}");
        assert!(s.contains("deriv(y[10s:1s]) > 0"), "{s}");
        assert!(s.contains("z offset 15s"), "{s}");
        assert!(s.contains("for: 15s"), "{s}");
        assert!(s.contains("summary: \"for 5m\""), "{s}");
        let whole = scale_durations(&rules_source(), 60);
        assert!(!whole.contains("[10m:1m]") && whole.contains("[10s:1s]"));
        assert!(whole.contains("[180s]"), "3h becomes 180s: {whole}");
    }
}
