//! The Prometheus registry behind `GET /metrics`, in the Prometheus text format. It knows no other
//! part of rowsync: at assembly (`app`) each part registers its own metrics with
//! [`Metrics::registry_mut`], the request metrics of the HTTP layer, the workers' batches and
//! counters, the response log's and the pool's. Counters a part already keeps are read at scrape
//! time by its collector, so there is one source of truth for each number.

use prometheus_client::registry::Registry;

/// Every metric rowsync exports; names start with `rowsync_`.
pub struct Metrics {
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            registry: Registry::with_prefix("rowsync"),
        }
    }

    /// Where each part registers its metrics and collectors, at assembly (before serving).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("encoding metrics into a string");
        text
    }
}
