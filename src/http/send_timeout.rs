//! `SendTimeout`, a connection that gives up on a client that reads nothing: a write (or flush)
//! that has waited `HTTP_SEND_TIMEOUT_MS` for the socket to take anything fails with
//! `TimedOut` (nginx's `send_timeout`: the time between two successive writes), so hyper closes
//! the connection and drops the response body, and with it whatever the body held.
//!
//! A streamed listing also cuts itself (`json_rows`), freeing its PostgreSQL connection, but
//! hyper stops polling a body once its write buffer is full, so only the connection itself can
//! close the socket of a client that never reads again. Meant to wrap each accepted stream in
//! the server's accept loop (`listener`).

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// A connection whose writes fail once the peer has taken nothing for `timeout`.
pub struct SendTimeout<IO> {
    inner: IO,
    timeout: Duration,
    /// Running while a write or flush waits for the peer.
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<IO> SendTimeout<IO> {
    pub fn new(inner: IO, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            blocked: None,
        }
    }

    /// After the inner write or flush answered: `Pending` starts (or checks) the clock, anything
    /// else stops it.
    fn timed<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => {
                let timeout = self.timeout;
                let clock = self
                    .blocked
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match clock.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing for {timeout:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            done => {
                self.blocked = None;
                done
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendTimeout<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendTimeout<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.timed(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.timed(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.timed(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_peer_that_reads_nothing_fails_the_write_after_the_timeout() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut conn = SendTimeout::new(near, Duration::from_millis(100));
        conn.write_all(&[0; 16]).await.expect("fits the buffer");
        let started = tokio::time::Instant::now();
        let error = tokio::time::timeout(Duration::from_secs(5), conn.write_all(&[0; 16]))
            .await
            .expect("fails within the deadline")
            .expect_err("the peer read nothing");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
        // A peer that reads keeps the connection going.
        let (near, mut far2) = tokio::io::duplex(16);
        let mut conn = SendTimeout::new(near, Duration::from_millis(100));
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            far2.read_to_end(&mut all).await.map(|_| all.len())
        });
        for _ in 0..20 {
            conn.write_all(&[1; 16]).await.expect("the peer reads");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(conn);
        assert_eq!(reader.await.unwrap().unwrap(), 320);
        let _ = far.read(&mut [0; 1]).await;
    }
}
