//! Limits on full listings (`GET /api/some_models/` streamed from PostgreSQL): how many stream
//! at once, each on a connection of its own pool, and how long a client may stop reading one.

use std::time::Duration;

/// Limits of the streamed listings.
#[derive(Debug, Clone, clap::Args)]
pub struct ListingSettings {
    /// Most full listings streamed at once, each holding a PostgreSQL connection of the listing
    /// pool (its size) until the client has read the whole body; beyond it a full listing
    /// answers 503 with `Retry-After` at once. Default: half of `DB_POOL_SIZE`, at least 2.
    #[arg(long, env = "LISTING_MAX_CONCURRENT", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub listing_max_concurrent: Option<u32>,
    /// How long a client may stop reading a response body (nginx's `send_timeout`) before the
    /// body is cut and its PostgreSQL connection freed.
    #[arg(long, env = "HTTP_SEND_TIMEOUT_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_send_timeout_ms: u64,
}

impl Default for ListingSettings {
    fn default() -> Self {
        Self {
            listing_max_concurrent: None,
            http_send_timeout_ms: 15_000,
        }
    }
}

impl ListingSettings {
    /// Most full listings at once: `LISTING_MAX_CONCURRENT`, else half of `db_pool_size`, at
    /// least 2.
    pub fn max_concurrent(&self, db_pool_size: u32) -> usize {
        match self.listing_max_concurrent {
            Some(n) => n as usize,
            None => (db_pool_size as usize / 2).max(2),
        }
    }

    /// `HTTP_SEND_TIMEOUT_MS`.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.http_send_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::parse;

    #[test]
    fn the_limit_defaults_to_half_the_pool_and_at_least_two() {
        let listing = parse(&["--database-url", "postgres://h/d"])
            .unwrap()
            .settings
            .listing;
        assert_eq!(listing.max_concurrent(16), 8);
        assert_eq!(listing.max_concurrent(3), 2);
        assert_eq!(listing.send_timeout().as_millis(), 15_000);
        let set = parse(&[
            "--database-url",
            "postgres://h/d",
            "--listing-max-concurrent",
            "5",
            "--http-send-timeout-ms",
            "2000",
        ])
        .unwrap()
        .settings
        .listing;
        assert_eq!(set.max_concurrent(16), 5);
        assert_eq!(set.send_timeout().as_millis(), 2_000);
        assert!(parse(&[
            "--database-url",
            "postgres://h/d",
            "--listing-max-concurrent",
            "0"
        ])
        .is_err());
    }
}
