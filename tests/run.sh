#!/usr/bin/env bash
# Installs what the tests need (idempotent, cached) and runs the whole suite:
# formatting and lints, the ClickHouse server's own tests, then every Rust
# test, including the end-to-end tests on the real local stack.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
deploy/local/install.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== supply chain: cargo deny (licenses, bans, sources; advisories when the database can be had)"
tests/audit.sh
echo "== build the stage binaries the end-to-end tests run"
cargo build --workspace --bins --quiet
echo "== promtool: the alert rules, their unit tests, the Prometheus config"
PROMTOOL="${WEIR_TOOLS:-$HOME/.cache/weir/tools}/monitoring/bin/promtool"
"$PROMTOOL" check rules deploy/prometheus/rules.yml
"$PROMTOOL" test rules deploy/prometheus/rules.test.yml
mon="$(mktemp -d)"
deploy/local/monitoring-config.sh "$mon"
"$PROMTOOL" check config "$mon/prometheus.yml"
rm -rf "$mon"
echo "== ClickHouse HTTP server on chdb"
"${WEIR_TOOLS:-$HOME/.cache/weir/tools}/venv/bin/python" -m unittest discover -s deploy/local/clickhouse -p 'test_*.py'
echo "== cargo test"
# Each end-to-end test starts its own broker, registry, ClickHouse and stages;
# two at a time fit this 2-core machine.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets -- --test-threads=2 2>&1 | tee "$log"
if [[ ",${WEIR_BROKERS:-nisshi}," == *",crabka,"* ]]; then
  # The exactly-once suite again, on the second broker install.sh built
  # (docs/testing.md, "Two brokers").
  echo "== the exactly-once suite on crabka-broker"
  WEIR_TEST_BROKER=crabka cargo test -p weir-tests \
    --test broker_contract --test pipeline --test chaos --test chaos_processor \
    --test changelog_compaction \
    -- --test-threads=2 2>&1 | tee -a "$log"
fi
# One closing line for the whole run (the Python tests are counted above).
awk '/^test result:/ { p += $4; f += $6 } END { printf "weir tests: %d passed, %d failed\n", p, f }' "$log"
