#!/usr/bin/env bash
# Installs the real parts of the local stack, idempotently, into a cache that
# survives across runs: nisshi (Kafka protocol), rivven-schema (Schema
# Registry), chdb (ClickHouse engine, in a venv), s3s-fs (an S3 server, for
# the archive) and the build tools the workspace needs.
# A second run skips what is already there.
set -euo pipefail

TOOLS="${WEIR_TOOLS:-$HOME/.cache/weir/tools}"
NISSHI_VERSION=0.7.0
RIVVEN_VERSION=0.0.22
S3S_FS_VERSION=0.14.1
PY_PACKAGES=(chdb-core==26.9.0 lz4==4.4.5 clickhouse-cityhash==1.0.2.6)

log() { printf '[install] %s\n' "$*" >&2; }
mkdir -p "$TOOLS/bin"

# Debian packages: cmake and curl headers build librdkafka (rdkafka's cmake-build);
# protoc compiles the gRPC API.
need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || need_apt+=(libcurl4-openssl-dev)
command -v python3 >/dev/null || need_apt+=(python3)
# A stock Debian python3 has no venv module (ensurepip) until python3-venv.
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v curl >/dev/null || need_apt+=(curl)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# Debian's Chromium runs the browser snippet's test.
command -v chromium >/dev/null || need_apt+=(chromium)
# Node and npm run Segment's Node SDK in the Segment API's tests.
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python side of the ClickHouse server, in a virtual environment of its own
# under the tools cache: a stock Debian python refuses installs into the
# system (PEP 668), and the stack must not depend on what a machine's
# python3 happens to have. part.sh and tests/run.sh use $TOOLS/venv/bin/python.
PY_VENV="$TOOLS/venv"
if ! "$PY_VENV/bin/python" -c 'import chdb, lz4.frame, clickhouse_cityhash' 2>/dev/null; then
  log "pip: ${PY_PACKAGES[*]} into $PY_VENV"
  rm -rf "$PY_VENV"
  python3 -m venv "$PY_VENV"
  "$PY_VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

# Segment's own SDKs, from PyPI and npm, pinned: the Segment API's tests
# send through them (tests/segment/). Each in its own directory of the cache.
SEGMENT_PY_VERSION=2.4.0
SEGMENT_NODE_VERSION=3.1.0
SEG_VENV="$TOOLS/venv-segment"
if [ "$("$SEG_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("segment-analytics-python"))' 2>/dev/null)" != "$SEGMENT_PY_VERSION" ]; then
  log "pip: segment-analytics-python==$SEGMENT_PY_VERSION into $SEG_VENV"
  rm -rf "$SEG_VENV"
  python3 -m venv "$SEG_VENV"
  "$SEG_VENV/bin/pip" install -q --disable-pip-version-check "segment-analytics-python==$SEGMENT_PY_VERSION"
fi
SEG_NODE="$TOOLS/node-segment"
if [ "$(node -p "require('$SEG_NODE/node_modules/@segment/analytics-node/package.json').version" 2>/dev/null)" != "$SEGMENT_NODE_VERSION" ]; then
  log "npm: @segment/analytics-node@$SEGMENT_NODE_VERSION into $SEG_NODE"
  rm -rf "$SEG_NODE"
  mkdir -p "$SEG_NODE"
  npm install --silent --no-audit --no-fund --prefix "$SEG_NODE" "@segment/analytics-node@$SEGMENT_NODE_VERSION" >/dev/null
fi

installed_version() { "$TOOLS/bin/$1" --version 2>/dev/null | awk '{print $2}'; }

# nisshi: its locked dependencies need rustc >= 1.96, so it builds on nightly.
if [ "$(installed_version nisshi)" != "$NISSHI_VERSION" ]; then
  log "building nisshi $NISSHI_VERSION (about 13 minutes on 2 cores)"
  CARGO_TARGET_DIR="$TOOLS/target-nisshi" cargo +nightly install --locked --quiet nisshi \
    --version "$NISSHI_VERSION" --no-default-features --features libsql --root "$TOOLS"
  rm -rf "$TOOLS/target-nisshi"
fi

if [ "$(installed_version rivven-schema)" != "$RIVVEN_VERSION" ]; then
  log "building rivven-schema $RIVVEN_VERSION"
  CARGO_TARGET_DIR="$TOOLS/target-rivven" cargo install --locked --quiet rivven-schema \
    --version "$RIVVEN_VERSION" --root "$TOOLS"
  rm -rf "$TOOLS/target-rivven"
fi

