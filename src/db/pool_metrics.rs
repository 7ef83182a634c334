//! What the PostgreSQL pool exports to Prometheus, read at scrape time from deadpool's own
//! status ([`PoolCollector`]). The registry it goes to is `metrics`'.

use deadpool_postgres::Pool;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{gauge::ConstGauge, MetricType},
};

/// Reads the pool's connections and waiters at scrape time.
pub struct PoolCollector {
    pool: Pool,
}

impl PoolCollector {
    /// A collector reading `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolCollector").finish_non_exhaustive()
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pool = self.pool.status();
        let mut family = encoder.encode_descriptor(
            "db_pool_connections",
            "PostgreSQL pool connections by state (idle, in_use) and the pool's maximum (max)",
            None,
            MetricType::Gauge,
        )?;
        let idle = pool.available as i64;
        let in_use = pool.size as i64 - idle;
        for (state, value) in [
            ("idle", idle),
            ("in_use", in_use),
            ("max", pool.max_size as i64),
        ] {
            ConstGauge::new(value).encode(family.encode_family(&[("state", state)])?)?;
        }
        let waiting = encoder.encode_descriptor(
            "db_pool_waiting",
            "Tasks waiting for a PostgreSQL connection",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(pool.waiting as i64).encode(waiting)?;
        Ok(())
    }
}
