//! The API's connection limits, against the real binary: half-sent requests are closed after
//! `HTTP_HEADER_READ_TIMEOUT_MS`, connections beyond
//! `HTTP_MAX_CONNECTIONS` are closed at once, and an idle kept-alive connection is closed after
//! `HTTP_KEEPALIVE_TIMEOUT_MS`; normal requests keep answering.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    api_client::ApiClient,
    helpers::{eventually, eventually_within, fresh_settings, TestApp},
    process::{memory_kib, observer, RowsyncProcess},
};

/// A request line and one header, and then nothing.
const HALF_REQUEST: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: rowsync\r\n";

/// Raises this process's soft limit on open files to its hard limit (the child inherits it);
/// returns the new soft limit.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    memory_kib(pid, "VmRSS:").expect("VmRSS")
}

/// Opens `n` connections to `port` and sends each [`HALF_REQUEST`]; returns them with the time
/// the request was sent. A connection the server already closed may fail to send: kept anyway.
async fn half_sent(port: u16, n: usize) -> Vec<(TcpStream, Instant)> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let mut socket = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .expect("connecting in time")
        .expect("connecting");
        let _ = socket.write_all(HALF_REQUEST).await;
        sockets.push((socket, Instant::now()));
    }
    sockets
}

/// Reads until EOF (or a reset), discarding what arrives; `None` if `within` passes first.
async fn until_closed(socket: &mut TcpStream, within: Duration) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

async fn settings_with_schema() -> (rowsync::config::Settings, TestApp) {
    let settings = fresh_settings();
    let observer = observer(&settings).await;
    (settings, observer)
}

/// A load test (thousands of sockets): `scripts/test` runs it after the suite, alone
/// (`cargo test --test api -- --ignored --test-threads=1 listing_limits http_limits`).
#[tokio::test]
#[ignore = "load test: scripts/test runs it alone after the suite"]
async fn half_sent_requests_are_closed_after_the_header_timeout_while_others_answer() {
    let nofile = raise_open_files_limit();
    // The test and the child each hold one descriptor per connection, plus their own.
    let n = 3_000.min(nofile.saturating_sub(300) as usize);
    assert!(
        n >= 1_000,
        "RLIMIT_NOFILE {nofile} allows only {n} connections"
    );
    let (settings, observer) = settings_with_schema().await;
    let app = RowsyncProcess::start_with(
        &settings,
        &[
            ("HTTP_HEADER_READ_TIMEOUT_MS", "2000"),
            ("HTTP_MAX_CONNECTIONS", "10000"),
        ],
        None,
    )
    .await;
    let pid = app.child.id().expect("running");
    assert!(app.live().await);
    assert!(app.rows().await.is_empty());
    let before = rss_kib(pid);

    let mut sockets = half_sent(app.port(), n).await;
    let peak = rss_kib(pid);
    // Other requests answer while the half-sent ones are open.
    assert!(app.live().await, "GET /health/live answers");
    assert!(app.rows().await.is_empty(), "the listing answers");

    let started = Instant::now();
    for (socket, sent) in &mut sockets {
        let closed = until_closed(socket, Duration::from_secs(30))
            .await
            .expect("every half-sent connection is closed by the header timeout");
        assert!(
            closed.duration_since(*sent) >= Duration::from_millis(1_900),
            "closed after the timeout, not before ({:?})",
            closed.duration_since(*sent)
        );
    }
    let all_closed = started.elapsed();
    drop(sockets);
    // A new client: the old one's pooled connection was idle about as long as the timeout, and
    // the server may close it just as the client reuses it (the race a load balancer avoids by
    // an idle timeout shorter than the server's).
    let fresh = ApiClient::on_port(app.port());
    assert!(fresh.live().await, "GET /health/live answers after");
    assert!(fresh.rows().await.is_empty(), "the listing answers after");

    // Once they are closed and the process is idle, resident memory comes back to within 10 MB
    // of where it was (the allocator purges every arena once the process goes idle).
    let after = eventually_within(
        Duration::from_secs(20),
        "resident memory to come back within 10 MB",
        || async {
            let now = rss_kib(pid);
            (now <= before + 10 * 1024).then_some(now)
        },
    )
    .await;
    eprintln!(
        "{n} half-sent requests: RSS {before} KiB before, {peak} KiB with them open, {after} KiB \
         after; all closed {all_closed:?} after the last was sent"
    );
    drop(app);
    observer.cleanup().await;
}

