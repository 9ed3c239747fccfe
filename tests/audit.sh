#!/usr/bin/env bash
# Supply-chain checks of the workspace with cargo-deny (config: deny.toml):
#
#   licenses, bans, sources  always, offline: they need only Cargo.lock and
#                            the crates' manifests in the cargo registry cache
#   advisories               against the RustSec advisory database, when it
#                            can be fetched (github.com) or a copy is present
#
# Usage: tests/audit.sh
#
#   WEIR_TOOLS=<dir>                 where cargo-deny is installed (bin/ under it);
#                                    default ~/.cache/weir/tools
#   WEIR_AUDIT_REQUIRE_ADVISORIES=1  fail when the advisory database cannot be had
#                                    (default: say so loudly and pass)
#   WEIR_ADVISORY_DB=<git url or path>
#                                    where to clone the advisory database from
#                                    instead of github.com/rustsec/advisory-db
#                                    (a mirror, or a local clone)
#
# cargo-deny is installed from crates.io with `cargo install --locked` if it
# is missing or another version (about 2.5 minutes on 2 cores).
set -euo pipefail

DENY_VERSION=0.20.2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${WEIR_TOOLS:-$HOME/.cache/weir/tools}"
export PATH="$tools/bin:$HOME/.cargo/bin:$PATH"
cd "$root"

if [[ "$(cargo deny --version 2>/dev/null || true)" != "cargo-deny $DENY_VERSION" ]]; then
    echo "==> installing cargo-deny $DENY_VERSION into $tools"
    cargo install --locked --quiet cargo-deny --version "$DENY_VERSION" --root "$tools"
fi

# cargo-deny reads every package in Cargo.lock, those of other platforms
# (Windows, wasm) included, and --frozen reads them only from the registry
# cache. A build fetches just this platform's, so fetch the rest first:
# `cargo fetch` without --target takes every platform's.
echo "==> cargo fetch --locked (every platform's crates, for cargo-deny)"
cargo fetch --locked --quiet

echo "==> cargo deny check licenses bans sources"
cargo deny --frozen check --hide-inclusion-graph licenses bans sources

echo "==> cargo deny check advisories"
upstream=https://github.com/rustsec/advisory-db
if [[ -n "${WEIR_ADVISORY_DB:-}" ]]; then
    # cargo-deny clones with the git CLI: redirect the upstream URL.
    export GIT_CONFIG_COUNT=1
    export GIT_CONFIG_KEY_0="url.${WEIR_ADVISORY_DB}.insteadOf"
    export GIT_CONFIG_VALUE_0="$upstream"
fi
fetch_log="$(mktemp)"
trap 'rm -f "$fetch_log"' EXIT
if cargo deny --locked fetch db 2>"$fetch_log"; then
    cargo deny --frozen check advisories
    echo "advisories: CHECKED against the RustSec database fetched from ${WEIR_ADVISORY_DB:-$upstream}"
else
    echo "advisories: NOT CHECKED: the RustSec advisory database could not be fetched:" >&2
    grep -m1 -E "fatal|ERROR" "$fetch_log" >&2 || true
    echo "  allow github.com, or set WEIR_ADVISORY_DB to a mirror or a local clone of $upstream" >&2
    if [[ "${WEIR_AUDIT_REQUIRE_ADVISORIES:-0}" == 1 ]]; then
        exit 1
    fi
fi
