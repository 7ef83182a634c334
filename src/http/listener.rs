//! The API's TCP acceptor and the loop that serves its connections.
//!
//! The acceptor is poem's, with Nagle's algorithm switched off on every connection: a streamed
//! body leaves in several writes (head and first chunk, more chunks, the final empty chunk); with
//! Nagle on, each write after the first waits for the client's delayed ACK (measured in
//! BENCHMARKS.md, "What changed"). poem does not set `TCP_NODELAY` itself.
//!
//! [`serve`] replaces poem's `Server`, which gives hyper no timer and so no header read timeout:
//! it drives each connection with hyper's HTTP/1 builder (`header_read_timeout`, with
//! `TokioTimer`), calls the poem endpoint through poem's own request and response conversions,
//! holds one permit of a semaphore per open connection (`HTTP_MAX_CONNECTIONS`; a connection
//! accepted without one is closed at once) and shuts down gracefully as poem does.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use poem::{
    http::uri::Scheme,
    listener::{Acceptor, TcpAcceptor},
    web::{LocalAddr, RemoteAddr},
    Endpoint, EndpointExt,
};
use tokio::{net::TcpStream, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::send_timeout::SendTimeout;
use crate::config::HttpSettings;

/// A [`TcpAcceptor`] whose connections have `TCP_NODELAY` set.
pub struct NoDelayAcceptor(pub TcpAcceptor);

impl Acceptor for NoDelayAcceptor {
    type Io = TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(TcpStream, LocalAddr, RemoteAddr, Scheme)> {
        let (stream, local, remote, scheme) = self.0.accept().await?;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(error = %error, "could not switch Nagle's algorithm off on a connection");
        }
        Ok((stream, local, remote, scheme))
    }
}

/// How long hyper waits for a request's head. In hyper 1.12 its header timer starts whenever the
/// connection waits for a head, the wait for the next request on a kept-alive connection
/// included: the shorter of the two timeouts bounds both.
pub fn head_wait(limits: &HttpSettings) -> Duration {
    limits.header_read_timeout().min(limits.keepalive_timeout())
}

/// Descriptors kept for everything but the API's connections (PostgreSQL, Kafka, files).
const RESERVED_FILES: usize = 128;

/// `configured`, lowered (with a warning) so that the connections and [`RESERVED_FILES`] fit in
/// the soft limit on open files: past it, accepting fails instead of closing the excess.
fn within_open_files_limit(configured: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one plain struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return configured;
    }
    let room = usize::try_from(limit.rlim_cur)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVED_FILES)
        .max(1);
    if configured > room {
        tracing::warn!(
            configured,
            open_files_limit = limit.rlim_cur,
            max_connections = room,
            "HTTP_MAX_CONNECTIONS lowered to fit the open-files limit (ulimit -n)"
        );
    }
    configured.min(room)
}

/// Serves `endpoint` on `acceptor`'s connections until `shutdown` completes; then stops
/// accepting, lets open requests finish for up to `drain` and closes what is left.
pub async fn serve<A, E>(
    mut acceptor: A,
    endpoint: E,
    limits: &HttpSettings,
    send_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    A: Acceptor,
    A::Io: Unpin,
    E: Endpoint + 'static,
{
    let endpoint = Arc::new(endpoint.map_to_response());
    let max_connections = within_open_files_limit(limits.max_connections());
    let permits = Arc::new(Semaphore::new(max_connections));
    let head_wait = head_wait(limits);
    let connections = TaskTracker::new();
    // Cancelled at shutdown: each connection finishes its request, then closes.
    let stopping = CancellationToken::new();
    // Cancelled when the drain time is over: what is still open is dropped.
    let abort = CancellationToken::new();
    let mut refused: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = acceptor.accept() => accepted,
        };
        let (io, local, remote, scheme) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // Out of file descriptors, typically: give the open connections time to close
                // rather than spin on the listener.
                tracing::warn!(error = %error, "accepting a connection failed");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Over the cap: closed at once, never queued.
            drop(io);
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max = max_connections,
                    "HTTP_MAX_CONNECTIONS reached; closing new connections"
                );
            }
            continue;
        };
        let endpoint = Arc::clone(&endpoint);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let endpoint = Arc::clone(&endpoint);
            let request = (request, local.clone(), remote.clone(), scheme.clone()).into();
            async move {
                let response = endpoint.get_response(request).await;
                Ok::<_, Infallible>(hyper::Response::from(response))
            }
        });
        let stopping = stopping.clone();
        let abort = abort.clone();
        connections.spawn(async move {
            let _permit = permit;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_wait)
                .keep_alive(true)
                .serve_connection(TokioIo::new(SendTimeout::new(io, send_timeout)), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopping.cancelled() => {}
                _ = abort.cancelled() => return,
            }
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection => {}
                _ = abort.cancelled() => {}
            }
        });
    }
    drop(acceptor);
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "requests still running after the drain time; closing their connections"
        );
        abort.cancel();
        connections.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use poem::listener::{Listener, TcpListener};

    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let inner = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let port = inner.local_addr()[0].as_socket_addr().unwrap().port();
        let mut acceptor = NoDelayAcceptor(inner);
        let _client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (stream, ..) = acceptor.accept().await.unwrap();
        assert!(stream.nodelay().unwrap(), "TCP_NODELAY is set");
    }

    /// Serves a "hello" endpoint with `limits` on a free port until the returned sender fires.
    async fn serving(limits: HttpSettings) -> (u16, tokio::sync::oneshot::Sender<()>) {
        let inner = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let port = inner.local_addr()[0].as_socket_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let endpoint = poem::endpoint::make_sync(|_| "hello");
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            serve(
                NoDelayAcceptor(inner),
                endpoint,
                &limits,
                Duration::from_secs(15),
                shutdown,
                Duration::from_secs(1),
            )
            .await;
        });
        (port, stop)
    }

    /// Reads until EOF or a reset; what arrived.
    async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        tokio::time::timeout(within, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .expect("the connection is closed in time");
        all
    }

    #[tokio::test]
    async fn half_sent_headers_are_closed_after_the_header_timeout() {
        use tokio::io::AsyncWriteExt;
        let (port, _stop) = serving(HttpSettings {
            http_header_read_timeout_ms: 200,
            ..HttpSettings::default()
        })
        .await;
        let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let sent = std::time::Instant::now();
        read_to_close(&mut client, Duration::from_secs(5)).await;
        assert!(
            sent.elapsed() >= Duration::from_millis(150),
            "{:?}",
            sent.elapsed()
        );
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_closed_at_once_and_the_next_one_served() {
        use tokio::io::AsyncWriteExt;
        let (port, _stop) = serving(HttpSettings {
            http_max_connections: 1,
            ..HttpSettings::default()
        })
        .await;
        let held = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut over = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let refused = read_to_close(&mut over, Duration::from_secs(2)).await;
        assert!(refused.is_empty(), "closed without an answer");
        drop(held);
        // The permit comes back once the held connection's task ends.
        let answered = loop {
            let mut next = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let _ = next
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let answer = read_to_close(&mut next, Duration::from_secs(2)).await;
            if !answer.is_empty() {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(answered.starts_with(b"HTTP/1.1 200"));
        assert!(answered.ends_with(b"hello"));
    }
}
