# syntax=docker/dockerfile:1
# Ferry's container image: one binary, `ferry serve` by default (`docker run IMAGE connector …` runs a connector).
# Build from the repository's root:   docker build -t ferry:local .
# docs/deployment.md says what this file was and was not checked with (no Docker engine on the development
# machines: it has not been built there).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build ---------------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# SQLite and jemalloc are compiled from source by their crates: the image's gcc and make are enough.
COPY . .
# The cache mounts keep the crate registry and the target directory between builds (BuildKit); the binary is
# copied out of the cached target directory and stripped (the release profile keeps line tables for backtraces,
# which a shipped binary does not need: about a third of its size).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ferry \
    && install -D -m 0755 target/release/ferry /out/ferry \
    && strip /out/ferry \
    && /out/ferry --version

# ---- runtime -------------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: connectors, OIDC discovery and https upstreams verify against the system's roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ferry \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin ferry \
    && install -d -m 0700 -o 10001 -g 10001 /data
COPY --from=build /out/ferry /usr/local/bin/ferry

# Listen on every interface of the container (the binary's default is loopback only). The admin listener
# (management API, /metrics) only opens on nodes with the management role; publish it to operators only.
ENV FERRY_LISTEN=0.0.0.0:8080 \
    FERRY_ADMIN_LISTEN=0.0.0.0:8081 \
    FERRY_DATA_DIR=/data
# The embedded store (SQLite) and a generated node id live here; a cluster node on PostgreSQL with FERRY_NODE_ID
# set writes nothing to it.
VOLUME /data
WORKDIR /data
EXPOSE 8080 8081
# numeric, so that Kubernetes' runAsNonRoot can check it
USER 10001:10001

# /healthz answers 200 while the process runs. The image has no curl: bash's /dev/tcp sends the request to the
# port of FERRY_LISTEN. With TLS on the listener (FERRY_TLS_CERT) this plain-HTTP check fails: turn it off
# (`--no-healthcheck`, compose `healthcheck: disable: true`) or check from outside. A connector
# (`ferry connector`) has no listener: run it with the check turned off too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${FERRY_LISTEN##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"$status\" = 200 ]"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["serve"]
