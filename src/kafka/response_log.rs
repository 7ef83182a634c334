//! The response log's Kafka side: the bounded queue records wait in and the one task that
//! publishes them to `REST_LOG_TOPIC` in batches, and their counters ([`ResponseLogStats`],
//! read into `/metrics` by [`ResponseLogCollector`]). What a response becomes is the HTTP
//! middleware's (`http::response_log`); requests never wait here.
//!
//! The publisher task is owned twice over: it runs on the application's `TaskTracker`, and its
//! [`ResponseLogPublisher`] handle drains it at shutdown and aborts it when dropped.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{mpsc, Notify};
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use super::producer::TopicProducer;

/// Most bytes of records waiting in the queue; past it new records are dropped.
pub const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;
/// A batch stops lingering once it holds this many bytes.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most records in one produce request.
const MAX_BATCH: usize = 1024;
/// How long the publisher lets a batch fill before sending it (Kafka's `linger.ms`): under load,
/// a few large produce requests instead of one per response; idle, a record waits at most this.
const LINGER: Duration = Duration::from_millis(20);

/// Counters of the response log, for operators and tests.
#[derive(Debug, Default)]
pub struct ResponseLogStats {
    /// Records the broker acknowledged.
    pub published: AtomicU64,
    /// Records dropped: the queue was full or Kafka failed.
    pub dropped: AtomicU64,
}

/// Reads [`ResponseLogStats`] at scrape time, for `GET /metrics` (registered at assembly).
#[derive(Debug)]
pub struct ResponseLogCollector(pub Arc<ResponseLogStats>);

impl prometheus_client::collector::Collector for ResponseLogCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::{encoding::EncodeMetric, metrics::counter::ConstCounter};
        for (name, help, count) in [
            (
                "response_log_records_published",
                "Response-log records the broker acknowledged",
                &self.0.published,
            ),
            (
                "response_log_records_dropped",
                "Response-log records dropped (queue full or Kafka failing)",
                &self.0.dropped,
            ),
        ] {
            let metric = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            ConstCounter::new(count.load(Ordering::Relaxed)).encode(metric)?;
        }
        Ok(())
    }
}

/// A started response log, as [`ResponseLog::spawn`] returns it.
pub struct ResponseLog {
    /// The queue's sending end, for the middleware. The publisher ends once every clone is gone.
    pub queue: ResponseLogQueue,
    /// Published and dropped records, shared with the queue and the publisher.
    pub stats: Arc<ResponseLogStats>,
    /// The publisher task: [`drain`](ResponseLogPublisher::drain) it at shutdown.
    pub publisher: ResponseLogPublisher,
}

impl ResponseLog {
    /// Starts the publisher on `tasks`, with a queue of `capacity` records.
    pub fn spawn(producer: Arc<TopicProducer>, capacity: usize, tasks: &TaskTracker) -> Self {
        let (queue_tx, queue_rx) = mpsc::channel(capacity);
        let stats = Arc::new(ResponseLogStats::default());
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let batch_full = Arc::new(Notify::new());
        let task = tasks.spawn(publish(
            producer,
            queue_rx,
            Arc::clone(&stats),
            Arc::clone(&queued_bytes),
            Arc::clone(&batch_full),
        ));
        Self {
            queue: ResponseLogQueue {
                queue_tx,
                stats: Arc::clone(&stats),
                queued_bytes,
                batch_full,
            },
            stats,
            publisher: ResponseLogPublisher {
                task: AbortOnDropHandle::new(task),
            },
        }
    }
}

/// The sending side of the queue, held by the middleware. Dropping every clone ends the publisher.
#[derive(Clone)]
pub struct ResponseLogQueue {
    queue_tx: mpsc::Sender<Vec<u8>>,
    stats: Arc<ResponseLogStats>,
    /// Bytes of the records in the queue: bounded by [`MAX_QUEUED_BYTES`] as well as by count,
    /// so large bodies cannot pile up gigabytes while Kafka lags.
    queued_bytes: Arc<AtomicUsize>,
    /// Wakes the publisher before its linger is over once a full batch is waiting.
    batch_full: Arc<Notify>,
}

