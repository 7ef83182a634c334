//! The API's TCP acceptor: poem's, with Nagle's algorithm switched off on every connection.
//!
//! A streamed body leaves in several writes (head and first chunk, more chunks, the final empty
//! chunk); with Nagle on, each write after the first waits for the client's delayed ACK
//! (measured in BENCHMARKS.md, "What changed"). poem does not set `TCP_NODELAY` itself.

use poem::{
    http::uri::Scheme,
    listener::{Acceptor, TcpAcceptor},
    web::{LocalAddr, RemoteAddr},
};
use tokio::net::TcpStream;

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
}
