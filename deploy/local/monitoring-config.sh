#!/usr/bin/env bash
# Writes the local stack's Prometheus and Alertmanager configuration into DIR:
#   monitoring-config.sh DIR
# prometheus.yml scrapes the stages (every target labelled namespace="local",
# which the rules aggregate by) and loads deploy/prometheus/rules.yml, copied
# beside it; alertmanager.yml e-mails every weir alert through an SMTP server
# with deploy/prometheus/email.tmpl. Addresses and timings come from the
# environment, defaults in brackets:
#   WEIR_SCRAPE_INGEST      [127.0.0.1:8080]  comma-separated host:port lists;
#                                             set but empty: the stage is not scraped
#   WEIR_SCRAPE_PROCESSOR   [127.0.0.1:9102]
#   WEIR_SCRAPE_AGGREGATOR  [127.0.0.1:8090]
#   WEIR_SCRAPE_ARCHIVER    [127.0.0.1:8091]
#   WEIR_ALERTMANAGER       [127.0.0.1:9093]
#   WEIR_SMTP               [127.0.0.1:2525]  where the e-mails go
#   WEIR_MAIL_TO            [weir-maintainer@localhost]
#   WEIR_SCRAPE_INTERVAL    [15s]   also the rule evaluation interval
#   WEIR_ALERT_GROUP_WAIT   [30s]   Alertmanager's group_wait
#   WEIR_ALERT_GROUP_INTERVAL [5m]  and group_interval
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$1"
mkdir -p "$dir"
cp "$ROOT/deploy/prometheus/rules.yml" "$ROOT/deploy/prometheus/email.tmpl" "$dir/"

targets() { # "a:1,b:2" -> ["a:1", "b:2"]
  local IFS=,; local out=""
  for t in $1; do out+="${out:+, }\"$t\""; done
  echo "[$out]"
}
interval="${WEIR_SCRAPE_INTERVAL:-15s}"
{
  echo "# Written by deploy/local/monitoring-config.sh; edits are overwritten."
  echo "global:"
  echo "  scrape_interval: $interval"
  echo "  evaluation_interval: $interval"
  echo "rule_files: [rules.yml]"
  echo "alerting:"
  echo "  alertmanagers:"
  echo "  - static_configs:"
  echo "    - targets: [\"${WEIR_ALERTMANAGER:-127.0.0.1:9093}\"]"
  echo "scrape_configs:"
  for stage in ingest processor aggregator archiver; do
    case $stage in
      ingest) t="${WEIR_SCRAPE_INGEST-127.0.0.1:8080}" ;;
      processor) t="${WEIR_SCRAPE_PROCESSOR-127.0.0.1:9102}" ;;
      aggregator) t="${WEIR_SCRAPE_AGGREGATOR-127.0.0.1:8090}" ;;
      archiver) t="${WEIR_SCRAPE_ARCHIVER-127.0.0.1:8091}" ;;
    esac
    [ -n "$t" ] || continue
    echo "- job_name: $stage"
    echo "  static_configs:"
    echo "  - targets: $(targets "$t")"
    echo "    labels: {namespace: local}"
  done
} > "$dir/prometheus.yml"

cat > "$dir/alertmanager.yml" <<YAML
# Written by deploy/local/monitoring-config.sh; edits are overwritten.
templates: [email.tmpl]
route:
  receiver: weir-maintainer
  group_by: [alertname, namespace, stage]
  group_wait: ${WEIR_ALERT_GROUP_WAIT:-30s}
  group_interval: ${WEIR_ALERT_GROUP_INTERVAL:-5m}
  repeat_interval: 4h
receivers:
- name: weir-maintainer
  email_configs:
  - to: ${WEIR_MAIL_TO:-weir-maintainer@localhost}
    from: alertmanager@localhost
    smarthost: ${WEIR_SMTP:-127.0.0.1:2525}
    require_tls: false
    send_resolved: true
    headers:
      Subject: '{{ template "weir.email.subject" . }}'
    text: '{{ template "weir.email.text" . }}'
YAML
