# weir's container image: the four stage binaries (ingest, processor,
# aggregator, archiver) in one image, compiled by one `cargo build`. The
# container's command picks the stage: `docker run weir:dev processor`, or
# `command:` in deploy/compose/compose.yaml. Without a command it runs ingest.
#
#   docker build -t weir:dev .
#   docker build --build-arg CARGO_FEATURES="weir-ingest/some-feature" -t weir:dev .
#
# Build argument:
#   CARGO_FEATURES  handed to `cargo build --features`; empty by default (the
#                   stages have none on by default; the archiver offers `gcs`
#                   and `azure` for gs:// and az:// stores). The build selects
#                   four packages, so name each feature with its package
#                   (`weir-archiver/gcs`, `rdkafka/ssl`). The build is --locked: a
#                   feature that pulls a crate missing from Cargo.lock needs a
#                   `cargo update` first, and a native one (OpenSSL, SASL) needs
#                   its Debian -dev package added to the apt line below.
#
# Both base images are pinned by tag and digest; move them together
# (`docker buildx imagetools inspect <image>:<tag>` prints the digest).
# tests/tests/deploy_compose/ checks this file (pins, stages, user, binaries,
# the archiver's store directory).

# ---- build: Debian 12 (bookworm), the release the runtime image comes from,
# so the binaries need no newer glibc than the runtime has.
FROM rust:1.94-slim-bookworm@sha256:cf9dd0ec73e75f827fe59123fff9dc65af1a1c8363c3c31ee8d7f8ad0b6a5fb2 AS build

# The packages deploy/local/install.sh installs for a local build (cmake and
# the curl headers for librdkafka's cmake build, protoc for ingest's gRPC code),
# plus what the slim image lacks and a desktop has: make and g++ for CMake,
# zlib's headers and pkg-config for libz-sys. busybox-static provides the
# runtime image's health probe (see the runtime stage).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake make g++ pkg-config zlib1g-dev libcurl4-openssl-dev protobuf-compiler busybox-static \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Manifests first: the dependency download is a layer of its own, reused until
# a Cargo.toml or Cargo.lock changes. Loading the workspace needs every
# member's manifest and a target, so an empty lib.rs stands in for each crate
# until the real sources are copied over it.
COPY Cargo.toml Cargo.lock ./
COPY core/Cargo.toml core/
COPY ingest/Cargo.toml ingest/
COPY processor/Cargo.toml processor/
COPY aggregator/Cargo.toml aggregator/
COPY archiver/Cargo.toml archiver/
COPY client/Cargo.toml client/
COPY tests/Cargo.toml tests/
RUN for member in core ingest processor aggregator archiver client tests; do \
      mkdir -p "$member/src" && touch "$member/src/lib.rs"; \
    done \
 && cargo fetch --locked

# Sources, the vendored assets under core/assets, the Avro schemas, the proto
# file and the SQL migrations (.dockerignore keeps target/ and .git out).
COPY . .

ARG CARGO_FEATURES=""
# target/ is a cache mount, so a source change recompiles weir's crates and not
# every dependency. A cache mount is not part of the image, so the results are
# copied out to /out in the same step. libz.so.1 goes along because rdkafka
# links the system zlib and distroless cc-debian12 has none.
RUN --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
      -p weir-ingest -p weir-processor -p weir-aggregator -p weir-archiver \
      --features "$CARGO_FEATURES" \
 && multiarch="$(gcc -print-multiarch)" \
 && mkdir -p /out/bin "/out/rootfs/lib/$multiarch" \
 && cp target/release/ingest target/release/processor target/release/aggregator \
        target/release/archiver /out/bin/ \
 && cp -L "/lib/$multiarch/libz.so.1" "/out/rootfs/lib/$multiarch/" \
 && cp -L "$(command -v busybox)" /out/wget \
 && mkdir -p /out/archive

# ---- runtime: distroless (glibc, libgcc, CA certificates; no shell, no package
# manager), as the image's unprivileged nonroot user.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f AS runtime
LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="weir's ingest, processor, aggregator and archiver; the command picks one" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/rootfs/ /
COPY --from=build /out/bin/ingest /out/bin/processor /out/bin/aggregator /out/bin/archiver /usr/local/bin/
# Static busybox, answering to the name wget: the one tool in the image besides
# weir, so a healthcheck can GET /readyz (there is no shell or curl to do it).
COPY --from=build /out/wget /usr/local/bin/wget
# The archiver's default store, file:///var/lib/weir/archive: an empty
# directory owned by the runtime user. Mount a volume on it to keep the
# archive (a new Docker named volume takes this directory's owner, so uid
# 65532 may write it), or give the archiver an object store (store.url).
COPY --from=build --chown=65532:65532 /out/archive /var/lib/weir/archive
USER 65532:65532
# ingest HTTP and gRPC, processor, aggregator, archiver: the default `listen`
# ports.
EXPOSE 8080 50051 9102 8090 8091
CMD ["ingest"]
