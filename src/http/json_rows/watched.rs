//! The watchdog of a streamed listing: cuts the body, and frees its rows, their PostgreSQL
//! connection and the listing's slot, once the client has read nothing for `send_timeout`.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;

use super::Encoder;

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
pub(super) struct Watched {
    state: std::sync::Arc<std::sync::Mutex<WatchState>>,
    send_timeout: Duration,
    done: bool,
}

impl Watched {
    pub(super) fn spawn(encoder: Encoder, send_timeout: Duration, held: Box<dyn Send>) -> Self {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::{stream, StreamExt};

    use super::*;
    use crate::http::json_rows::JsonRows;

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
}
