//! Limits of the API's connections: how long a request's headers (and an idle kept-alive
//! connection) may take, and how many connections may be open at once.

use std::time::Duration;

/// Limits of the API's HTTP connections (see "Limits" in the README).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpSettings {
    /// A request's headers must arrive within this many milliseconds of the connection (or the
    /// previous response), else the connection is closed (nginx's `client_header_timeout`).
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_read_timeout_ms: u64,
    /// An idle kept-alive connection is closed after this many milliseconds without a new
    /// request (nginx's `keepalive_timeout`); keep it above the load balancer's idle timeout.
    /// hyper 1.12 bounds that wait with its header timer, so the shorter of the two applies.
    #[arg(long, env = "HTTP_KEEPALIVE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_keepalive_timeout_ms: u64,
    /// Most connections open at once; beyond it a new connection is closed as soon as accepted.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_max_connections: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            http_header_read_timeout_ms: 60_000,
            http_keepalive_timeout_ms: 60_000,
            http_max_connections: 1024,
        }
    }
}

impl HttpSettings {
    /// Bound on reading a request's headers.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.http_header_read_timeout_ms)
    }

    /// Bound on an idle kept-alive connection.
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.http_keepalive_timeout_ms)
    }

    /// Most connections open at once.
    pub fn max_connections(&self) -> usize {
        self.http_max_connections as usize
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{invalid, parse, URL};

    #[test]
    fn defaults() {
        let http = parse(&[URL, "postgres://u@h/db"])
            .expect("valid")
            .settings
            .http;
        assert_eq!(http.http_header_read_timeout_ms, 60_000);
        assert_eq!(http.http_keepalive_timeout_ms, 60_000);
        assert_eq!(http.http_max_connections, 1024);
    }

    #[test]
    fn zero_is_refused() {
        assert!(
            invalid(&[URL, "postgres://u@h/db", "--http-max-connections", "0"])
                .contains("http-max-connections")
        );
        assert!(invalid(&[
            URL,
            "postgres://u@h/db",
            "--http-header-read-timeout-ms",
            "0"
        ])
        .contains("header-read-timeout"));
    }
}
