#!/usr/bin/env bash
# Runs one of the Segment SDK senders with the SDK deploy/local/install.sh
# put in the tools cache: `run.sh python|node <host> <write key> <prefix>
# <tracks> [<pause ms every 50 tracks>]`. Prints one JSON line: the calls
# made, and every error the SDK reported (a batch it gave up on).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
TOOLS="${WEIR_TOOLS:-$HOME/.cache/weir/tools}"
sdk="$1"
shift
case "$sdk" in
  python) exec "$TOOLS/venv-segment/bin/python" "$here/send.py" "$@" ;;
  node) NODE_PATH="$TOOLS/node-segment/node_modules" exec node "$here/send.cjs" "$@" ;;
  *) echo "usage: $0 python|node <host> <write key> <prefix> <tracks> [pause ms]" >&2; exit 2 ;;
esac
