//! `rowsync healthcheck`: asks the API on this machine for `/health/live` with a bare HTTP/1.0
//! request over a TCP stream, so an image with nothing but the binary can probe itself.
//! Serving the endpoint is [`crate::http::health_api`]'s job.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// Bound on the whole check: connect, request and status line.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Longest status line read; a real one is about 20 bytes.
const MAX_STATUS_LINE: u64 = 256;

/// Why the API is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// Nothing answered within the bound (a hung or overloaded process).
    #[error("{addr} did not answer within {timeout:?}")]
    TimedOut { addr: SocketAddr, timeout: Duration },
    /// Connecting, writing or reading failed (usually: nothing listens there).
    #[error("cannot reach {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The answer's status line is not `HTTP/1.x 200 …`.
    #[error("{addr} answered {status_line:?}, not 200")]
    Unhealthy {
        addr: SocketAddr,
        status_line: String,
    },
}

/// Where to probe the API listening on `listen_addr`: the same port, on loopback when it listens
/// on every interface (`0.0.0.0` or `::`), else on its own address.
pub fn probe_addr(listen_addr: SocketAddr) -> SocketAddr {
    let ip = match listen_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen_addr.port())
}

/// `GET /health/live` at `addr`; `Ok` only for status 200 within `timeout`.
pub async fn check(addr: SocketAddr, timeout: Duration) -> Result<(), HealthcheckError> {
    let status_line = tokio::time::timeout(timeout, fetch_status_line(addr))
        .await
        .map_err(|_| HealthcheckError::TimedOut { addr, timeout })?
        .map_err(|source| HealthcheckError::Io { addr, source })?;
    if status_code(&status_line) == Some(200) {
        Ok(())
    } else {
        Err(HealthcheckError::Unhealthy { addr, status_line })
    }
}

/// Sends the request and returns the first line of the answer, without its line ending.
async fn fetch_status_line(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    // HTTP/1.0: the server closes the connection after one answer, so no keep-alive to manage.
    let request = format!("GET /health/live HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut line = Vec::new();
    BufReader::new(stream)
        .take(MAX_STATUS_LINE)
        .read_until(b'\n', &mut line)
        .await?;
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

/// The status code of an HTTP/1.x status line such as `HTTP/1.1 200 OK`.
fn status_code(status_line: &str) -> Option<u16> {
    let mut parts = status_line.split_ascii_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::net::TcpListener;

    use super::*;

    /// A one-connection server that reads the request, answers `answer` (or nothing) and
    /// returns the request it read.
    async fn serve_once(
        answer: Option<&'static str>,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding loopback");
        let addr = listener.local_addr().expect("a bound address");
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("one connection");
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            loop {
                let mut line = String::new();
                if reader
                    .read_line(&mut line)
                    .await
                    .expect("reading the request")
                    == 0
                {
                    break;
                }
                request.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            match answer {
                Some(answer) => {
                    reader
                        .get_mut()
                        .write_all(answer.as_bytes())
                        .await
                        .expect("answering");
                }
                // Hold the connection open without answering, like a hung process.
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
            request
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_200_answer_is_healthy_and_the_request_is_a_plain_get_of_health_live() {
        let (addr, server) = serve_once(Some(
            "HTTP/1.0 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}",
        ))
        .await;
        check(addr, TIMEOUT).await.expect("healthy");
        let request = server.await.expect("the server task ran");
        assert!(
            request.starts_with("GET /health/live HTTP/1.0\r\n"),
            "{request:?}"
        );
        assert!(
            request.contains(&format!("Host: {addr}\r\n")),
            "{request:?}"
        );
    }

    #[tokio::test]
    async fn a_503_answer_is_unhealthy() {
        let (addr, _server) = serve_once(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n")).await;
        let error = check(addr, TIMEOUT).await.expect_err("unhealthy");
        assert!(
            matches!(&error, HealthcheckError::Unhealthy { status_line, .. } if status_line == "HTTP/1.1 503 Service Unavailable"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_that_is_not_http_is_unhealthy() {
        let (addr, _server) = serve_once(Some("SSH-2.0-OpenSSH_9.2\r\n")).await;
        let error = check(addr, TIMEOUT).await.expect_err("unhealthy");
        assert!(
            matches!(error, HealthcheckError::Unhealthy { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_fails_within_the_timeout() {
        let (addr, server) = serve_once(None).await;
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let error = check(addr, timeout).await.expect_err("unhealthy");
        assert!(
            matches!(error, HealthcheckError::TimedOut { .. }),
            "{error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        server.abort();
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy() {
        // Bind and drop, so the port is very likely free.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding loopback")
            .local_addr()
            .expect("a bound address");
        let error = check(addr, TIMEOUT).await.expect_err("unhealthy");
        assert!(matches!(error, HealthcheckError::Io { .. }), "{error:?}");
    }

    #[test]
    fn the_probe_goes_to_loopback_when_listening_on_every_interface() {
        let probe =
            |listen: &str| probe_addr(listen.parse().expect("a socket address")).to_string();
        assert_eq!(probe("0.0.0.0:8000"), "127.0.0.1:8000");
        assert_eq!(probe("[::]:8000"), "[::1]:8000");
        assert_eq!(probe("127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(probe("10.1.2.3:8000"), "10.1.2.3:8000");
    }

    #[test]
    fn status_codes_are_read_from_http_1_status_lines_only() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.0 200"), Some(200));
        assert_eq!(status_code("HTTP/1.1 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("HTTP/2 200"), None);
        assert_eq!(status_code("HTTP/1.1 2000 OK"), None);
        assert_eq!(status_code(""), None);
    }
}
