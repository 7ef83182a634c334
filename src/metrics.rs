//! Prometheus metrics, served at `GET /metrics` in the Prometheus text format. Request and batch
//! histograms are recorded as things happen; counters the workers and the response log already
//! keep are read at scrape time, so there is one source of truth for each number.

use std::sync::Arc;

use deadpool_postgres::Pool;
use poem::{Endpoint, IntoResponse, Request, Response};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

use crate::{
    http::response_log::ResponseLogStats,
    workers::{WorkerKind, WorkerRegistry, WorkerState},
};

/// Labels of an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The OpenAPI operation id, or `none` (unknown path, `/docs`, …).
    pub operation: String,
    pub method: String,
    pub status: u16,
}

/// Labels of one worker's partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub worker: String,
    pub topic: String,
    pub partition: i32,
}

/// Every metric rowsync exports.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_request_duration: Family<RequestLabels, Histogram>,
    batches: BatchMetrics,
}

/// The workers' batch histograms; cheap to clone (the families are shared).
#[derive(Clone)]
pub struct BatchMetrics {
    records: Family<PartitionLabels, Histogram>,
    duration: Family<PartitionLabels, Histogram>,
}

impl BatchMetrics {
    /// Records one applied batch.
    pub fn observe(&self, labels: &PartitionLabels, records: usize, seconds: f64) {
        self.records.get_or_create(labels).observe(records as f64);
        self.duration.get_or_create(labels).observe(seconds);
    }
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
    /// Registers the metrics recorded as things happen; [`Metrics::read_state_from`] adds the
    /// ones read at scrape time.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rowsync");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by operation, method and status",
            http_requests.clone(),
        );
        let http_request_duration =
            Family::<RequestLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
            });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (until the response head), in seconds",
            http_request_duration.clone(),
        );
        let batch_records = Family::<PartitionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 4.0, 10))
        });
        registry.register(
            "worker_batch_records",
            "Records per batch a worker applied",
            batch_records.clone(),
        );
        let batch_duration = Family::<PartitionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register(
            "worker_batch_duration_seconds",
            "Time to apply a batch (transaction and dead letters), in seconds",
            batch_duration.clone(),
        );
        Self {
            registry,
            http_requests,
            http_request_duration,
            batches: BatchMetrics {
                records: batch_records,
                duration: batch_duration,
            },
        }
    }

    /// Adds the metrics read at scrape time from the workers, the response log and the pool.
    pub fn read_state_from(
        &mut self,
        workers: Arc<WorkerRegistry>,
        response_log: Arc<ResponseLogStats>,
        pool: Pool,
    ) {
        self.registry.register_collector(Box::new(StateCollector {
            workers,
            response_log,
            pool,
        }));
    }

    /// The workers' batch histograms.
    pub fn batches(&self) -> BatchMetrics {
        self.batches.clone()
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

/// Middleware body: counts and times every request.
pub async fn record_request<E: Endpoint>(
    metrics: Arc<Metrics>,
    next: E,
    req: Request,
) -> poem::Result<Response> {
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = match next.call(req).await {
        Ok(response) => response.into_response(),
        Err(error) => error.into_response(),
    };
    let operation = response
        .data::<poem_openapi::OperationId>()
        .map(|id| id.0.to_owned())
        .unwrap_or_else(|| "none".to_owned());
    let labels = RequestLabels {
        operation,
        method,
        status: response.status().as_u16(),
    };
    metrics.http_requests.get_or_create(&labels).inc();
    metrics
        .http_request_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

/// Reads, at scrape time, the counters kept elsewhere.
struct StateCollector {
    workers: Arc<WorkerRegistry>,
    response_log: Arc<ResponseLogStats>,
    pool: Pool,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses: Vec<_> = WorkerKind::ALL
            .into_iter()
            .map(|kind| self.workers.stats(kind).status())
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

        type Read = fn(&crate::workers::stats::PartitionStatus) -> u64;
        let counters: [(&str, &str, Read); 5] = [
            ("records_applied", "Records applied to the table", |p| {
                p.records_applied
            }),
            (
                "records_invalid",
                "Records that could not be applied (invalid or refused)",
                |p| p.records_invalid,
            ),
            (
                "records_dead_lettered",
                "Records written to the dead-letter topic",
                |p| p.records_dead_lettered,
            ),
            (
                "offset_resets",
                "Restarts from the earliest offset (out of range, recreated topic)",
                |p| p.offset_resets,
            ),
            (
                "records_unkeyed",
                "Records without a key on a topic with more than one partition (order per id is lost)",
                |p| p.records_unkeyed,
            ),
        ];
        for (name, help, read) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for status in &statuses {
                for partition in &status.partitions {
                    let labels = PartitionLabels {
                        worker: status.name.clone(),
                        topic: status.topic.clone(),
                        partition: partition.partition,
                    };
                    ConstCounter::new(read(partition)).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        type Gauge = fn(&crate::workers::stats::PartitionStatus) -> Option<i64>;
        let gauges: [(&str, &str, Gauge); 3] = [
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
        for (name, help, read) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for status in &statuses {
                for partition in &status.partitions {
                    if let Some(value) = read(partition) {
                        let labels = PartitionLabels {
                            worker: status.name.clone(),
                            topic: status.topic.clone(),
                            partition: partition.partition,
                        };
                        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }

        use std::sync::atomic::Ordering::Relaxed;
        for (name, help, value) in [
            (
                "response_log_records_published",
                "Response-log records the broker acknowledged",
                self.response_log.published.load(Relaxed),
            ),
            (
                "response_log_records_dropped",
                "Response-log records dropped (queue full or Kafka failing)",
                self.response_log.dropped.load(Relaxed),
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }

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
