#!/usr/bin/env bash
# Starts one real part of the local stack in the foreground, on loopback:
#   part.sh kafka      PORT DATA_DIR
#   part.sh registry   PORT
#   part.sh clickhouse PORT DATA_DIR
#   part.sh s3         PORT DATA_DIR   (bucket `weir-archive`; keys from
#                                       WEIR_S3_ACCESS_KEY/WEIR_S3_SECRET_KEY)
#   part.sh prometheus   PORT DATA_DIR CONFIG_DIR   (monitoring-config.sh writes
#   part.sh alertmanager PORT DATA_DIR CONFIG_DIR    CONFIG_DIR)
#   part.sh smtp       PORT MAIL_DIR   (an SMTP server that keeps every message
#                                       in MAIL_DIR/new/, a Maildir)
# It execs the server, so the caller's pid is the server's (kill -9 hits it).
set -euo pipefail
TOOLS="${WEIR_TOOLS:-$HOME/.cache/weir/tools}"
HERE="$(cd "$(dirname "$0")" && pwd)"
part="$1" port="$2"
case "$part" in
  kafka)
    mkdir -p "$3"
    exec "$TOOLS/bin/nisshi" broker --silent \
      --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "sqlite:///$(cd "$3" && pwd)/nisshi.db" --group-initial-rebalance-delay 0s ;;
  registry)
    exec "$TOOLS/bin/rivven-schema" serve --host 127.0.0.1 --port "$port" --log-level warn ;;
  clickhouse)
    # install.sh keeps chdb in a venv of its own under the tools cache.
    exec "$TOOLS/venv/bin/python" "$HERE/clickhouse/server.py" --host 127.0.0.1 --port "$port" --path "$3" ;;
  s3)
    # A bucket is a directory of the server's root.
    mkdir -p "$3/weir-archive"
    exec "$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port "$port" \
      --access-key "${WEIR_S3_ACCESS_KEY:-weir}" --secret-key "${WEIR_S3_SECRET_KEY:-weir-local-secret}" "$3" ;;
  prometheus)
    mkdir -p "$3"
    exec "$TOOLS/monitoring/bin/prometheus" --config.file="$4/prometheus.yml" \
      --storage.tsdb.path="$3" --web.listen-address="127.0.0.1:$port" \
      --web.enable-lifecycle --log.level=warn ;;
  alertmanager)
    # No cluster port: one Alertmanager alone, and nothing else bound.
    mkdir -p "$3"
    exec "$TOOLS/monitoring/bin/alertmanager" --config.file="$4/alertmanager.yml" \
      --storage.path="$3" --web.listen-address="127.0.0.1:$port" \
      --cluster.listen-address= --log.level=warn ;;
  smtp)
    # A Maildir: messages are written to tmp/ and moved to new/.
    mkdir -p "$3/tmp" "$3/new" "$3/cur"
    exec "$TOOLS/venv-smtp/bin/python" -m aiosmtpd -n -l "127.0.0.1:$port" \
      -c aiosmtpd.handlers.Mailbox "$3" ;;
  *) echo "unknown part: $part (kafka, registry, clickhouse, s3, prometheus, alertmanager or smtp)" >&2; exit 2 ;;
esac
