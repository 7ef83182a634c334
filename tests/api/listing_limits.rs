//! Issue 16: clients that ask for the full listing and then read nothing hold at most
//! `LISTING_MAX_CONCURRENT` connections of the listing pool, never the main pool's: the workers,
//! `write_to_kafka`, small pages and readiness keep answering; listings beyond the limit get 503
//! with `Retry-After` at once; after `HTTP_SEND_TIMEOUT_MS` the stalled listings are cut and
//! their connections come back. Against the binary (`scripts/test` runs the shipped static
//! release build), configured by its environment.

use std::time::{Duration, Instant};

use crate::{
    api_client::{read_until_closed, unread_request, ApiClient},
    helpers::{eventually, fresh_settings, update, TestApp},
    process::{observer, RowsyncProcess},
};

/// `DB_POOL_SIZE`: the main pool's connections.
const POOL_SIZE: u32 = 8;
/// `LISTING_MAX_CONCURRENT`: full listings streamed at once.
const LIMIT: u32 = 2;
const SEND_TIMEOUT: Duration = Duration::from_secs(6);

/// Produces `count` upserts from `first_id` on (through `observer`'s Kafka client) and returns
/// how long `app`'s worker took to apply them (its `records_applied` reaching
/// `applied_before + count`).
async fn apply_batch(
    app: &ApiClient,
    observer: &TestApp,
    first_id: i64,
    count: i64,
    applied_before: u64,
) -> Duration {
    let values: Vec<String> = (first_id..first_id + count)
        .map(|id| update(id, "loaded"))
        .collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let started = Instant::now();
    observer
        .produce(&observer.settings.topics.updates_topic, 0, &values)
        .await;
    let target = applied_before + count as u64;
    eventually("the worker to apply the batch", || async {
        let applied = app.worker_total("upcreate", "records_applied").await;
        (applied >= target).then_some(())
    })
    .await;
    started.elapsed()
}

