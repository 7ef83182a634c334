//! What the PostgreSQL pools export to Prometheus, read at scrape time from deadpool's own
//! status ([`PoolCollector`]): the main pool (workers, `write_to_kafka`, readiness, small pages)
//! and the listing pool (streamed full listings), each under its `pool` label. The registry they
//! go to is `metrics`'.

use deadpool_postgres::Pool;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{gauge::ConstGauge, MetricType},
};

/// Reads the pools' connections and waiters at scrape time.
pub struct PoolCollector {
    /// Each pool under its `pool` label: `main`, `listing`.
    pools: Vec<(&'static str, Pool)>,
}

impl PoolCollector {
    /// A collector reading each pool, labelled with its name.
    pub fn new(pools: Vec<(&'static str, Pool)>) -> Self {
        Self { pools }
    }
}

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolCollector").finish_non_exhaustive()
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses: Vec<_> = self
            .pools
            .iter()
            .map(|(name, pool)| (*name, pool.status()))
            .collect();
        let mut family = encoder.encode_descriptor(
            "db_pool_connections",
            "PostgreSQL pool connections by pool (main, listing) and state (idle, in_use), and \
             each pool's maximum (max)",
            None,
            MetricType::Gauge,
        )?;
        for (name, status) in &statuses {
            let idle = status.available as i64;
            let in_use = status.size as i64 - idle;
            for (state, value) in [
                ("idle", idle),
                ("in_use", in_use),
                ("max", status.max_size as i64),
            ] {
                ConstGauge::new(value)
                    .encode(family.encode_family(&[("pool", *name), ("state", state)])?)?;
            }
        }
        let mut waiting = encoder.encode_descriptor(
            "db_pool_waiting",
            "Tasks waiting for a PostgreSQL connection, by pool (main, listing)",
            None,
            MetricType::Gauge,
        )?;
        for (name, status) in &statuses {
            ConstGauge::new(status.waiting as i64)
                .encode(waiting.encode_family(&[("pool", *name)])?)?;
        }
        Ok(())
    }
}
