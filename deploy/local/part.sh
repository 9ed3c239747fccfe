#!/usr/bin/env bash
# Starts one real part of the local stack in the foreground, on loopback:
#   part.sh kafka      PORT DATA_DIR
#   part.sh registry   PORT
#   part.sh clickhouse PORT DATA_DIR
#   part.sh s3         PORT DATA_DIR   (bucket `weir-archive`; keys from
#                                       WEIR_S3_ACCESS_KEY/WEIR_S3_SECRET_KEY)
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
  *) echo "unknown part: $part (kafka, registry, clickhouse or s3)" >&2; exit 2 ;;
esac
