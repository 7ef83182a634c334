//! Logging: a tracing subscriber writing human-readable lines, or JSON lines with `LOG_FORMAT=json`.
//! `RUST_LOG` filters (default `info,rskafka=error`: the Kafka client logs every internal retry,
//! and rowsync reports failures itself, a few lines a minute).

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rskafka=error"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(fmt::layer().json().flatten_event(true))
            .init();
    } else {
        registry.with(fmt::layer()).init();
    }
}
