#!/usr/bin/env bash
# Stops what deploy/local/up.sh started: the stages first (they flush on
# SIGTERM), then the parts. Data stays in .local/ unless --wipe is given.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
STATE="${WEIR_LOCAL_DIR:-$ROOT/.local}"
[ -f "$STATE/pids" ] || { echo "[weir] nothing is running"; exit 0; }
for name in prometheus alertmanager smtp ingest processor aggregator archiver kafka registry clickhouse; do
  for pid in $(awk -v n="$name" '$2 == n {print $1}' "$STATE/pids"); do
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
done
rm -f "$STATE/pids"
[ "${1:-}" = "--wipe" ] && rm -rf "$STATE"
echo "[weir] stopped"
