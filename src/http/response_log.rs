//! The response log: every response under `/api` is published to `REST_LOG_TOPIC` as
//! `{"url", "request_method", "status", "data"}`. Requests never wait on Kafka: records go through
//! a bounded queue to one batching publisher task, and are dropped (counted, logged) when it is full.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use tokio::{
    sync::{mpsc, Notify},
    task::JoinHandle,
};

use crate::kafka::producer::TopicProducer;

/// Largest body carried as `data`; larger ones are logged with `data: null, truncated: true`
/// (Kafka refuses messages over 1 MB by default).
pub const MAX_DATA_BYTES: usize = 900 * 1024;
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

/// The sending side, held by the middleware. Dropping every clone ends the publisher.
#[derive(Clone)]
pub struct ResponseLog {
    queue_tx: mpsc::Sender<Vec<u8>>,
    stats: Arc<ResponseLogStats>,
    /// Bytes of the records in the queue: bounded by [`MAX_QUEUED_BYTES`] as well as by count,
    /// so large bodies cannot pile up gigabytes while Kafka lags.
    queued_bytes: Arc<AtomicUsize>,
    /// Wakes the publisher before its linger is over once a full batch is waiting.
    batch_full: Arc<Notify>,
}

/// One response-log record, `{"url", "request_method", "status", "data"[, "truncated"]}`, as
/// JSON. `data` is copied in as it is: it must be one JSON value.
fn encode_record(
    url: &str,
    method: &str,
    status: u16,
    data: Option<&[u8]>,
    truncated: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + url.len() + data.map_or(0, <[u8]>::len));
    // Writing a string into a Vec cannot fail.
    out.extend_from_slice(b"{\"url\":");
    serde_json::to_writer(&mut out, url).expect("a string serialises");
    out.extend_from_slice(b",\"request_method\":");
    serde_json::to_writer(&mut out, method).expect("a string serialises");
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.unwrap_or(b"null"));
    if truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.push(b'}');
    out
}

/// Whether a JSON-typed body can go into a record as it is. Bodies this API writes whole are
/// serialised objects or arrays; anything else is checked by parsing it.
fn is_json_value(body: &[u8]) -> bool {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{' | b'[') => true,
        Some(_) => serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
        None => false,
    }
}

impl ResponseLog {
    /// Starts the publisher task with a queue of `capacity` records.
    pub fn spawn(
        producer: Arc<TopicProducer>,
        capacity: usize,
    ) -> (Self, Arc<ResponseLogStats>, JoinHandle<()>) {
        let (queue_tx, queue_rx) = mpsc::channel(capacity);
        let stats = Arc::new(ResponseLogStats::default());
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let batch_full = Arc::new(Notify::new());
        let task = tokio::spawn(publish(
            producer,
            queue_rx,
            Arc::clone(&stats),
            Arc::clone(&queued_bytes),
            Arc::clone(&batch_full),
        ));
        (
            Self {
                queue_tx,
                stats: Arc::clone(&stats),
                queued_bytes,
                batch_full,
            },
            stats,
            task,
        )
    }

    /// Queues a record without waiting; a full queue drops it.
    fn enqueue(&self, record: Vec<u8>) {
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

/// Middleware body: runs the request, then queues its record and hands the response back.
///
/// A small body already in memory is read whole. Any other body (a streamed listing) goes to the
/// client as it comes while at most [`MAX_DATA_BYTES`] of it are copied for the record, which is
/// queued when the body ends; a larger one is logged with `data: null, truncated: true`.
pub async fn log_response<E: Endpoint>(
    log: Option<Arc<ResponseLog>>,
    next: E,
    req: Request,
) -> poem::Result<Response> {
    let Some(log) = log else {
        // REST_LOG_ENABLED=false.
        return next.call(req).await.map(IntoResponse::into_response);
    };
    let url = req.original_uri().path().to_owned();
    let method = req.method().clone();
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
    log: Arc<ResponseLog>,
    url: String,
    method: poem::http::Method,
    status: u16,
    is_json: bool,
}

impl PendingRecord {
    fn queue(self, body: Captured<'_>) {
        let (data, truncated) = match body {
            Captured::Whole(bytes) if self.is_json && is_json_value(bytes) => (Some(bytes), false),
            Captured::Whole(_) => (None, false),
            Captured::Truncated => (None, self.is_json),
        };
        self.log.enqueue(encode_record(
            &self.url,
            self.method.as_str(),
            self.status,
            data,
            truncated,
        ));
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
///
/// After a batch's first record it sleeps out the linger (or until a full batch is queued)
/// and then takes what has arrived, instead of waking for every record: at tens of thousands
/// of responses a second, a wake-up per record cost more than the rest of the log together.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_with_the_body_copied_in() {
        let record = encode_record(
            "/api/some_models/\"x\"",
            "GET",
            200,
            Some(br#"[{"id":5,"name":"smth"}]"#),
            false,
        );
        let value: serde_json::Value = serde_json::from_slice(&record).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"url": "/api/some_models/\"x\"", "request_method": "GET",
                "status": 200, "data": [{"id": 5, "name": "smth"}]})
        );
        let truncated = encode_record("/api/x", "POST", 404, None, true);
        let value: serde_json::Value = serde_json::from_slice(&truncated).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"url": "/api/x", "request_method": "POST", "status": 404,
                "data": null, "truncated": true})
        );
    }

    #[test]
    fn only_json_values_are_copied_into_records() {
        assert!(is_json_value(b" {\"a\": 1}"));
        assert!(is_json_value(b"[]"));
        assert!(is_json_value(b"\"text\""));
        assert!(!is_json_value(b""));
        assert!(!is_json_value(b"not json"));
    }
}
