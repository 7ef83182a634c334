//! `JsonRows`, a payload that streams rows from PostgreSQL to the client as one JSON array,
//! chunk by chunk, instead of building the whole body first (poem-openapi's `Json<Vec<T>>`
//! builds a `serde_json::Value` tree of it: gigabytes for millions of rows). The spec still
//! says `array of Row`. The watchdog that cuts a body its client stopped reading is `watched`'s.

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

use self::watched::Watched;
use super::listing_cache::{FillPermit, MAX_CACHED_BYTES};
use crate::{db::rows::ListedRow, error::Error, model::Row};

mod watched;

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
        rows: impl Stream<Item = Result<ListedRow, Error>> + Send + 'static,
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
        rows: impl Stream<Item = Result<ListedRow, Error>> + Send + 'static,
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
        rows: impl Stream<Item = Result<ListedRow, Error>> + Send + 'static,
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
        rows: impl Stream<Item = Result<ListedRow, Error>> + Send + 'static,
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

type RowStream = Pin<Box<dyn Stream<Item = Result<ListedRow, Error>> + Send>>;

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
    fn push_row(&mut self, row: &ListedRow) -> Result<(), Error> {
        let id = row.id()?;
        let name = row.name()?;
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

    async fn collect(rows: Vec<Result<ListedRow, Error>>) -> Vec<io::Result<Bytes>> {
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
        let rows = stream::pending::<Result<ListedRow, Error>>();
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
