//! `JsonRows`, a payload that streams rows from PostgreSQL to the client as one JSON array,
//! chunk by chunk, instead of building the whole body first (poem-openapi's `Json<Vec<T>>`
//! builds a `serde_json::Value` tree of it: gigabytes for millions of rows). The spec still
//! says `array of Row`.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use poem::{Body, IntoResponse, Response};
use poem_openapi::{
    payload::Payload,
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use tokio::time::Sleep;

use super::listing_cache::{FillPermit, MAX_CACHED_BYTES};
use crate::{error::Error, model::Row};

/// A chunk is sent once it holds this many bytes, or earlier when PostgreSQL has nothing more
/// ready, so the first byte leaves as soon as the first rows arrive.
const CHUNK_BYTES: usize = 32 * 1024;

/// A streamed JSON array of rows: `[{"id": 5, "name": "smth"}, …]`.
pub struct JsonRows(Body);

impl JsonRows {
    /// Streams `rows` (columns `id bigint, name text`). A pause of more than `stall_timeout`
    /// waiting on PostgreSQL, or an error mid-stream, aborts the response so the client sees a
    /// broken transfer rather than a short array that parses.
    pub fn new(
        rows: impl Stream<Item = Result<tokio_postgres::Row, Error>> + Send + 'static,
        stall_timeout: Duration,
    ) -> Self {
        Self::encode(rows, stall_timeout, None)
    }

    /// A body already encoded (from the cache).
    pub fn cached(body: Bytes) -> Self {
        Self(Body::from_bytes(body))
    }

    /// Like [`new`](Self::new) (or [`caching`](Self::caching) with `capture`), also cut when the
    /// client stops reading: once the body has waited `send_timeout` for the client to take its
    /// next chunk (nginx's `send_timeout`), the rows, their PostgreSQL connection and `held` (the
    /// listing's slot) are dropped at once, and the body ends with an error, so hyper closes the
    /// connection when it next polls it.
    pub fn watched(
        rows: impl Stream<Item = Result<tokio_postgres::Row, Error>> + Send + 'static,
        stall_timeout: Duration,
        capture: Option<(FillPermit, u64)>,
        send_timeout: Duration,
        held: impl Send + 'static,
    ) -> Self {
        let capture = capture.map(|(permit, generation)| Capture {
            permit,
            generation,
            body: Vec::new(),
        });
        let encoder = Self::encoder(rows, stall_timeout, capture);
        Self(Body::from_bytes_stream(Watched::spawn(
            encoder,
            send_timeout,
            Box::new(held),
        )))
    }

    fn encode(
        rows: impl Stream<Item = Result<tokio_postgres::Row, Error>> + Send + 'static,
        stall_timeout: Duration,
        capture: Option<Capture>,
    ) -> Self {
        Self(Body::from_bytes_stream(Self::encoder(
            rows,
            stall_timeout,
            capture,
        )))
    }

    fn encoder(
        rows: impl Stream<Item = Result<tokio_postgres::Row, Error>> + Send + 'static,
        stall_timeout: Duration,
        capture: Option<Capture>,
    ) -> Encoder {
        Encoder {
            rows: Box::pin(rows),
            buffer: Vec::with_capacity(CHUNK_BYTES + 512),
            rows_written: 0,
            finished: false,
            stall_timeout,
            stall: None,
            capture,
        }
    }
}

/// What a watched body shares with its watchdog.
struct WatchState {
    /// The encoder with its rows and connection, and what the listing holds (its slot); taken
    /// (dropped) by the watchdog when the client stops reading, or by the body at its end.
    encoder: Option<(Encoder, Box<dyn Send>)>,
    /// Since when the body has waited for the client to ask for the next chunk; `None` while it
    /// waits on PostgreSQL (the encoder's own stall timeout covers that) or has ended.
    waiting_since: Option<tokio::time::Instant>,
    /// The watchdog cut the body.
    cut: bool,
    /// Told when the body is cut, in case the client reads again.
    waker: Option<std::task::Waker>,
}

/// An [`Encoder`] under a watchdog task that cuts it when the client stops reading.
struct Watched {
    state: std::sync::Arc<std::sync::Mutex<WatchState>>,
    send_timeout: Duration,
    done: bool,
}

impl Watched {
    fn spawn(encoder: Encoder, send_timeout: Duration, held: Box<dyn Send>) -> Self {
        let state = std::sync::Arc::new(std::sync::Mutex::new(WatchState {
            encoder: Some((encoder, held)),
            waiting_since: None,
            cut: false,
            waker: None,
        }));
        let weak = std::sync::Arc::downgrade(&state);
        // Ends with the body (the state is gone), or once it has cut it.
        tokio::spawn(async move {
            loop {
                let wake_at = {
                    let Some(state) = weak.upgrade() else { return };
                    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                    if state.encoder.is_none() {
                        return;
                    }
                    match state.waiting_since {
                        Some(since) if since.elapsed() >= send_timeout => {
                            let dropped = state.encoder.take();
                            state.cut = true;
                            let waker = state.waker.take();
                            drop(state);
                            drop(dropped);
                            tracing::warn!(
                                after = ?send_timeout,
                                "client stopped reading a listing; cut it and freed its connection"
                            );
                            if let Some(waker) = waker {
                                waker.wake();
                            }
                            return;
                        }
                        Some(since) => since + send_timeout,
                        None => tokio::time::Instant::now() + send_timeout,
                    }
                };
                tokio::time::sleep_until(wake_at).await;
            }
        });
        Self {
            state,
            send_timeout,
            done: false,
        }
    }
}

impl Stream for Watched {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let send_timeout = self.send_timeout;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.cut {
            drop(state);
            self.done = true;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {send_timeout:?}"),
            ))));
        }
        state.waker = Some(cx.waker().clone());
        let Some((encoder, _)) = state.encoder.as_mut() else {
            drop(state);
            self.done = true;
            return Poll::Ready(None);
        };
        let polled = Pin::new(encoder).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                state.waiting_since = Some(tokio::time::Instant::now());
            }
            Poll::Pending => state.waiting_since = None,
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                // Over: the connection and the slot go back now.
                let ended = state.encoder.take();
                state.waiting_since = None;
                drop(state);
                drop(ended);
            }
        }
        polled
    }
}

