//! The response log: every response under `/api` is published to `REST_LOG_TOPIC` as
//! `{"url", "request_method", "status", "data"}`. Requests never wait on Kafka: records go through
//! a bounded queue to one batching publisher task, and are dropped (counted, logged) when it is full.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use poem::{Body, Endpoint, IntoResponse, Request, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::kafka::producer::TopicProducer;

/// Largest body carried as `data`; larger ones are logged with `data: null, truncated: true`
/// (Kafka refuses messages over 1 MB by default).
pub const MAX_DATA_BYTES: usize = 900 * 1024;
/// Most records in one produce request.
const MAX_BATCH: usize = 512;

/// Counters of the response log, for operators and tests.
#[derive(Debug, Default)]
pub struct ResponseLogStats {
    /// Records the broker acknowledged.
    pub published: AtomicU64,
    /// Records dropped: the queue was full or Kafka failed.
    pub dropped: AtomicU64,
}

/// The sending side, held by the middleware. Dropping every clone ends the publisher.
#[derive(Clone)]
pub struct ResponseLog {
    queue_tx: mpsc::Sender<Vec<u8>>,
    stats: Arc<ResponseLogStats>,
}

/// One response-log record.
#[derive(Serialize)]
struct LogRecord<'a> {
    url: &'a str,
    request_method: &'a str,
    status: u16,
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

impl ResponseLog {
    /// Starts the publisher task with a queue of `capacity` records.
    pub fn spawn(
        producer: Arc<TopicProducer>,
        capacity: usize,
    ) -> (Self, Arc<ResponseLogStats>, JoinHandle<()>) {
        let (queue_tx, queue_rx) = mpsc::channel(capacity);
        let stats = Arc::new(ResponseLogStats::default());
        let task = tokio::spawn(publish(producer, queue_rx, Arc::clone(&stats)));
        (
            Self {
                queue_tx,
                stats: Arc::clone(&stats),
            },
            stats,
            task,
        )
    }

    /// Queues a record without waiting; a full queue drops it.
    fn enqueue(&self, record: Vec<u8>) {
        if let Err(error) = self.queue_tx.try_send(record) {
            let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(reason = %error, dropped_total = dropped, "response-log record dropped");
        }
    }
}

/// Middleware body: runs the request, then queues its record and hands the response back.
pub async fn log_response<E: Endpoint>(
    log: ResponseLog,
    next: E,
    req: Request,
) -> poem::Result<Response> {
    let url = req.original_uri().path().to_owned();
    let method = req.method().as_str().to_owned();
    let response = match next.call(req).await {
        Ok(response) => response.into_response(),
        Err(error) => error.into_response(),
    };
    let (parts, body) = response.into_parts();
    let bytes = body.into_bytes().await.unwrap_or_default();
    let is_json = parts
        .headers
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));

    let truncated = is_json && bytes.len() > MAX_DATA_BYTES;
    let data: Option<&RawValue> = if is_json && !truncated {
        serde_json::from_slice(&bytes).ok()
    } else {
        None
    };
    let record = LogRecord {
        url: &url,
        request_method: &method,
        status: parts.status.as_u16(),
        data,
        truncated,
    };
    // A struct of strings, numbers and already-valid JSON always serialises.
    log.enqueue(serde_json::to_vec(&record).expect("log record serialises"));
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The publisher: drains the queue in batches until every sender is gone.
async fn publish(
    producer: Arc<TopicProducer>,
    mut queue_rx: mpsc::Receiver<Vec<u8>>,
    stats: Arc<ResponseLogStats>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue_rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let count = batch.len() as u64;
        match producer.send_batch(std::mem::take(&mut batch)).await {
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
