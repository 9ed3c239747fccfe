#!/usr/bin/env bash
# Makes the Python venv that runs the Quix Streams peer (quix_processor.py)
# and prints its python as the last line of stdout, for the benchmark to run:
#   PY="$(tests/peer/venv.sh | tail -n1)"
# Idempotent and cached under the tools cache: the venv keeps a copy of the
# requirements.txt it was built from, and is built anew only when that differs.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
TOOLS="${WEIR_TOOLS:-$HOME/.cache/weir/tools}"
VENV="$TOOLS/venv-quix"
REQ="$HERE/requirements.txt"
STAMP="$VENV/requirements.installed.txt"

if ! { [ -x "$VENV/bin/python" ] && cmp -s "$REQ" "$STAMP"; }; then
  echo "[peer] pip: $REQ into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2
  # Written last, so an install that failed half way is retried next time.
  cp "$REQ" "$STAMP"
fi
echo "$VENV/bin/python"