/// A load test (thousands of sockets, resident memory): `scripts/test` runs it after the
/// suite, alone (`cargo test --test api -- --ignored --test-threads=1 listing_limits http_limits`).
#[tokio::test]
#[ignore = "load test: scripts/test runs it alone after the suite"]
async fn connections_beyond_the_cap_are_closed_at_once() {
    const CAP: usize = 50;
    const EXCESS: usize = 100;
    raise_open_files_limit();
    let (settings, observer) = settings_with_schema().await;
    let app = RowsyncProcess::start_with(
        &settings,
        &[
            ("HTTP_MAX_CONNECTIONS", "50"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
        ],
        None,
    )
    .await;
    let pid = app.child.id().expect("running");
    let before = rss_kib(pid);

    // The cap's worth, held open by the long header timeout (the client's pooled connection,
    // if still open, holds one slot too)...
    let mut held = half_sent(app.port(), CAP).await;
    // ...then more: each is closed at once.
    let mut excess = half_sent(app.port(), EXCESS).await;
    let mut closed_at_once = 0;
    for (socket, sent) in &mut excess {
        if let Some(closed) = until_closed(socket, Duration::from_secs(2)).await {
            assert!(closed.duration_since(*sent) < Duration::from_secs(2));
            closed_at_once += 1;
        }
    }
    assert_eq!(
        closed_at_once, EXCESS,
        "every connection over the cap is closed at once"
    );
    let mut still_open = 0;
    for (socket, _) in &mut held {
        if until_closed(socket, Duration::from_millis(20))
            .await
            .is_none()
        {
            still_open += 1;
        }
    }
    assert!(
        still_open >= CAP - 1,
        "the connections within the cap stay open ({still_open} of {CAP})"
    );
    let during = rss_kib(pid);
    assert!(
        during <= before + 10 * 1024,
        "memory stays within budget: {before} KiB before, {during} KiB at the cap"
    );

    // Once they go, normal traffic continues.
    drop(held);
    eventually(
        "GET /health/live to answer once the held connections go",
        || async { app.live().await.then_some(()) },
    )
    .await;
    assert!(app.rows().await.is_empty(), "the listing answers");
    eprintln!("cap {CAP}: {EXCESS} excess closed at once; RSS {before} KiB before, {during} KiB at the cap");
    drop(app);
    observer.cleanup().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() {
    let (settings, observer) = settings_with_schema().await;
    let app = RowsyncProcess::start_with(
        &settings,
        &[
            ("HTTP_KEEPALIVE_TIMEOUT_MS", "1000"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "30000"),
        ],
        None,
    )
    .await;
    let mut socket = TcpStream::connect(("127.0.0.1", app.port()))
        .await
        .expect("connecting");
    // Two requests on one connection: it is kept alive.
    for _ in 0..2 {
        socket
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: rowsync\r\n\r\n")
            .await
            .expect("sending");
        let head = read_response(&mut socket).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let idle_from = Instant::now();
    let closed = until_closed(&mut socket, Duration::from_secs(10))
        .await
        .expect("the idle connection is closed");
    let idle = closed.duration_since(idle_from);
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
        "closed after about the keep-alive timeout, not {idle:?}"
    );
    eventually_within(Duration::from_secs(5), "live", || async {
        app.live().await.then_some(())
    })
    .await;
    drop(app);
    observer.cleanup().await;
}

/// Reads one response with a `Content-Length` body; returns its head.
async fn read_response(socket: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = socket.read(&mut buf).await.expect("reading");
            assert!(n > 0, "closed mid-response");
            data.extend_from_slice(&buf[..n]);
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .expect("a Content-Length");
                if data.len() >= end + 4 + length {
                    return head;
                }
            }
        }
    })
    .await
    .expect("a response in time")
}
