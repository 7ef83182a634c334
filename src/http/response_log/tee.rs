//! The body tee: passes a streamed response body to the client unchanged while copying up to
//! [`MAX_DATA_BYTES`] of it for the response-log record, which it queues when the body ends (or
//! is dropped unfinished).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};

use super::record::{Captured, PendingRecord, MAX_DATA_BYTES};

/// A response body of any kind, boxed.
pub(super) type BoxBody = http_body_util::combinators::BoxBody<Bytes, io::Error>;

/// Passes a body through unchanged, copying up to [`MAX_DATA_BYTES`] of it for the record.
pub(super) struct Tee {
    inner: BoxBody,
    captured: Vec<u8>,
    overflowed: bool,
    /// Taken when the record is queued: at the end of the body, or when it is dropped unfinished.
    pending: Option<PendingRecord>,
}

impl Tee {
    /// Tees `inner`; `pending` is queued once the body is over.
    pub(super) fn new(inner: BoxBody, pending: PendingRecord) -> Self {
        Self {
            inner,
            captured: Vec::new(),
            overflowed: false,
            pending: Some(pending),
        }
    }
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
            Poll::Ready(Some(Err(_))) => {
                // The body broke off (cut for a client that stopped reading, or a failure):
                // hyper aborts the response, so the record is queued now.
                if let Some(pending) = this.pending.take() {
                    pending.queue(Captured::Cut);
                }
            }
            Poll::Pending => {}
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
            } else if self.inner.is_end_stream() {
                pending.queue(Captured::Truncated);
            } else {
                pending.queue(Captured::Cut);
            }
        }
    }
}