# s3s-fs: an S3-protocol server on a directory, from crates.io (its `binary`
# feature), for the archive's S3 path. 0.14.1 builds on stable Rust (later
# releases need 1.96); about 2 minutes on 2 cores.
if [ "$(installed_version s3s-fs)" != "$S3S_FS_VERSION" ]; then
  log "building s3s-fs $S3S_FS_VERSION"
  CARGO_TARGET_DIR="$TOOLS/target-s3s" cargo install --locked --quiet s3s-fs \
    --version "$S3S_FS_VERSION" --features binary --root "$TOOLS"
  rm -rf "$TOOLS/target-s3s"
fi

# crabka-broker 0.3.8, a second Kafka broker with faithful transactions
# (aborted-record filtering, transaction timeouts), only when asked:
# WEIR_BROKERS=nisshi,crabka. Its 0.3.x releases are yanked (the project
# was renamed and the new name is not published), so `cargo install` refuses
# them; the package itself is still served, with its own Cargo.lock, from
# which the yanked dependencies resolve. Pinned by checksum (the registry
# index's). It declares rust-version 1.96, hence nightly, as for nisshi.
# About 8 minutes on 2 cores.
CRABKA_VERSION=0.3.8
CRABKA_SHA256=062fa98460fe2b02255966161edda38e856e5547c0f8796d14c2854e40e11441
# Our patches, each a bug weir's suite met through librdkafka (docs/testing.md,
# "Two brokers"): deploy/local/crabka-0.3.8-*.patch. The stamp names the
# version and the patches, so a changed patch rebuilds.
CRABKA_PATCHES=("$(cd "$(dirname "$0")" && pwd)"/crabka-$CRABKA_VERSION-*.patch)
CRABKA_STAMP="$CRABKA_VERSION $(cat "${CRABKA_PATCHES[@]}" | sha256sum | cut -c1-16)"
if [[ ",${WEIR_BROKERS:-nisshi}," == *",crabka,"* ]] \
  && [ "$(cat "$TOOLS/bin/crabka-broker.stamp" 2>/dev/null)" != "$CRABKA_STAMP" ]; then
  log "building crabka-broker $CRABKA_VERSION, patched (about 8 minutes on 2 cores)"
  src="$(mktemp -d)"
  curl -sSfL -o "$src/crabka.crate" \
    "https://static.crates.io/crates/crabka-broker/crabka-broker-$CRABKA_VERSION.crate"
  echo "$CRABKA_SHA256  $src/crabka.crate" | sha256sum -c --quiet
  tar xzf "$src/crabka.crate" -C "$src"
  (cd "$src/crabka-broker-$CRABKA_VERSION" && git apply "${CRABKA_PATCHES[@]}")
  (cd "$src/crabka-broker-$CRABKA_VERSION" \
    && CARGO_TARGET_DIR="$TOOLS/target-crabka" cargo +nightly build --locked --release --quiet --bin crabka-broker)
  # Through a rename: a broker still running keeps its old binary.
  cp "$TOOLS/target-crabka/release/crabka-broker" "$TOOLS/bin/crabka-broker.new"
  mv -f "$TOOLS/bin/crabka-broker.new" "$TOOLS/bin/crabka-broker"
  echo "$CRABKA_STAMP" > "$TOOLS/bin/crabka-broker.stamp"
  rm -rf "$TOOLS/target-crabka" "$src"
fi

# ---------------------------------------------------------------------------
# Kubernetes manifests (deploy/k8s), for tests/tests/deploy_k8s.rs: kubectl
# 1.20 from Debian's kubernetes-client (its `kubectl kustomize` is kustomize
# v2.0.3) renders the overlays, PyPI's kubernetes-validate checks them against
# the Kubernetes JSON schemas. The .deb is unpacked into the cache rather than
# installed: it conflicts with other kubectl packages, and the test must use
# this kubectl, not whichever one a machine already has.
K8S_DIR="$TOOLS/k8s"
K8S_VALIDATE_VERSION=1.31.0
if ! "$K8S_DIR/bin/kubectl" version --client 2>/dev/null | grep -q 'GitVersion:"v1\.20\.'; then
  log "kubectl 1.20 (Debian kubernetes-client) into $K8S_DIR/bin"
  deb_dir="$(mktemp -d)"
  # As root, apt downloads as the _apt user, which cannot write to mktemp's
  # private directory: run the download unsandboxed instead (no warning).
  apt_opts=(-qq)
  if [ "$(id -u)" = 0 ]; then apt_opts+=(-o APT::Sandbox::User=root); fi
  if ! (cd "$deb_dir" && apt-get download "${apt_opts[@]}" kubernetes-client >/dev/null 2>&1); then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    (cd "$deb_dir" && apt-get download "${apt_opts[@]}" kubernetes-client >/dev/null)
  fi
  rm -rf "$K8S_DIR/deb" && mkdir -p "$K8S_DIR/deb"
  dpkg-deb -x "$deb_dir"/kubernetes-client_*.deb "$K8S_DIR/deb"
  mkdir -p "$K8S_DIR/bin"
  mv -f "$K8S_DIR/deb/usr/bin/kubectl" "$K8S_DIR/bin/kubectl"
  rm -rf "$deb_dir" "$K8S_DIR/deb"
