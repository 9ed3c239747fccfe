#!/usr/bin/env bash
# Runs every cargo-fuzz target of weir for N minutes each (default 1), on the
# stable toolchain, with AddressSanitizer and libFuzzer's memory limits.
#
# Usage: fuzz/run.sh [minutes] [target...]
#
#   fuzz/run.sh              # every target, 1 minute each
#   fuzz/run.sh 10           # every target, 10 minutes each
#   fuzz/run.sh 5 processor_avro aggregator_query
#
# Environment:
#   WEIR_TOOLS=<dir>        where cargo-fuzz is installed (bin/ under it);
#                           default ~/.cache/weir/tools
#   FUZZ_JOBS=<n>           libFuzzer processes per target (-fork=n; default 1)
#   FUZZ_SANITIZER=<name>   address (default) or none (faster, no malloc limit)
#   FUZZ_RSS_MB=<n>         RSS limit of a worker (default 2048)
#   FUZZ_MALLOC_MB=<n>      largest single allocation allowed (default 256)
#
# cargo-fuzz needs nightly compiler flags (-Zsanitizer, sancov passes);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Each target starts
# from its seed corpus fuzz/corpus/<target>/; new inputs the fuzzer finds
# interesting go to fuzz/target/corpus/<target>/ (not committed; merge the
# worthwhile ones into the seeds with `cargo fuzz cmin`). A crash, leak,
# timeout or over-limit allocation stops the run with the input in
# fuzz/artifacts/<target>/: fix the bug, then add the input to
# fuzz/corpus/<target>/ so tests/tests/fuzz_corpus.rs replays it on stable.
#
# "No unbounded allocation": -malloc_limit_mb fails a run on any single
# allocation above FUZZ_MALLOC_MB (needs the sanitizer's malloc hooks), and
# -rss_limit_mb on a worker whose resident memory passes FUZZ_RSS_MB.
set -euo pipefail

minutes="${1:-1}"
shift || true
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${WEIR_TOOLS:-$HOME/.cache/weir/tools}"
export PATH="$tools/bin:$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
# The stable toolchain even where a rustup override or nightly is the default.
export RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-stable}"
CARGO_FUZZ_VERSION=0.13.2

if [[ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$tools"
fi

cd "$here"
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
sanitizer="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-1}"
seconds=$((minutes * 60))

parallel=()
if [[ "$jobs" -gt 1 ]]; then
    parallel=(-fork="$jobs")
fi

echo "==> building (sanitizer: $sanitizer)"
cargo fuzz build -s "$sanitizer"

status=0
for t in "${targets[@]}"; do
    echo "==> $t for $minutes min"
    work="$here/target/corpus/$t"
    mkdir -p "$work" "$here/artifacts/$t"
    # The first corpus directory receives new inputs; the seeds are read only.
    if ! cargo fuzz run -s "$sanitizer" "$t" "$work" "$here/corpus/$t" -- \
        -max_total_time="$seconds" \
        -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
        -malloc_limit_mb="${FUZZ_MALLOC_MB:-256}" \
        -timeout=10 \
        -max_len=65536 \
        "${parallel[@]}" \
        -print_final_stats=1; then
        echo "!!! $t failed: see fuzz/artifacts/$t/" >&2
        status=1
    fi
done
exit "$status"
