//! The response log: every response under `/api` is published to `REST_LOG_TOPIC` as
//! `{"url", "request_method", "status", "data"}`. Requests never wait on Kafka: records go through
//! a bounded queue to one batching publisher task, and are dropped (counted, logged) when it is full.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::kafka::producer::TopicProducer;

/// Largest body carried as `data`; larger ones are logged with `data: null, truncated: true`
/// (Kafka refuses messages over 1 MB by default).
pub const MAX_DATA_BYTES: usize = 900 * 1024;
/// Most records in one produce request.
const MAX_BATCH: usize = 1024;
/// How long the publisher lets a batch fill before sending it (Kafka's `linger.ms`): under load,
/// a few large produce requests instead of one per response; idle, a record waits at most this.
const LINGER: Duration = Duration::from_millis(5);

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
///
/// A small body already in memory is read whole. Any other body (a streamed listing) goes to the
/// client as it comes while at most [`MAX_DATA_BYTES`] of it are copied for the record, which is
/// queued when the body ends; a larger one is logged with `data: null, truncated: true`.
pub async fn log_response<E: Endpoint>(
    log: Option<ResponseLog>,
    next: E,
    req: Request,
) -> poem::Result<Response> {
    let Some(log) = log else {
        // REST_LOG_ENABLED=false.
        return next.call(req).await.map(IntoResponse::into_response);
    };
    let url = req.original_uri().path().to_owned();
    let method = req.method().as_str().to_owned();
    let response = match next.call(req).await {
        Ok(response) => response.into_response(),
        Err(error) => error.into_response(),
    };
    let (parts, body) = response.into_parts();
    let is_json = parts
        .headers
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let pending = PendingRecord {
        log,
        url,
        method,
        status: parts.status.as_u16(),
        is_json,
    };
    let body = BoxBody::from(body);
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|size| size <= MAX_DATA_BYTES as u64);
    if small {
        let bytes = Body::from(body).into_bytes().await.unwrap_or_default();
        pending.queue(Captured::Whole(&bytes));
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    }
    let tee = Tee {
        inner: body,
        captured: Vec::new(),
        overflowed: false,
        pending: Some(pending),
    };
    Ok(Response::from_parts(parts, Body::from(BoxBody::new(tee))))
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, io::Error>;

/// What the response log saw of a body.
enum Captured<'a> {
    /// All of it.
    Whole(&'a [u8]),
    /// Not all of it: it was too large, or the transfer broke off.
    Truncated,
}

/// A response whose record waits for its body.
struct PendingRecord {
    log: ResponseLog,
    url: String,
    method: String,
    status: u16,
    is_json: bool,
}

impl PendingRecord {
    fn queue(self, body: Captured<'_>) {
        let (data, truncated) = match body {
            Captured::Whole(bytes) if self.is_json => (serde_json::from_slice(bytes).ok(), false),
            Captured::Whole(_) => (None, false),
            Captured::Truncated => (None, self.is_json),
        };
        let record = LogRecord {
            url: &self.url,
            request_method: &self.method,
            status: self.status,
            data,
            truncated,
        };
        // A struct of strings, numbers and already-valid JSON always serialises.
        self.log
            .enqueue(serde_json::to_vec(&record).expect("log record serialises"));
    }
}

/// Passes a body through unchanged, copying up to [`MAX_DATA_BYTES`] of it for the record.
struct Tee {
    inner: BoxBody,
    captured: Vec<u8>,
    overflowed: bool,
    /// Taken when the record is queued: at the end of the body, or when it is dropped unfinished.
    pending: Option<PendingRecord>,
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let capturing = this.pending.as_ref().is_some_and(|p| p.is_json);
                    if capturing && !this.overflowed {
                        if this.captured.len() + data.len() > MAX_DATA_BYTES {
                            this.overflowed = true;
                            this.captured = Vec::new();
                        } else {
                            this.captured.extend_from_slice(data);
                        }
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(pending) = this.pending.take() {
                    let captured = if this.overflowed {
                        Captured::Truncated
                    } else {
                        Captured::Whole(&this.captured)
                    };
                    pending.queue(captured);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            // Hyper may stop polling once the body says it has ended; otherwise the body broke
            // off or the client went away before its end.
            if self.inner.is_end_stream() && !self.overflowed {
                pending.queue(Captured::Whole(&self.captured));
            } else {
                pending.queue(Captured::Truncated);
            }
        }
    }
}

/// The publisher: drains the queue in batches until every sender is gone.
async fn publish(
    producer: Arc<TopicProducer>,
    mut queue_rx: mpsc::Receiver<Vec<u8>>,
    stats: Arc<ResponseLogStats>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue_rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let lingered = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(lingered, queue_rx.recv_many(&mut batch, room)).await {
                // The queue is closed (shutdown) or the linger is over: send what there is.
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
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
