#!/usr/bin/env bash
# Runs the README's two commands as a new user would: in a fresh clone of
# this repository's HEAD, with an empty cargo home (no registry cache, no
# installed tools), an empty weir tools cache, no pip or npm cache and no
# .local/ state. It prints how long each command took, and fails if either
# fails. Run it before resolving an issue: a machine with warm caches hides
# missing install steps.
#
# Usage: tests/fresh-machine.sh [--keep]
#
#   --keep                 keep the scratch directory (clone, caches, logs)
#   WEIR_FRESH_DIR=<dir>   where to put it (default: a new mktemp -d)
#
# What stays shared with the machine: the Rust toolchains (rustup), Debian's
# packages (install.sh adds what it needs with apt-get) and python3 itself.
# The stack of `deploy/local/up.sh` uses the default ports, so nothing else
# may hold them; it is stopped before `tests/run.sh` starts.
set -euo pipefail

keep=0
[[ "${1:-}" == "--keep" ]] && keep=1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="${WEIR_FRESH_DIR:-$(mktemp -d -t weir-fresh.XXXXXX)}"
mkdir -p "$scratch"
cleanup() {
    # The stack may still run if up.sh failed half-way.
    [[ -x "$scratch/weir/deploy/local/down.sh" ]] && (cd "$scratch/weir" && deploy/local/down.sh >/dev/null 2>&1 || true)
    if [[ $keep == 0 ]]; then rm -rf "$scratch"; else echo "kept $scratch"; fi
}
trap cleanup EXIT

git clone --quiet --no-local "$root" "$scratch/weir"
echo "fresh clone of $(git -C "$root" rev-parse --short HEAD) in $scratch/weir"

# Empty caches. rustup's toolchains stay (RUSTUP_HOME is untouched) and its
# proxies stay on PATH; everything cargo downloads or installs goes to the
# new CARGO_HOME.
export CARGO_HOME="$scratch/cargo-home"
export WEIR_TOOLS="$scratch/tools"
export PIP_CACHE_DIR="$scratch/pip-cache"
export npm_config_cache="$scratch/npm-cache"
export XDG_CACHE_HOME="$scratch/cache"
export PATH="$HOME/.cargo/bin:$PATH"
unset CARGO_TARGET_DIR WEIR_LOCAL_DIR
mkdir -p "$CARGO_HOME" "$WEIR_TOOLS"

run() { # label, log, command...
    local label="$1" log="$2" start status
    shift 2
    echo "== $label (log: $log)"
    start=$(date +%s)
    set +e
    (cd "$scratch/weir" && "$@") >"$log" 2>&1
    status=$?
    set -e
    times+=("$label: $(( $(date +%s) - start )) s, exit $status")
    if [[ $status != 0 ]]; then
        tail -n 40 "$log"
        summary
        echo "FAILED: $label" >&2
        keep=1
        exit 1
    fi
}
summary() { printf '%s\n' "fresh-machine times:" "${times[@]/#/  }"; }
times=()

run "deploy/local/up.sh" "$scratch/up.log" deploy/local/up.sh
tail -n 4 "$scratch/up.log"
(cd "$scratch/weir" && deploy/local/down.sh >/dev/null)
run "tests/run.sh" "$scratch/run.log" tests/run.sh
grep -E '^weir tests:' "$scratch/run.log"
summary
echo "fresh machine: PASSED"