impl ResponseLogQueue {
    /// Queues a record without waiting; a full queue drops it (counted, logged).
    pub fn enqueue(&self, record: Vec<u8>) {
        let size = record.len();
        let queued = self.queued_bytes.fetch_add(size, Ordering::AcqRel) + size;
        let reason = if queued > MAX_QUEUED_BYTES {
            "queue over its byte limit"
        } else {
            match self.queue_tx.try_send(record) {
                Ok(()) => {
                    // The publisher is not woken per record, only when a full batch waits.
                    let records = self.queue_tx.max_capacity() - self.queue_tx.capacity();
                    let crossed = queued >= MAX_BATCH_BYTES && queued - size < MAX_BATCH_BYTES;
                    if records == MAX_BATCH || crossed {
                        self.batch_full.notify_one();
                    }
                    return;
                }
                Err(mpsc::error::TrySendError::Full(_)) => "queue full",
                Err(mpsc::error::TrySendError::Closed(_)) => "publisher stopped",
            }
        };
        self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Once, then every thousandth: a lagging broker must not flood the logs too.
        if dropped == 1 || dropped % 1000 == 0 {
            tracing::warn!(
                reason,
                dropped_total = dropped,
                "response-log record dropped"
            );
        }
    }
}

/// The publisher task's owner: it publishes until every [`ResponseLogQueue`] is gone; dropping
/// this handle aborts it, queued records and all.
pub struct ResponseLogPublisher {
    task: AbortOnDropHandle<()>,
}

impl ResponseLogPublisher {
    /// Waits, up to `within`, for the publisher to send what is queued and end (once the last
    /// queue handle is gone); past that it is aborted and what is still queued is lost.
    pub async fn drain(mut self, within: Duration) {
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            tracing::warn!("response log not drained in time; queued records are lost");
        }
    }
}

/// The publisher: drains the queue in batches until every sender is gone.
///
/// After a batch's first record it sleeps out the linger (or until a full batch is queued)
/// and then takes what has arrived, instead of waking for every record.
async fn publish(
    producer: Arc<TopicProducer>,
    mut queue_rx: mpsc::Receiver<Vec<u8>>,
    stats: Arc<ResponseLogStats>,
    queued_bytes: Arc<AtomicUsize>,
    batch_full: Arc<Notify>,
) {
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue_rx.recv().await {
        let mut sent_bytes = first.len();
        batch.push(first);
        // A backlog of a full batch or more (Kafka was slow) goes out at once.
        let backlog = queue_rx.len() + 1 >= MAX_BATCH
            || queued_bytes.load(Ordering::Acquire) >= MAX_BATCH_BYTES;
        if !backlog {
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => {}
                _ = batch_full.notified() => {}
            }
        }
        // Whatever has arrived meanwhile, up to a full batch; the rest goes in the next one.
        while batch.len() < MAX_BATCH && sent_bytes < MAX_BATCH_BYTES {
            match queue_rx.try_recv() {
                Ok(record) => {
                    sent_bytes += record.len();
                    batch.push(record);
                }
                // Empty, or closed (shutdown): send what there is.
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        // Records count against the byte limit until they are sent (or dropped).
        let outcome = producer.send_batch(std::mem::take(&mut batch)).await;
        queued_bytes.fetch_sub(sent_bytes, Ordering::AcqRel);
        match outcome {
            Ok(()) => {
                stats.published.fetch_add(count, Ordering::Relaxed);
            }
            Err(error) => {
                let dropped = stats.dropped.fetch_add(count, Ordering::Relaxed) + count;
                tracing::warn!(
                    topic = producer.topic(),
                    records = count,
                    dropped_total = dropped,
                    error = %error,
                    "response-log batch dropped"
                );
            }
        }
    }
}
