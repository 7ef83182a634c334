//! Graceful shutdown on SIGTERM and Ctrl-C, and the second signal that exits at once.

use std::time::{Duration, Instant};

use crate::{
    fault_proxy::{proxy_postgres, Fault},
    helpers::{eventually, fresh_settings, TestApp},
    process::RowsyncProcess,
};

async fn graceful_shutdown_on(signal: &str) {
    let settings = fresh_settings();
    // An in-process app only to create the schema and topics and to read them back.
    let mut observer = TestApp::start(settings.clone()).await;
    observer.stop().await;
    let mut process = RowsyncProcess::start(&settings).await;
    process.start_upcreate().await;
    for _ in 0..20 {
        process.rows().await;
    }

    process.signal(signal);
    assert_eq!(process.wait(Duration::from_secs(20)).await, Some(0));
    // Every response was published before the process exited.
    let logged = observer.read_topic(&settings.topics.rest_log_topic).await;
    assert_eq!(logged.len(), 21, "response-log records drained at shutdown");
    // Shutting down is not stopping: the worker still wants to run.
    let wanted: bool = observer
        .db
        .query_one(
            "SELECT running FROM worker_desired_state WHERE worker = 'upcreate'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(wanted);
    observer.cleanup().await;
}

#[tokio::test]
async fn sigterm_drains_the_response_log_and_exits_0() {
    graceful_shutdown_on("TERM").await;
}

#[tokio::test]
async fn ctrl_c_drains_the_response_log_and_exits_0() {
    graceful_shutdown_on("INT").await;
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let mut settings = fresh_settings();
    let mut observer = TestApp::start(settings.clone()).await;
    observer.stop().await;
    let postgres = proxy_postgres(&mut settings).await;
    let mut process = RowsyncProcess::start(&settings).await;
    process.start_upcreate().await;

    let partitions_positioned = || async {
        let status = process.worker("upcreate").await;
        let partitions = status["partitions"].as_array()?.clone();
        Some(partitions)
    };
    eventually("the worker to read its stored offsets", || async {
        let partitions = partitions_positioned().await?;
        (partitions.len() == 3 && partitions.iter().all(|p| p["next_offset"].is_i64()))
            .then_some(())
    })
    .await;

    // PostgreSQL stops answering while the worker applies a batch: a graceful stop would wait
    // for that batch (up to its deadline).
    postgres.set(Fault::Hang);
    observer
        .produce(
            &settings.topics.updates_topic,
            0,
            &[r#"{"id": 1, "name": "stuck"}"#],
        )
        .await;
    eventually("the worker to be applying a fetched batch", || async {
        let partitions = partitions_positioned().await?;
        partitions
            .iter()
            .any(|p| p["lag"].as_i64() > Some(0))
            .then_some(())
    })
    .await;

    process.signal("TERM");
    eventually("the listener to close", || async {
        (!process.accepts_connections().await).then_some(())
    })
    .await;
    let second = Instant::now();
    process.signal("TERM");
    assert_eq!(
        process.wait(Duration::from_secs(5)).await,
        Some(rowsync::shutdown::FORCED_EXIT_CODE)
    );
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "exited after {:?}",
        second.elapsed()
    );
    postgres.set(Fault::Pass);
    observer.cleanup().await;
}
