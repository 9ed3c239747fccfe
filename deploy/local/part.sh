#!/usr/bin/env bash
# Starts one real part of the local stack in the foreground, on loopback:
#   part.sh kafka      PORT DATA_DIR
#   part.sh crabka     PORT DATA_DIR   (crabka-broker instead of nisshi, on
#                                       127.0.H.L:PORT with H.L the port's two
#                                       bytes: see below; WEIR_BROKERS=crabka
#                                       for install.sh to build it)
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
  crabka)
    # Its raft listener is fixed at <listen IP>:9093, so each broker gets a
    # loopback address of its own, made from its port, and stays off
    # 127.0.0.1:9093 (Alertmanager's port in up.sh).
    host="127.0.$((port >> 8)).$((port & 255))"
    # It logs every request at info.
    export RUST_LOG="${WEIR_CRABKA_LOG:-warn}"
    mkdir -p "$3"
    data="$(cd "$3" && pwd)"
    if [ ! -f "$data/meta.properties.json" ]; then
      # Format: the broker reads only directory_id from this file. Then one
      # start to take transaction.version from 2 down to classic (see
      # kafka_features.py), which the metadata log keeps across restarts.
      uuid() { cat /proc/sys/kernel/random/uuid; }
      uuid > "$data/weir-cluster-id"
      printf '{"cluster_id":"%s","directory_id":"%s","version":1,"node_id":1}\n' \
        "$(cat "$data/weir-cluster-id")" "$(uuid)" > "$data/meta.properties.json.new"
      mv "$data/meta.properties.json.new" "$data/meta.properties.json"
      formatting=1
    fi
    args=(--listen-addr "$host:$port" --log-dir "$data" --metrics-listen-addr none
          --cluster-id "$(cat "$data/weir-cluster-id")")
    if [ -n "${formatting:-}" ]; then
      "$TOOLS/bin/crabka-broker" "${args[@]}" & pid=$!
      for _ in $(seq 150); do
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break
        sleep 0.2
      done
      python3 "$HERE/kafka_features.py" "$host:$port" transaction.version 0
      kill -TERM "$pid"; wait "$pid" || true
      # Callers wait for this before the port: the formatting start opens it too.
      touch "$data/weir-formatted"
    fi
    exec "$TOOLS/bin/crabka-broker" "${args[@]}" ;;
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
  *) echo "unknown part: $part (kafka, crabka, registry, clickhouse, s3, prometheus, alertmanager or smtp)" >&2; exit 2 ;;
esac