/// The 99th percentile (nearest rank: the second slowest of 100) of 100 `write_to_kafka`
/// calls, each answering 200. (Of 50 it was the slowest alone: one stray pause of a shared
/// machine failed the bound.)
async fn write_to_kafka_p99(app: &ApiClient) -> Duration {
    let mut latencies = Vec::new();
    for id in 1..=100 {
        let started = Instant::now();
        let response = app.write_to_kafka(id).await;
        latencies.push(started.elapsed());
        assert_eq!(response.status(), 200, "write_to_kafka {id}");
    }
    latencies.sort();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

/// A load test with a latency bound: `scripts/test` runs it after the suite, alone
/// (`cargo test --test api -- --ignored --test-threads=1 listing_limits http_limits`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: scripts/test runs it alone after the suite"]
async fn stalled_full_listings_starve_nothing_and_are_cut() {
    let settings = fresh_settings();
    let observer = observer(&settings).await;
    observer
        .db
        .batch_execute(
            "INSERT INTO some_model (id, name) \
             SELECT i, 'row number ' || i FROM generate_series(1, 1000000) AS i",
        )
        .await
        .expect("inserting a million rows");
    let app = RowsyncProcess::start_with(
        &settings,
        &[
            ("DB_POOL_SIZE", &POOL_SIZE.to_string()),
            ("LISTING_MAX_CONCURRENT", &LIMIT.to_string()),
            (
                "HTTP_SEND_TIMEOUT_MS",
                &SEND_TIMEOUT.as_millis().to_string(),
            ),
        ],
        None,
    )
    .await;
    app.start_upcreate().await;

    // Unloaded: the worker's time for a batch.
    let unloaded = apply_batch(&app, &observer, 2_000_000, 500, 0).await;
    let unloaded_p99 = write_to_kafka_p99(&app).await;

    // 4 × DB_POOL_SIZE clients ask for the full listing and read nothing: the limit's worth
    // stream (and stall), the rest are refused.
    let mut stalled = Vec::new();
    for _ in 0..4 * POOL_SIZE {
        stalled.push(unread_request(app.port(), "/api/some_models/").await);
    }
    // Every slot taken: one more listing is refused at once, with Retry-After.
    let refused = eventually("the listing slots to be taken", || async {
        let started = Instant::now();
        let response = app.get("/api/some_models/").await;
        let took = started.elapsed();
        (response.status() == 503).then_some((response, took))
    })
    .await;
    let (response, took) = refused;
    assert!(
        took < Duration::from_secs(1),
        "refused at once, took {took:?}"
    );
    assert!(
        response.headers().get("retry-after").is_some(),
        "503 carries Retry-After"
    );
    let body: serde_json::Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"], "unavailable");

    // The streamed listings have filled every buffer on their way: PostgreSQL waits to write.
    eventually("both listings to stall on their clients", || async {
        let row = observer
            .db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE query LIKE '%SELECT id, name FROM some_model ORDER BY id DESC%' \
                 AND wait_event = 'ClientWrite'",
                &[],
            )
            .await
            .ok()?;
        (row.get::<_, i64>(0) >= i64::from(LIMIT)).then_some(())
    })
    .await;

    // Meanwhile: write_to_kafka answers fast.
    let p99 = write_to_kafka_p99(&app).await;
    // Run alone (see the attribute), so the bound is the issue's, whatever else the suite does.
    let bound = Duration::from_millis(50);
    assert!(
        p99 < bound,
        "write_to_kafka p99 {p99:?} (unloaded {unloaded_p99:?})"
    );
    // A small page and readiness answer.
    let page = app.get("/api/some_models/?limit=10").await;
    assert_eq!(page.status(), 200);
    let page: Vec<serde_json::Value> = page.json().await.expect("a page");
    assert_eq!(page.len(), 10);
    let ready = app.ready().await;
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    // The worker applies at no less than half its unloaded rate (plus a fetch wait of slack).
    let loaded = apply_batch(&app, &observer, 2_100_000, 500, 500).await;
    assert!(
        loaded <= unloaded * 2 + Duration::from_millis(500),
        "loaded {loaded:?} vs unloaded {unloaded:?}"
    );
    // Still stalled all along: the slots are still taken.
    assert_eq!(app.get("/api/some_models/").await.status(), 503);

    let load_ended = Instant::now();
    // After the send timeout the stalled listings are cut and their connections come back.
    eventually("a full listing to be served again", || async {
        let response = app.get("/api/some_models/").await;
        match response.status().as_u16() {
            200 => {
                let rows: Vec<serde_json::Value> = response.json().await.ok()?;
                Some(rows.len())
            }
            _ => None,
        }
    })
    .await;
    eprintln!(
        "listing served again {:?} after the load",
        load_ended.elapsed()
    );
    // The sockets of the cut listings end without the body's last chunk.
    let mut cut = 0;
    for socket in &mut stalled {
        let (received, closed) = read_until_closed(socket, Duration::from_secs(20), |seen| {
            // A refused one is whole once its JSON error has arrived.
            seen.starts_with(b"HTTP/1.1 503") && seen.ends_with(b"}")
        })
        .await;
        let head = String::from_utf8_lossy(&received[..received.len().min(12)]).into_owned();
        if head.starts_with("HTTP/1.1 200") {
            assert!(closed, "a cut listing's connection is closed");
            assert!(
                !received.ends_with(b"0\r\n\r\n"),
                "a cut listing does not end as a complete body"
            );
            cut += 1;
        } else {
            assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        }
    }
    assert_eq!(
        cut, LIMIT as usize,
        "exactly the limit streamed, and were cut"
    );

    // Their response-log records say the body was cut.
    let topic = observer.settings.topics.rest_log_topic.clone();
    eventually("the cut listings' response-log records", || async {
        let records = observer.read_topic(&topic).await;
        let cut: Vec<serde_json::Value> = records
            .iter()
            .filter_map(|(_, r)| serde_json::from_slice(r.record.value.as_deref()?).ok())
            .filter(|record: &serde_json::Value| record["cut"] == true)
            .collect();
        (cut.len() == LIMIT as usize).then_some(cut)
    })
    .await
    .iter()
    .for_each(|record| {
        assert_eq!(record["url"], "/api/some_models/", "{record}");
        assert_eq!(record["status"], 200, "{record}");
        assert_eq!(record["truncated"], true, "{record}");
        assert_eq!(record["data"], serde_json::Value::Null, "{record}");
    });

    drop(app);
    observer.cleanup().await;
}
