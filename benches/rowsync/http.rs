//! The REST scenarios: process start-up and idle memory, listing rows (beside the old Django
//! service), streaming a large listing, `write_to_kafka`, and the response log's cost.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request};
use rskafka::{client::partition::Compression, record::Record};
use tokio::process::Command;

use crate::{
    fixture::{self, Fixture},
    load::{self, LoadResult, RequestFn},
    report::{Figure, Target},
    Sizes,
};

fn get(path: &'static str) -> RequestFn {
    Arc::new(move |_| (Method::GET, path.to_owned()))
}

async fn fill(fixture: &Fixture, rows: usize) -> anyhow::Result<()> {
    // Names of 10 to 40 characters, like the Django service's rows.
    fixture
        .db
        .batch_execute(&format!(
            "INSERT INTO some_model \
             SELECT g, 'row ' || g || repeat('x', (g % 31)::int) FROM generate_series(1, {rows}) g; \
             ANALYZE some_model"
        ))
        .await?;
    Ok(())
}

/// Ready time after start with migrations applied, and idle memory.
pub async fn startup(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let fixture = Fixture::new("startup").await?;
    fixture.migrate().await?;
    let mut ready = Vec::new();
    let mut idle = Vec::new();
    let mut migrate = Vec::new();
    for _ in 0..sizes.startups {
        migrate.push(fixture.migrate().await?.as_secs_f64() * 1000.0);
        let rowsync = fixture.rowsync(&[]).await?;
        ready.push(rowsync.ready_after.as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.push(rowsync.rss_mb()?);
        rowsync.stop().await?;
    }
    fixture.cleanup().await;
    Ok(vec![
        Figure::new(
            "process",
            format!(
                "start → /health/ready 200, migrations applied (median of {})",
                sizes.startups
            ),
            median_f64(&mut ready),
            "ms",
        )
        .baseline(
            "`rowsync migrate` with nothing to apply",
            median_f64(&mut migrate),
        )
        .target(Target::AtMost(200.0)),
        Figure::new(
            "process",
            "idle resident memory, 1 s after ready",
            median_f64(&mut idle),
            "MB",
        )
        .target(Target::AtMost(20.0)),
    ])
}

/// The old service's list endpoint (benches/django), run with gunicorn against the same schema.
struct Django {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

impl Django {
    async fn start(schema: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/django/serve");
        let url: tokio_postgres::Config = crate::fixture::database_url().parse()?;
        let host = match url.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".into(),
        };
        let child = Command::new(script)
            .arg("--port")
            .arg(port.to_string())
            .env("DB_HOST", host)
            .env(
                "DB_PORT",
                url.get_ports().first().copied().unwrap_or(5432).to_string(),
            )
            .env("DB_NAME", url.get_dbname().unwrap_or("postgres"))
            .env("POSTGRES_USER", url.get_user().unwrap_or("postgres"))
            .env("DB_SCHEMA", schema)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting benches/django/serve")?;
        let addr = format!("127.0.0.1:{port}").parse()?;
        let django = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Ok(mut sender) = load::connect(addr).await {
                if let Ok((200, _)) = load::fetch(&mut sender, addr, "/api/some_models/").await {
                    return Ok(django);
                }
            }
            ensure!(
                Instant::now() < deadline,
                "the Django service did not answer within 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}

async fn rows_in(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<usize> {
    let mut sender = load::connect(addr).await?;
    let (status, body) = load::fetch(&mut sender, addr, path).await?;
    ensure!(status == 200, "GET {path}: {status}");
    Ok(serde_json::from_slice::<Vec<serde_json::Value>>(&body)?.len())
}

/// `GET /api/some_models/` of a table of `sizes.list_rows`, 8 connections, beside Django.
pub async fn list(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let fixture = Fixture::new("list").await?;
    fixture.migrate().await?;
    fill(&fixture, sizes.list_rows).await?;

    let django = Django::start(&fixture.name).await?;
    ensure!(
        rows_in(django.addr, "/api/some_models/").await? == sizes.list_rows,
        "Django lists every row"
    );
    let old = load::run(
        django.addr,
        8,
        sizes.warmup,
        sizes.load,
        get("/api/some_models/"),
        200,
    )
    .await?;
    django.stop().await;

    let rowsync = fixture.rowsync(&[]).await?;
    ensure!(
        rows_in(rowsync.addr, "/api/some_models/").await? == sizes.list_rows,
        "rowsync lists every row"
    );
    let new = load::run(
        rowsync.addr,
        8,
        sizes.warmup,
        sizes.load,
        get("/api/some_models/"),
        200,
    )
    .await?;
    let (published, dropped) = response_log_totals(&rowsync, "list_some_models").await?;
    rowsync.stop().await?;
    fixture.cleanup().await;
    ensure!(
        old.errors == 0 && new.errors == 0,
        "list: errors (Django {}, rowsync {})",
        old.errors,
        new.errors
    );
    // All but the first listing are listing-cache hits: nothing changes the table meanwhile.
    let what = format!(
        "GET /api/some_models/, {} rows, 8 connections (listing-cache hits)",
        sizes.list_rows
    );
    Ok(vec![
        Figure::new("list", format!("{what}: requests/s"), new.rps(), "req/s")
            .baseline("Django + DRF, gunicorn", old.rps())
            .target(Target::RatioAtLeast(30.0)),
        Figure::new("list", "p99 latency", new.percentile_ms(0.99), "ms")
            .baseline("Django p99", old.percentile_ms(0.99))
            .target(Target::AtMost(50.0)),
        Figure::new(
            "list",
            "response-log records dropped (queue full)",
            dropped,
            "records",
        )
        .baseline("records published", published),
    ])
}

/// Response-log records published and dropped once the queue has drained (within 30 s) after
/// a load of requests to `operation`.
async fn response_log_totals(
    rowsync: &crate::fixture::Rowsync,
    operation: &str,
) -> anyhow::Result<(f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let served = rowsync
            .metric_sum(&format!(
                "rowsync_http_requests_total{{operation=\"{operation}\""
            ))
            .await?;
        let published = rowsync
            .metric_sum("rowsync_response_log_records_published")
            .await?;
        let dropped = rowsync
            .metric_sum("rowsync_response_log_records_dropped")
            .await?;
        if published + dropped >= served || Instant::now() > deadline {
            return Ok((published, dropped));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A listing of `sizes.large_rows` rows streams: memory stays flat and the first byte is quick.
pub async fn stream(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let fixture = Fixture::new("stream").await?;
    fixture.migrate().await?;
    fill(&fixture, sizes.large_rows).await?;
    let rowsync = fixture.rowsync(&[]).await?;
    let addr = rowsync.addr;

    // Baselines: a one-row page's first byte, and memory before the big listing.
    let mut sender = load::connect(addr).await?;
    let mut small_first_byte = Vec::new();
    for _ in 0..20 {
        let (_, first, _, _) = timed_get(&mut sender, addr, "/api/some_models/?limit=1").await?;
        small_first_byte.push(first.as_secs_f64() * 1000.0);
    }
    let before = rowsync.rss_mb()?;
    rowsync.reset_peak()?;
    let mut first_byte = Vec::new();
    let mut total = Duration::ZERO;
    let mut bytes = 0;
    for _ in 0..sizes.stream_rounds {
        let (status, first, all, body) = timed_get(&mut sender, addr, "/api/some_models/").await?;
        ensure!(status == 200, "stream: {status}");
        let rows = body.iter().filter(|b| **b == b'{').count();
        ensure!(
            rows == sizes.large_rows,
            "stream: {rows} rows of {}",
            sizes.large_rows
        );
        first_byte.push(first.as_secs_f64() * 1000.0);
        total = all;
        bytes = body.len();
    }
    let peak = rowsync.peak_rss_mb()?;
    rowsync.stop().await?;
    fixture.cleanup().await;
    let what = format!(
        "GET /api/some_models/, {} rows ({:.0} MB)",
        sizes.large_rows,
        bytes as f64 / 1e6
    );
    Ok(vec![
        Figure::new(
            "stream",
            format!("{what}: server peak resident memory"),
            peak,
            "MB",
        )
        .baseline("resident memory before the listing", before)
        .target(Target::AtMost(64.0)),
        Figure::new(
            "stream",
            format!(
                "time to first byte, median of {} rounds (never cached: bodies over 4 MiB)",
                first_byte.len()
            ),
            median_f64(&mut first_byte),
            "ms",
        )
        .baseline(
            "first byte of a one-row page (median of 20; pages are never cached)",
            median_f64(&mut small_first_byte),
        )
        .target(Target::AtMost(50.0)),
        Figure::new(
            "stream",
            "whole body",
            bytes as f64 / 1e6 / total.as_secs_f64(),
            "MB/s",
        ),
    ])
}

/// GETs `path`, reading the body as it comes: status, time to the first body byte, time to
/// the end, and the body.
async fn timed_get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: std::net::SocketAddr,
    path: &str,
) -> anyhow::Result<(u16, Duration, Duration, Vec<u8>)> {
    sender.ready().await?;
    let request = Request::builder()
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::new())?;
    let started = Instant::now();
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut first = None;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if !data.is_empty() {
                first.get_or_insert_with(|| started.elapsed());
                bytes.extend_from_slice(&data);
            }
        }
    }
    Ok((status, first.unwrap_or_default(), started.elapsed(), bytes))
}

/// `POST write_to_kafka`, 32 connections, beside the HTTP stack's own ceiling; and produce
/// requests of the size Nagle's algorithm used to stall.
pub async fn write_to_kafka(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let fixture = Fixture::new("publish").await?;
    fixture.migrate().await?;
    fill(&fixture, 1000).await?;
    let rowsync = fixture.rowsync(&[]).await?;
    let live = load::run(
        rowsync.addr,
        32,
        sizes.warmup,
        sizes.load,
        get("/health/live"),
        200,
    )
    .await?;
    let publish: RequestFn = Arc::new(|n| {
        (
            Method::POST,
            format!("/api/some_models/{}/write_to_kafka/", n % 1000 + 1),
        )
    });
    let published = load::run(rowsync.addr, 32, sizes.warmup, sizes.load, publish, 200).await?;
    rowsync.stop().await?;
    ensure!(
        published.errors == 0,
        "write_to_kafka: {} errors",
        published.errors
    );

    // Produce requests of 1 record and of 1,000 records (~45 KB) from the benchmark itself.
    let topic = fixture.topic("nagle");
    fixture.create_topic(&topic).await?;
    let client = fixture.partition(&topic, 0).await?;
    let mut one = Vec::new();
    let mut thousand = Vec::new();
    for round in 0..sizes.produce_rounds {
        for (size, times) in [(1, &mut one), (1000, &mut thousand)] {
            let batch: Vec<Record> = (0..size)
                .map(|i| Record {
                    key: Some(format!("{i}").into_bytes()),
                    value: Some(
                        format!(r#"{{"id": {i}, "name": "row {round} {i}"}}"#).into_bytes(),
                    ),
                    headers: Default::default(),
                    timestamp: chrono::Utc::now(),
                })
                .collect();
            let started = Instant::now();
            client.produce(batch, Compression::NoCompression).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let _ = fixture
        .kafka
        .controller_client()?
        .delete_topic(&topic, 5_000)
        .await;
    fixture.cleanup().await;
    let quantile = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    Ok(vec![
        Figure::new(
            "publish",
            "POST write_to_kafka, 32 connections: requests/s",
            published.rps(),
            "req/s",
        )
        .baseline("GET /health/live, 32 connections", live.rps())
        .target(Target::AtLeast(10_000.0)),
        Figure::new(
            "publish",
            "write_to_kafka p99",
            published.percentile_ms(0.99),
            "ms",
        )
        .baseline("GET /health/live p99", live.percentile_ms(0.99))
        .target(Target::AtMost(10.0)),
        Figure::new(
            "publish",
            "write_to_kafka requests slower than 40 ms (Nagle's stall)",
            published.slower_than(40.0) as f64,
            "requests",
        )
        .baseline("of all requests", published.requests as f64)
        .target(Target::AtMost(0.0)),
        Figure::new(
            "publish",
            format!(
                "rskafka produce of 1,000 records (~45 KB), p99 of {}",
                sizes.produce_rounds
            ),
            quantile(&mut thousand, 0.99),
            "ms",
        )
        .baseline("produce of 1 record, p99", quantile(&mut one, 0.99))
        .target(Target::AtMost(40.0)),
    ])
}

/// The response log's cost on a small GET, and that it drops nothing at that load.
///
/// Two processes serve side by side, one with the log on and one with it off, and the load
/// alternates between them in slices of `log_slice`, in alternating order. Slices next to each
/// other see the same machine, so the drift and the neighbours' bursts of a shared two-core
/// machine fall on both sides alike instead of on one side's runs. Each pair of slices gives a
/// cost; the median pair counts. The log-on side publishes its last batch of a slice (at most
/// one 20 ms linger of records) during the next slice: with 1 s slices that is ~2 % of the
/// log's own work counted against the other side, a bias of ~0.1 % of requests/s.
pub async fn response_log(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let fixture = Fixture::new("restlog").await?;
    fixture.migrate().await?;
    fill(&fixture, 10).await?;
    let small = get("/api/some_models/");
    let on = fixture.rowsync(&[("REST_LOG_ENABLED", "true")]).await?;
    let off = fixture.rowsync(&[("REST_LOG_ENABLED", "false")]).await?;
    let requests_metric = "rowsync_http_requests_total{operation=\"list_some_models\"";
    for side in [&on, &off] {
        let warm = load::run(
            side.addr,
            8,
            sizes.warmup,
            sizes.log_slice,
            Arc::clone(&small),
            200,
        )
        .await?;
        ensure!(warm.errors == 0, "response log: {} errors", warm.errors);
    }
    // CPU per request (µs) of each process, and of a local tansu broker per logged request.
    let broker = fixture::local_broker_pid();
    let cpu_before = [on.cpu_seconds()?, off.cpu_seconds()?];
    let broker_before = broker.map(fixture::cpu_seconds).transpose()?;
    let requests_before = [
        on.metric_sum(requests_metric).await?,
        off.metric_sum(requests_metric).await?,
    ];
    let (mut on_slices, mut off_slices): (Vec<LoadResult>, Vec<LoadResult>) = (vec![], vec![]);
    for pair in 0..sizes.log_pairs {
        let order = if pair % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for log_on in order {
            let side = if log_on { &on } else { &off };
            let slice = load::run(
                side.addr,
                8,
                LOG_SLICE_WARMUP,
                sizes.log_slice,
                Arc::clone(&small),
                200,
            )
            .await?;
            ensure!(slice.errors == 0, "response log: {} errors", slice.errors);
            if log_on {
                on_slices.push(slice);
            } else {
                off_slices.push(slice);
            }
        }
    }
    let cpu_after = [on.cpu_seconds()?, off.cpu_seconds()?];
    let broker_after = broker.map(fixture::cpu_seconds).transpose()?;
    let requests = [
        on.metric_sum(requests_metric).await? - requests_before[0],
        off.metric_sum(requests_metric).await? - requests_before[1],
    ];
    // Every request of the log-on side (warm-up included) is published once the queue drains.
    let (published, dropped) = response_log_totals(&on, "list_some_models").await?;
    on.stop().await?;
    off.stop().await?;
    fixture.cleanup().await;

    let cpu_per_request = |i: usize| 1e6 * (cpu_after[i] - cpu_before[i]) / requests[i];
    let mut costs: Vec<f64> = on_slices
        .iter()
        .zip(&off_slices)
        .map(|(on, off)| 100.0 * (1.0 - on.rps() / off.rps()))
        .collect();
    let cost = median_f64(&mut costs);
    let quartile = |q: f64| costs[((costs.len() - 1) as f64 * q).round() as usize];
    let spread = format!(
        "pairs: min {:.1}, quartiles {:.1} / {:.1}, max {:.1}",
        costs[0],
        quartile(0.25),
        quartile(0.75),
        costs[costs.len() - 1]
    );
    let rps = |v: &[LoadResult]| v.iter().map(LoadResult::rps).sum::<f64>() / v.len() as f64;
    let mut figures = vec![
        Figure::new(
            "response log",
            format!(
                "GET of 10 rows, 8 connections, log on: requests/s (mean of {} slices of {:?})",
                on_slices.len(),
                sizes.log_slice
            ),
            rps(&on_slices),
            "req/s",
        )
        .baseline(
            "REST_LOG_ENABLED=false, the slices between",
            rps(&off_slices),
        ),
        Figure::new(
            "response log",
            format!(
                "cost (1 − on/off), median of {} slice pairs ({spread})",
                costs.len()
            ),
            cost,
            "%",
        )
        .target(Target::AtMost(5.0)),
        Figure::new(
            "response log",
            "rowsync CPU per request, log on",
            cpu_per_request(0),
            "µs",
        )
        .baseline("log off", cpu_per_request(1)),
        Figure::new("response log", "records dropped", dropped, "records")
            .baseline("records published", published)
            .target(Target::AtMost(0.0)),
    ];
    // Only a broker on this machine (tansu) can be measured; a remote one is not. It takes in
    // the log-on side's records only.
    if let (Some(before), Some(after)) = (broker_before, broker_after) {
        figures.push(Figure::new(
            "response log",
            "local broker (tansu) CPU per logged request",
            1e6 * (after - before) / requests[0],
            "µs",
        ));
    }
    Ok(figures)
}

/// Not measured at the start of each response-log slice: the load generator's connections open.
const LOG_SLICE_WARMUP: Duration = Duration::from_millis(100);

/// The median of some numbers, which it sorts (NaN when there are none).
fn median_f64(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}
