#!/usr/bin/env bash
# Quick start: installs the local stack, starts it with weir's four stages on
# loopback, sends a few demo events and prints what the query API reads back.
# Everything runs in the background afterwards; stop it with deploy/local/down.sh.
# State, data and logs live in .local/ (override with WEIR_LOCAL_DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/deploy/local"
STATE="${WEIR_LOCAL_DIR:-$ROOT/.local}"
KAFKA_PORT="${KAFKA_PORT:-9092}" REGISTRY_PORT="${REGISTRY_PORT:-8081}" CLICKHOUSE_PORT="${CLICKHOUSE_PORT:-8123}"
INGEST_PORT="${INGEST_PORT:-8080}" PROCESSOR_PORT="${PROCESSOR_PORT:-9102}" AGGREGATOR_PORT="${AGGREGATOR_PORT:-8090}"
ARCHIVER_PORT="${ARCHIVER_PORT:-8091}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}" ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-9093}" SMTP_PORT="${SMTP_PORT:-2525}"
# Prometheus with weir's alert rules, Alertmanager and a local mailbox for
# the alert e-mails; they start in about a second. WEIR_MONITORING=0 skips them.
MONITORING="${WEIR_MONITORING:-1}"
PROFILE="${WEIR_PROFILE:-debug}"

log() { printf '[weir] %s\n' "$*" >&2; }
"$HERE/install.sh"
if [ -f "$STATE/pids" ]; then "$HERE/down.sh"; fi
log "building weir ($PROFILE)"
( cd "$ROOT" && cargo build --bins $([ "$PROFILE" = release ] && echo --release) --quiet )
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"

mkdir -p "$STATE/logs"
: > "$STATE/pids"
ports=("$KAFKA_PORT" "$REGISTRY_PORT" "$CLICKHOUSE_PORT" "$INGEST_PORT" "$PROCESSOR_PORT" "$AGGREGATOR_PORT" "$ARCHIVER_PORT")
[ "$MONITORING" = 1 ] && ports+=("$PROMETHEUS_PORT" "$ALERTMANAGER_PORT" "$SMTP_PORT")
for port in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    log "port $port is in use; set the *_PORT variables to free ones"; exit 1
  fi
done

start() { # name, command...
  local name="$1"; shift
  nohup "$@" > "$STATE/logs/$name.log" 2>&1 &
  echo "$! $name" >> "$STATE/pids"
}
wait_http() { # url, name
  for _ in $(seq 1 240); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  log "$2 did not become ready; see $STATE/logs/$2.log"; tail -n 20 "$STATE/logs/$2.log" >&2; exit 1
}

log "starting Kafka (nisshi) on $KAFKA_PORT, Schema Registry on $REGISTRY_PORT, ClickHouse (chdb) on $CLICKHOUSE_PORT"
start kafka "$HERE/part.sh" kafka "$KAFKA_PORT" "$STATE/kafka"
start registry "$HERE/part.sh" registry "$REGISTRY_PORT"
start clickhouse "$HERE/part.sh" clickhouse "$CLICKHOUSE_PORT" "$STATE/clickhouse"
wait_http "http://127.0.0.1:$REGISTRY_PORT/subjects" registry
wait_http "http://127.0.0.1:$CLICKHOUSE_PORT/ping" clickhouse

export WEIR_KAFKA__BROKERS="127.0.0.1:$KAFKA_PORT"
export WEIR_SCHEMA_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT"
export WEIR_CLICKHOUSE__URL="http://127.0.0.1:$CLICKHOUSE_PORT"
# The local stack's demo keys; production keys come from a file or a Secret.
WRITE_KEY="${WEIR_DEMO_WRITE_KEY:-weir-demo-key}"
READ_KEY="${WEIR_DEMO_READ_KEY:-weir-demo-read-key}"
export WEIR_AUTH__WRITE_KEYS="$WRITE_KEY:demo"
export WEIR_AUTH__READ_KEYS="$READ_KEY:demo"
log "starting ingest on $INGEST_PORT, processor on $PROCESSOR_PORT, aggregator on $AGGREGATOR_PORT, archiver on $ARCHIVER_PORT"
WEIR_LISTEN="127.0.0.1:$INGEST_PORT" start ingest "$BIN/ingest"
WEIR_LISTEN="127.0.0.1:$PROCESSOR_PORT" WEIR_INSTANCE_ID=local-0 start processor "$BIN/processor"
WEIR_LISTEN="127.0.0.1:$AGGREGATOR_PORT" start aggregator "$BIN/aggregator"
# The archive on the local filesystem, the embedded default (docs/archive.md).
WEIR_LISTEN="127.0.0.1:$ARCHIVER_PORT" WEIR_STORE__URL="file://$STATE/archive" \
  start archiver "$BIN/archiver"