/// The body so far, for the listing cache.
struct Capture {
    permit: FillPermit,
    generation: u64,
    body: Vec<u8>,
}

impl Payload for JsonRows {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        <Vec<Row> as Type>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Vec<Row> as Type>::register(registry);
    }
}

impl IntoResponse for JsonRows {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(self.0)
    }
}

type RowStream = Pin<Box<dyn Stream<Item = Result<tokio_postgres::Row, Error>> + Send>>;

/// Turns a stream of rows into chunks of a JSON array.
struct Encoder {
    rows: RowStream,
    buffer: Vec<u8>,
    rows_written: u64,
    finished: bool,
    stall_timeout: Duration,
    /// Running while the encoder waits on PostgreSQL with nothing to send.
    stall: Option<Pin<Box<Sleep>>>,
    /// Copies the body for the cache until it grows past [`MAX_CACHED_BYTES`].
    capture: Option<Capture>,
}

impl Encoder {
    fn push_row(&mut self, row: &tokio_postgres::Row) -> Result<(), Error> {
        let id: i64 = row.try_get(0)?;
        let name: &str = row.try_get(1)?;
        self.buffer
            .push(if self.rows_written == 0 { b'[' } else { b',' });
        self.buffer.extend_from_slice(b"{\"id\":");
        self.buffer
            .extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        self.buffer.extend_from_slice(b",\"name\":");
        // Escaping a string into a Vec cannot fail.
        serde_json::to_writer(&mut self.buffer, name).expect("a string serialises");
        self.buffer.push(b'}');
        self.rows_written += 1;
        Ok(())
    }

    fn take_chunk(&mut self) -> Bytes {
        let chunk = Bytes::copy_from_slice(&self.buffer);
        self.buffer.clear();
        if let Some(capture) = &mut self.capture {
            if capture.body.len() + chunk.len() > MAX_CACHED_BYTES {
                self.capture = None;
            } else {
                capture.body.extend_from_slice(&chunk);
            }
        }
        chunk
    }
}

