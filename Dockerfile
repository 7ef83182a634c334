# rowsync as a fully static musl binary (with jemalloc) in an otherwise empty image.
# Build: docker build -t rowsync .     Run: docker run --env-file .env -p 8000:8000 rowsync
# scripts/check-release runs this build stage's cargo command on the host and proves the result:
# static, starts, serves, passes `rowsync healthcheck`, stops cleanly on SIGTERM.

FROM rust:1-bookworm AS build
# musl-tools: jemalloc's C code and the lz4 and zstd codecs' C libraries are compiled with musl-gcc. Debian's version is whatever bookworm has.
# hadolint ignore=DL3008
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY sql sql
# rskafka 0.6.0 with rowsync's fix for Nagle stalls, wired in by Cargo.toml's [patch.crates-io].
COPY vendor vendor
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/rowsync /rowsync

# The image is the binary and nothing else: no shell, no libc, no CA bundle (for TLS the binary
# carries Mozilla's roots; a private CA is mounted and named by KAFKA_SSL_CA_LOCATION/DB_SSLROOTCERT).
FROM scratch
COPY --from=build /rowsync /rowsync
USER 10001:10001
EXPOSE 8000
ENV LISTEN_ADDR=0.0.0.0:8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["/rowsync", "healthcheck"]
ENTRYPOINT ["/rowsync"]
