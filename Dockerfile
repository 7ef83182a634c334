# rowsync as a static musl binary in an empty image.
# Build: docker build -t rowsync .     Run: docker run --env-file .env -p 8000:8000 rowsync

FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY sql sql
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/rowsync /rowsync

FROM scratch
COPY --from=build /rowsync /rowsync
USER 10001:10001
EXPOSE 8000
ENV LISTEN_ADDR=0.0.0.0:8000
ENTRYPOINT ["/rowsync"]