wait_http "http://127.0.0.1:$INGEST_PORT/readyz" ingest
wait_http "http://127.0.0.1:$PROCESSOR_PORT/readyz" processor
wait_http "http://127.0.0.1:$AGGREGATOR_PORT/readyz" aggregator
wait_http "http://127.0.0.1:$ARCHIVER_PORT/readyz" archiver
if [ "$MONITORING" = 1 ]; then
  log "starting Prometheus on $PROMETHEUS_PORT (weir's alert rules), Alertmanager on $ALERTMANAGER_PORT, alert mail to $STATE/mail/new/"
  WEIR_SCRAPE_INGEST="127.0.0.1:$INGEST_PORT" WEIR_SCRAPE_PROCESSOR="127.0.0.1:$PROCESSOR_PORT" \
    WEIR_SCRAPE_AGGREGATOR="127.0.0.1:$AGGREGATOR_PORT" WEIR_SCRAPE_ARCHIVER="127.0.0.1:$ARCHIVER_PORT" \
    WEIR_ALERTMANAGER="127.0.0.1:$ALERTMANAGER_PORT" WEIR_SMTP="127.0.0.1:$SMTP_PORT" \
    "$HERE/monitoring-config.sh" "$STATE/monitoring"
  start smtp "$HERE/part.sh" smtp "$SMTP_PORT" "$STATE/mail"
  start alertmanager "$HERE/part.sh" alertmanager "$ALERTMANAGER_PORT" "$STATE/alertmanager" "$STATE/monitoring"
  start prometheus "$HERE/part.sh" prometheus "$PROMETHEUS_PORT" "$STATE/prometheus" "$STATE/monitoring"
  wait_http "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" alertmanager
  wait_http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" prometheus
fi
grep -h "commit mode chosen" "$STATE/logs/processor.log" | sed 's/^/[weir] processor: /' >&2 || true

log "sending demo events: 12 events, 2 of them re-sent duplicates, from 3 users"
now=$(date +%s%3N)
events=""
for i in $(seq 1 10); do
  name=$([ $((i % 2)) = 0 ] && echo cart.add || echo page_view)
  events+="{\"event_id\":\"demo-$now-$i\",\"name\":\"$name\",\"user_id\":\"user-$((i % 3))\",\"channel\":\"web\",\"properties\":{\"n\":$i}},"
done
events+="{\"event_id\":\"demo-$now-1\",\"name\":\"page_view\",\"user_id\":\"user-1\",\"channel\":\"web\",\"properties\":{\"n\":1}},"
events+="{\"event_id\":\"demo-$now-2\",\"name\":\"cart.add\",\"user_id\":\"user-2\",\"channel\":\"web\",\"properties\":{\"n\":2}}"
curl -fsS -X POST "http://127.0.0.1:$INGEST_PORT/v1/events/batch" -H 'content-type: application/json' \
  -H "authorization: Bearer $WRITE_KEY" \
  -d "{\"events\":[${events}]}" > "$STATE/logs/demo-response.json"
log "ingest answered: $(head -c 300 "$STATE/logs/demo-response.json")..."

for name in page_view cart.add; do
  for _ in $(seq 1 60); do
    out=$(curl -fsS -H "x-read-key: $READ_KEY" "http://127.0.0.1:$AGGREGATOR_PORT/v1/metrics?name=$name&from=$((now - 3600000))" || true)
    case "$out" in *'"total_count":5'*) break ;; esac
    sleep 0.5
  done
  echo "GET /v1/metrics?name=$name -> $out"
done
log "the stack keeps running: ingest http://127.0.0.1:$INGEST_PORT (write key $WRITE_KEY), query API http://127.0.0.1:$AGGREGATOR_PORT (read key $READ_KEY; docs at /docs)"
log "the archive is in $STATE/archive (files roll every 60 s; docs/archive.md)"
[ "$MONITORING" = 1 ] && log "Prometheus http://127.0.0.1:$PROMETHEUS_PORT (alerts at /alerts), Alertmanager http://127.0.0.1:$ALERTMANAGER_PORT; alert e-mails land in $STATE/mail/new/ (docs/runbooks.md)"
log "logs in $STATE/logs; stop everything with deploy/local/down.sh"