fi
K8S_VENV="$TOOLS/venv-k8s"
if [ "$("$K8S_VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "$K8S_VALIDATE_VERSION" ]; then
  log "pip: kubernetes-validate==$K8S_VALIDATE_VERSION into $K8S_VENV"
  rm -rf "$K8S_VENV"
  python3 -m venv "$K8S_VENV"
  "$K8S_VENV/bin/pip" install -q --disable-pip-version-check \
    "kubernetes-validate==$K8S_VALIDATE_VERSION"
fi
# ---------------------------------------------------------------------------
# Monitoring (deploy/prometheus, tests/tests/alerts*): Prometheus 2.42 with
# promtool and Alertmanager 0.25 from Debian's prometheus and
# prometheus-alertmanager packages, unpacked into the cache like kubectl
# (installing them would start system services), and PyPI's aiosmtpd, the
# SMTP server the alert tests read Alertmanager's e-mails from.
# Debian's Alertmanager reads its built-in notification templates from
# /usr/share/prometheus/alertmanager/ rather than from the binary; they come
# from the package's -dev source package, and are the one thing put outside
# the cache.
MON_DIR="$TOOLS/monitoring"
AM_SHARE=/usr/share/prometheus/alertmanager
if ! "$MON_DIR/bin/promtool" --version 2>/dev/null | grep -q 'version 2\.42\.' \
  || ! "$MON_DIR/bin/alertmanager" --version 2>/dev/null | grep -q 'version 0\.25\.' \
  || [ ! -f "$AM_SHARE/default.tmpl" ] || [ ! -f "$AM_SHARE/email.tmpl" ]; then
  log "prometheus 2.42 and alertmanager 0.25 (Debian) into $MON_DIR/bin"
  deb_dir="$(mktemp -d)"
  apt_opts=(-qq)
  if [ "$(id -u)" = 0 ]; then apt_opts+=(-o APT::Sandbox::User=root); fi
  mon_debs=(prometheus prometheus-alertmanager golang-github-prometheus-alertmanager-dev)
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  if ! (cd "$deb_dir" && apt-get download "${apt_opts[@]}" "${mon_debs[@]}" >/dev/null 2>&1); then
    $SUDO apt-get update -qq
    (cd "$deb_dir" && apt-get download "${apt_opts[@]}" "${mon_debs[@]}" >/dev/null)
  fi
  rm -rf "$MON_DIR" && mkdir -p "$MON_DIR/bin"
  for deb in "$deb_dir"/*.deb; do dpkg-deb -x "$deb" "$deb_dir/x"; done
  mv -f "$deb_dir/x/usr/bin/prometheus" "$deb_dir/x/usr/bin/promtool" "$MON_DIR/bin/"
  mv -f "$deb_dir/x/usr/bin/prometheus-alertmanager" "$MON_DIR/bin/alertmanager"
  mv -f "$deb_dir/x/usr/bin/amtool" "$MON_DIR/bin/"
  $SUDO mkdir -p "$AM_SHARE"
  $SUDO cp "$deb_dir"/x/usr/share/gocode/src/github.com/prometheus/alertmanager/template/{default,email}.tmpl "$AM_SHARE/"
  rm -rf "$deb_dir"
fi
AIOSMTPD_VERSION=1.4.6
SMTP_VENV="$TOOLS/venv-smtp"
if [ "$("$SMTP_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("aiosmtpd"))' 2>/dev/null)" != "$AIOSMTPD_VERSION" ]; then
  log "pip: aiosmtpd==$AIOSMTPD_VERSION into $SMTP_VENV"
  rm -rf "$SMTP_VENV"
  python3 -m venv "$SMTP_VENV"
  "$SMTP_VENV/bin/pip" install -q --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION"
fi
# ---------------------------------------------------------------------------

log "tools ready in $TOOLS/bin"
