//! A closed-loop HTTP load generator: N keep-alive HTTP/1.1 connections, each sending its next
//! request as soon as the previous answer has been read whole, for a fixed time. Latencies go
//! into an HDR histogram (microseconds).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::{client::conn::http1, Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What a load run measured.
pub struct LoadResult {
    pub requests: u64,
    /// Answers that were not the expected status, or broke off.
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// Requests slower than `ms`.
    pub fn slower_than(&self, ms: f64) -> u64 {
        let bound = (ms * 1000.0) as u64;
        self.latency_us
            .iter_recorded()
            .filter(|v| v.value_iterated_to() > bound)
            .map(|v| v.count_at_value())
            .sum()
    }
}

/// One request of a run: method and path, chosen from the request's sequence number.
pub type RequestFn = Arc<dyn Fn(u64) -> (Method, String) + Send + Sync>;

/// Runs `connections` loops against `addr` for `warmup` (not measured) and then `duration`.
pub async fn run(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    request: RequestFn,
    expect_status: u16,
) -> anyhow::Result<LoadResult> {
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let request = Arc::clone(&request);
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            // The server said `Connection: close` (gunicorn's sync workers always do): the next
            // request opens a new connection, and that time counts in its latency.
            let mut reconnect = false;
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
            let (mut requests, mut errors) = (0u64, 0u64);
            let mut sequence = connection as u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let (method, path) = request(sequence);
                sequence += connections as u64;
                if reconnect {
                    sender = connect(addr).await?;
                }
                let ok = match send(&mut sender, addr, method, &path).await {
                    Ok((status, close)) => {
                        reconnect = close;
                        status == expect_status
                    }
                    Err(_) => {
                        // The connection broke: count it and open another.
                        sender = connect(addr).await?;
                        false
                    }
                };
                let done = Instant::now();
                if sent >= start {
                    requests += 1;
                    errors += u64::from(!ok);
                    histogram.saturating_record(done.duration_since(sent).as_micros() as u64);
                }
            }
            anyhow::Ok((histogram, requests, errors))
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let (mut requests, mut errors) = (0, 0);
    for task in tasks {
        let (histogram, r, e) = task.await??;
        latency_us.add(histogram)?;
        requests += r;
        errors += e;
    }
    ensure!(requests > 0, "no request finished within the run");
    Ok(LoadResult {
        requests,
        errors,
        elapsed: duration,
        latency_us,
    })
}

/// A keep-alive HTTP/1.1 connection with Nagle off, as a production client would have.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request and reads the whole answer; returns its status and whether the server
/// closes the connection after it.
pub async fn send(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> anyhow::Result<(u16, bool)> {
    let (status, close, _) = exchange(sender, addr, method, path).await?;
    Ok((status, close))
}

/// Sends one GET and returns its status and whole body.
pub async fn fetch(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(u16, Bytes)> {
    let (status, _, body) = exchange(sender, addr, Method::GET, path).await?;
    Ok((status, body))
}

/// One request: status, whether the server closes the connection after it, and the body.
async fn exchange(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> anyhow::Result<(u16, bool, Bytes)> {
    sender.ready().await?;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let close = response
        .headers()
        .get(hyper::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, close, body))
}
