//! What the workers export to Prometheus: batch sizes and latencies, recorded as each batch is
//! applied ([`BatchMetrics`]), and at scrape time each worker's state and its partitions'
//! counters, read from their [`WorkerStats`] ([`WorkersCollector`]). The registry they go to is
//! `metrics`'.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::ConstCounter,
        family::Family,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

use super::stats::{GroupStatus, PartitionStatus, WorkerState, WorkerStats, WorkerStatus};

/// Labels of one worker's partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub worker: String,
    pub topic: String,
    pub partition: i32,
}

/// The workers' batch histograms; cheap to clone (the families are shared).
#[derive(Clone)]
pub struct BatchMetrics {
    records: Family<PartitionLabels, Histogram>,
    duration: Family<PartitionLabels, Histogram>,
}

impl Default for BatchMetrics {
    /// Histograms not (yet) registered anywhere.
    fn default() -> Self {
        Self {
            records: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 4.0, 10))
            }),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
            }),
        }
    }
}

impl BatchMetrics {
    /// The batch histograms, registered with `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "worker_batch_records",
            "Records per batch a worker applied",
            metrics.records.clone(),
        );
        registry.register(
            "worker_batch_duration_seconds",
            "Time to apply a batch (transaction and dead letters), in seconds",
            metrics.duration.clone(),
        );
        metrics
    }

    /// Records one applied batch.
    pub fn observe(&self, labels: &PartitionLabels, records: usize, seconds: f64) {
        self.records.get_or_create(labels).observe(records as f64);
        self.duration.get_or_create(labels).observe(seconds);
    }
}

/// Reads, at scrape time, each worker's state and the counters its partitions keep.
pub struct WorkersCollector {
    /// Every worker's stats, in [`WorkerKind::ALL`](super::WorkerKind::ALL)'s order.
    workers: Vec<Arc<WorkerStats>>,
}

impl WorkersCollector {
    /// A collector reading `workers`.
    pub fn new(workers: Vec<Arc<WorkerStats>>) -> Self {
        Self { workers }
    }
}

impl std::fmt::Debug for WorkersCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkersCollector").finish_non_exhaustive()
    }
}

/// A per-partition number: its name, help, and how to read it (`None`: not exported).
type Read<T> = (
    &'static str,
    &'static str,
    fn(&PartitionStatus) -> Option<T>,
);

const COUNTERS: [Read<u64>; 5] = [
    ("records_applied", "Records applied to the table", |p| {
        Some(p.records_applied)
    }),
    (
        "records_invalid",
        "Records that could not be applied (invalid or refused)",
        |p| Some(p.records_invalid),
    ),
    (
        "records_dead_lettered",
        "Records written to the dead-letter topic",
        |p| Some(p.records_dead_lettered),
    ),
    (
        "offset_resets",
        "Restarts from the earliest offset (out of range, recreated topic)",
        |p| Some(p.offset_resets),
    ),
    (
        "records_unkeyed",
        "Records without a key on a topic with more than one partition (order per id is lost)",
        |p| Some(p.records_unkeyed),
    ),
];

const GAUGES: [Read<i64>; 3] = [
    (
        "consumer_lag",
        "Records not yet applied: high watermark minus next offset",
        |p| p.lag,
    ),
    (
        "partition_failed_attempts",
        "Attempts that failed in a row (0 while the partition makes progress)",
        |p| Some(p.failed_attempts as i64),
    ),
    (
        "partition_stalled",
        "1 while the partition is stalled on a record batch it cannot decode, else 0",
        |p| Some(i64::from(p.stalled_at_offset.is_some())),
    ),
];

impl Collector for WorkersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Only the partitions this replica consumes now: every replica exports the partitions
        // it owns, so summing over replicas counts each once.
        let statuses: Vec<_> = self
            .workers
            .iter()
            .map(|stats| {
                let mut status = stats.status();
                status.partitions = stats.local_partitions();
                status
            })
            .collect();

        let mut family = encoder.encode_descriptor(
            "worker_running",
            "1 while the worker runs (state running, retrying or stalled), else 0",
            None,
            MetricType::Gauge,
        )?;
        for status in &statuses {
            let running = matches!(
                status.state,
                WorkerState::Running | WorkerState::Retrying | WorkerState::Stalled
            );
            ConstGauge::new(i64::from(running))
                .encode(family.encode_family(&[("worker", status.name.as_str())])?)?;
        }

        let mut family = encoder.encode_descriptor(
            "worker_fetch_held_bytes",
            "Record bytes the worker's partitions hold (fetched, not yet applied) or reserve for fetches in flight, against KAFKA_FETCH_BUDGET_BYTES",
            None,
            MetricType::Gauge,
        )?;
        for (stats, status) in self.workers.iter().zip(&statuses) {
            ConstGauge::new(stats.fetch_held_bytes())
                .encode(family.encode_family(&[("worker", status.name.as_str())])?)?;
        }

        encode_group(&mut encoder, &statuses)?;
        for (name, help, read) in COUNTERS {
            encode_per_partition(
                &mut encoder,
                &statuses,
                name,
                help,
                MetricType::Counter,
                |p| read(p).map(ConstCounter::new),
            )?;
        }
        for (name, help, read) in GAUGES {
            encode_per_partition(
                &mut encoder,
                &statuses,
                name,
                help,
                MetricType::Gauge,
                |p| read(p).map(ConstGauge::new),
            )?;
        }
        Ok(())
    }
}

/// Each worker's consumer-group membership: rebalances, time spent in them, partitions held.
fn encode_group(
    encoder: &mut DescriptorEncoder,
    statuses: &[WorkerStatus],
) -> Result<(), std::fmt::Error> {
    type GroupRead = (
        &'static str,
        &'static str,
        MetricType,
        fn(&GroupStatus) -> f64,
    );
    const GROUP: [GroupRead; 3] = [
        (
            "group_rebalances",
            "Consumer-group rebalances this replica took part in",
            MetricType::Counter,
            |g| g.rebalances as f64,
        ),
        (
            "group_rebalance_seconds",
            "Time this replica spent rebalancing (applying nothing), in seconds",
            MetricType::Counter,
            |g| g.rebalancing_seconds,
        ),
        (
            "group_assigned_partitions",
            "Partitions the consumer group assigned to this replica",
            MetricType::Gauge,
            |g| g.assigned_partitions.len() as f64,
        ),
    ];
    for (name, help, metric_type, read) in GROUP {
        let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
        for status in statuses {
            let Some(group) = &status.group else { continue };
            let labels = [
                ("worker", status.name.as_str()),
                ("group", group.group_id.as_str()),
            ];
            let value = read(group);
            match metric_type {
                MetricType::Counter => {
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?
                }
                _ => ConstGauge::new(value).encode(family.encode_family(&labels)?)?,
            }
        }
    }
    Ok(())
}

/// One metric family with a value per worker and partition.
fn encode_per_partition<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    statuses: &[WorkerStatus],
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: impl Fn(&PartitionStatus) -> Option<M>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for status in statuses {
        for partition in &status.partitions {
            if let Some(metric) = value(partition) {
                let labels = PartitionLabels {
                    worker: status.name.clone(),
                    topic: status.topic.clone(),
                    partition: partition.partition,
                };
                metric.encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}