impl Stream for Encoder {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match this.rows.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(row))) => {
                    this.stall = None;
                    if let Err(error) = this.push_row(&row) {
                        return Poll::Ready(Some(Err(abort(error))));
                    }
                    if this.buffer.len() >= CHUNK_BYTES {
                        return Poll::Ready(Some(Ok(this.take_chunk())));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(abort(error))));
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    if this.rows_written == 0 {
                        this.buffer.push(b'[');
                    }
                    this.buffer.push(b']');
                    let last = this.take_chunk();
                    if let Some(capture) = this.capture.take() {
                        capture
                            .permit
                            .store(capture.generation, Bytes::from(capture.body));
                    }
                    return Poll::Ready(Some(Ok(last)));
                }
                Poll::Pending if !this.buffer.is_empty() => {
                    return Poll::Ready(Some(Ok(this.take_chunk())));
                }
                Poll::Pending => {
                    let timeout = this.stall_timeout;
                    let stall = this
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if stall.as_mut().poll(cx).is_ready() {
                        this.finished = true;
                        return Poll::Ready(Some(Err(abort(Error::Timeout {
                            what: "streaming rows",
                            after: timeout,
                        }))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Logs why a listing broke off and turns it into the error that makes hyper abort the response.
fn abort(error: Error) -> io::Error {
    tracing::error!(error = %error, "listing rows broke off mid-stream");
    io::Error::other(error)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::{stream, StreamExt};

    use super::*;

    async fn collect(rows: Vec<Result<tokio_postgres::Row, Error>>) -> Vec<io::Result<Bytes>> {
        let body = JsonRows::new(stream::iter(rows), Duration::from_secs(1)).0;
        body.into_bytes_stream().collect().await
    }

    #[tokio::test]
    async fn no_rows_is_an_empty_array() {
        let chunks = collect(vec![]).await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].as_ref().unwrap().as_ref(), b"[]");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_and_its_resources_freed() {
        let held = Arc::new(());
        let rows = stream::pending::<Result<tokio_postgres::Row, Error>>();
        // Rows that never end, but one chunk is ready: emulate with a stream of one chunk.
        let body = JsonRows::watched(
            rows,
            Duration::from_secs(60),
            None,
            Duration::from_millis(100),
            Arc::clone(&held),
        )
        .0;
        let mut chunks = body.into_bytes_stream();
        // The body waits on "PostgreSQL": the watchdog must leave it alone.
        let waited = tokio::time::timeout(Duration::from_millis(300), chunks.next()).await;
        assert!(waited.is_err(), "a wait on PostgreSQL is not the client's");
        assert_eq!(Arc::strong_count(&held), 2, "still held while streaming");
        drop(chunks);
        assert_eq!(Arc::strong_count(&held), 1, "freed with the body");
    }

    #[tokio::test]
    async fn an_unread_chunk_cuts_the_body_after_the_send_timeout() {
        let held = Arc::new(());
        let encoder = JsonRows::encoder(stream::pending(), Duration::from_secs(60), None);
        let mut watched = Watched::spawn(
            encoder,
            Duration::from_millis(100),
            Box::new(Arc::clone(&held)),
        );
        // As after a chunk was handed to hyper, which never asks for the next one.
        watched.state.lock().unwrap().waiting_since = Some(tokio::time::Instant::now());
        tokio::time::timeout(Duration::from_secs(5), async {
            while Arc::strong_count(&held) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the watchdog frees what the listing held");
        assert!(
            matches!(watched.next().await, Some(Err(_))),
            "ends in an error"
        );
        assert!(watched.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stalled_database_aborts_the_body() {
        let body = JsonRows::new(stream::pending(), Duration::from_millis(50)).0;
        let chunks: Vec<_> = body.into_bytes_stream().collect().await;
        assert_eq!(chunks.len(), 1);
        assert!(
            chunks[0].is_err(),
            "a stall must end in an error, not a short array"
        );
    }
}
