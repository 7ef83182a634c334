//! `GET /metrics`: Prometheus text with requests, worker counters, the response log and the pools.

use serde_json::json;

use crate::helpers::{eventually, fresh_settings, spawn_app, TestApp};

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_records_batches_the_response_log_and_the_pool() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    app.produce(
        &topic,
        1,
        &[
            &json!({"id": 1, "name": "a"}).to_string(),
            "bad",
            &json!({"id": 2, "name": "b"}).to_string(),
        ],
    )
    .await;
    app.start_upcreate().await;
    for _ in 0..3 {
        app.rows().await;
    }
    app.get("/api/no_such_path").await;
    let labels = format!(r#"worker="upcreate",topic="{topic}",partition="1""#);
    let text = eventually("the batch and the response log in the metrics", || async {
        let text = app.metrics().await;
        let applied = sample(&text, &format!("rowsync_records_applied_total{{{labels}}}"));
        let published = sample(&text, "rowsync_response_log_records_published_total");
        (applied == Some(2.0) && published >= Some(5.0)).then_some(text)
    })
    .await;
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    expect(
        r#"rowsync_http_requests_total{operation="list_some_models",method="GET",status="200"}"#,
        3.0,
    );
    expect(
        r#"rowsync_http_requests_total{operation="none",method="GET",status="404"}"#,
        1.0,
    );
    expect(
        r#"rowsync_http_request_duration_seconds_count{operation="list_some_models",method="GET",status="200"}"#,
        3.0,
    );
    expect(&format!("rowsync_records_invalid_total{{{labels}}}"), 1.0);
    expect(
        &format!("rowsync_records_dead_lettered_total{{{labels}}}"),
        1.0,
    );
    expect(&format!("rowsync_consumer_lag{{{labels}}}"), 0.0);
    expect(
        &format!("rowsync_worker_batch_records_count{{{labels}}}"),
        1.0,
    );
    expect(
        &format!("rowsync_worker_batch_records_sum{{{labels}}}"),
        3.0,
    );
    expect(
        &format!("rowsync_worker_batch_duration_seconds_count{{{labels}}}"),
        1.0,
    );
    expect(r#"rowsync_worker_running{worker="upcreate"}"#, 1.0);
    expect(r#"rowsync_worker_running{worker="delete"}"#, 0.0);
    // A stopped worker holds nothing; a running one reserves bytes for the fetches it keeps
    // open (an idle partition waits on the broker for new records).
    expect(r#"rowsync_worker_fetch_held_bytes{worker="delete"}"#, 0.0);
    eventually(
        "the upcreate worker's open fetches in the fetch budget",
        || async {
            let text = app.metrics().await;
            let held = sample(
                &text,
                r#"rowsync_worker_fetch_held_bytes{worker="upcreate"}"#,
            );
            held.filter(|bytes| *bytes > 0.0)
        },
    )
    .await;
    expect("rowsync_response_log_records_dropped_total", 0.0);
    expect(
        r#"rowsync_db_pool_connections{pool="main",state="max"}"#,
        8.0,
    );
    // The listing pool: half the main pool's size (LISTING_MAX_CONCURRENT unset).
    expect(
        r#"rowsync_db_pool_connections{pool="listing",state="max"}"#,
        4.0,
    );
    expect(r#"rowsync_db_pool_waiting{pool="listing"}"#, 0.0);
    assert!(
        text.contains("# TYPE rowsync_http_request_duration_seconds histogram"),
        "{text}"
    );
    app.cleanup().await;
}

/// `DB_POOL_IDLE_TIMEOUT_MS`: connections left unused that long are closed (their buffers
/// with them), all but the most recently used one, as `rowsync_db_pool_connections` shows.
#[tokio::test]
async fn idle_pool_connections_are_closed_but_the_most_recent_one() {
    let mut settings = fresh_settings();
    settings.database.db_pool_idle_timeout_ms = 1_000;
    let app = TestApp::start(settings).await;
    let open = |text: &str| {
        let state = |s: &str| {
            sample(
                text,
                &format!(r#"rowsync_db_pool_connections{{pool="main",state="{s}"}}"#),
            )
            .expect("the main pool's gauges")
        };
        state("idle") + state("in_use")
    };
    // Several pages at once: the pool opens several connections.
    let pages = (0..16).map(|_| app.get("/api/some_models/?limit=5"));
    for page in futures_util::future::join_all(pages).await {
        assert_eq!(page.status(), 200);
    }
    let opened = open(&app.metrics().await);
    assert!(opened >= 2.0, "{opened} connections");
    // Quiet for longer than the timeout: all closed but one (which the workers' re-read of
    // their desired state, every 5 s, and readiness keep using).
    eventually("the idle connections to be closed", || async {
        let open = open(&app.metrics().await);
        (open == 1.0).then_some(()).ok_or(open)
    })
    .await;
    let page = app.get("/api/some_models/?limit=5").await;
    assert_eq!(page.status(), 200);
    app.cleanup().await;
}
