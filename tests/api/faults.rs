//! Faults: the broker and PostgreSQL unreachable or hanging for a while, and a broker restart
//! that loses every topic. Faults are injected by a TCP proxy between the app and each server.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{
    fault_proxy::{app_behind_postgres_proxy, proxy_kafka, Fault, FaultProxy},
    helpers::{eventually, fresh_settings, update, TestApp},
    test_broker::TestBroker,
};

/// An app whose broker is reached through `broker`'s fault proxy, with Kafka calls bounded at
/// 2 s so faults show quickly.
async fn app_through(broker: &TestBroker) -> TestApp {
    let mut settings = fresh_settings();
    proxy_kafka(&mut settings, broker);
    settings.kafka.kafka_request_timeout_ms = 2_000;
    TestApp::start(settings).await
}

/// `write_to_kafka` for rows 1 to 4, called together: each call's status and JSON body.
async fn publish_together(app: &TestApp) -> Vec<(u16, Value)> {
    let calls = (1..=4).map(|id| app.write_to_kafka(id));
    let mut answers = Vec::new();
    for response in futures_util::future::join_all(calls).await {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        answers.push((status, body));
    }
    answers
}

/// With rows 1 to 4 in place: `write_to_kafka` calls made together succeed; while `proxy` cuts
/// the connection or hangs, each gets a JSON 503 within 5 s (they share the failure); once it
/// passes again, they succeed again.
async fn publishing_fails_fast_and_recovers(app: &TestApp, proxy: &FaultProxy) {
    for (status, body) in publish_together(app).await {
        assert_eq!(status, 200, "{body}");
    }
    for fault in [Fault::Cut, Fault::Hang] {
        proxy.set(fault);
        let started = Instant::now();
        for (status, body) in publish_together(app).await {
            assert_eq!(status, 503, "{fault:?}: {body}");
            assert_eq!(body["error"], "unavailable", "{body}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{fault:?}: answered after {:?}",
            started.elapsed()
        );
        proxy.set(Fault::Pass);
        eventually(
            &format!("write_to_kafka to work again after {fault:?}"),
            || async {
                publish_together(app)
                    .await
                    .iter()
                    .all(|(status, _)| *status == 200)
                    .then_some(())
            },
        )
        .await;
    }
}

/// `count` updates of ids `0..count`, all named `name`.
fn updates(count: i64, name: &str) -> Vec<String> {
    (0..count).map(|id| update(id, name)).collect()
}

async fn produce_all(app: &TestApp, topic: &str, values: &[String]) {
    for (partition, chunk) in values.chunks(values.len().div_ceil(3)).enumerate() {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        app.produce(topic, partition as i32, &chunk).await;
    }
}

/// Waits until every row of the table is named `name` and there are `count` of them.
async fn wait_until_all_named(app: &TestApp, count: i64, name: &str) {
    eventually(&format!("{count} rows named {name}"), || async {
        let row = app
            .db
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE name = $1) FROM some_model",
                &[&name],
            )
            .await
            .ok()?;
        let (all, named): (i64, i64) = (row.get(0), row.get(1));
        (all == count && named == count).then_some(())
    })
    .await;
}

async fn wait_for_state(app: &TestApp, worker: &str, state: &str) -> Value {
    eventually(&format!("worker {worker} {state}"), || async {
        let status = app.worker(worker).await;
        (status["state"] == state).then_some(status)
    })
    .await
}

/// Readiness answers 503 within a second, naming the failing dependency.
async fn assert_not_ready_quickly(app: &TestApp, failing: &str) {
    let started = Instant::now();
    let response = app.ready().await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_ne!(body["checks"][failing], "ok", "{body}");
    assert!(
        elapsed < Duration::from_millis(1500),
        "readiness took {elapsed:?}"
    );
}

#[tokio::test]
async fn workers_recover_by_themselves_after_the_broker_is_cut_off_or_hangs() {
    let broker = TestBroker::start().await;
    let app = app_through(&broker).await;
    let topic = app.settings.topics.updates_topic.clone();
    produce_all(&app, &topic, &updates(300, "first")).await;
    app.start_upcreate().await;
    wait_until_all_named(&app, 300, "first").await;

    for fault in [Fault::Cut, Fault::Hang] {
        broker.proxy.set(fault);
        let status = wait_for_state(&app, "upcreate", "retrying").await;
        let errors: Vec<&Value> = status["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["last_error"])
            .filter(|e| !e.is_null())
            .collect();
        // A partition's own failure, or (once no heartbeat got through within the session
        // timeout) the worker's: it lost its group membership and cannot join again.
        assert!(
            !errors.is_empty() || status["last_error"].is_string(),
            "{status}"
        );
        assert_not_ready_quickly(&app, "kafka").await;

        broker.proxy.set(Fault::Pass);
        let name = format!("after {fault:?}");
        produce_all(&app, &topic, &updates(300, &name)).await;
        wait_until_all_named(&app, 300, &name).await;
        wait_for_state(&app, "upcreate", "running").await;
    }
    // A slow network only slows things down.
    broker.proxy.set(Fault::Delay(Duration::from_millis(30)));
    produce_all(&app, &topic, &updates(300, "slow")).await;
    wait_until_all_named(&app, 300, "slow").await;
    broker.proxy.set(Fault::Pass);
    // Exactly once: nothing lost, nothing applied twice.
    eventually("1200 records applied", || async {
        (app.worker_total("upcreate", "records_applied").await == 1200).then_some(())
    })
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn write_to_kafka_answers_503_while_the_broker_is_cut_off_and_recovers_after() {
    let broker = TestBroker::start().await;
    let app = app_through(&broker).await;
    app.insert_rows(&[(1, "a"), (2, "b"), (3, "c"), (4, "d")])
        .await;
    // Calls made together share produce requests, and so a failed one.
    publishing_fails_fast_and_recovers(&app, &broker.proxy).await;
    app.cleanup().await;
}

#[tokio::test]
async fn write_to_kafka_answers_503_while_postgresql_is_cut_off_and_recovers_after() {
    let (postgres, app) = app_behind_postgres_proxy(2_000).await;
    app.insert_rows(&[(1, "a"), (2, "b"), (3, "c"), (4, "d")])
        .await;
    // Calls made together share one query for their rows, and so a failed one.
    publishing_fails_fast_and_recovers(&app, &postgres).await;
    app.cleanup().await;
}

#[tokio::test]
async fn workers_recover_by_themselves_after_postgresql_is_cut_off_or_hangs() {
    let (postgres, app) = app_behind_postgres_proxy(5_000).await;
    let topic = app.settings.topics.updates_topic.clone();
    produce_all(&app, &topic, &updates(300, "first")).await;
    app.start_upcreate().await;
    wait_until_all_named(&app, 300, "first").await;

    for fault in [Fault::Cut, Fault::Hang] {
        postgres.set(fault);
        let name = format!("during {fault:?}");
        produce_all(&app, &topic, &updates(300, &name)).await;
        wait_for_state(&app, "upcreate", "retrying").await;
        assert_not_ready_quickly(&app, "postgres").await;
        postgres.set(Fault::Pass);
        wait_until_all_named(&app, 300, &name).await;
        wait_for_state(&app, "upcreate", "running").await;
    }
    eventually("900 records applied", || async {
        (app.worker_total("upcreate", "records_applied").await == 900).then_some(())
    })
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_broker_restarted_without_its_topics_is_noticed_and_new_records_are_all_applied() {
    let mut broker = TestBroker::start().await;
    let app = app_through(&broker).await;
    let topic = app.settings.topics.updates_topic.clone();
    let before: Vec<String> = (0..5).map(|id| update(id, "before")).collect();
    app.produce(
        &topic,
        0,
        &before.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    app.start_upcreate().await;
    wait_until_all_named(&app, 5, "before").await;

    broker.restart().await;
    // The worker recreates its topic; then more records arrive than it had consumed before,
    // so only the fingerprint of the last applied record shows the topic is new.
    eventually("the topic recreated with 3 partitions", || async {
        let topics = app.kafka.list_topics().await.ok()?;
        topics
            .iter()
            .any(|t| t.name == topic && t.partitions.len() == 3)
            .then_some(())
    })
    .await;
    let after: Vec<String> = (100..108).map(|id| update(id, "after")).collect();
    app.produce(
        &topic,
        0,
        &after.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    eventually("all 8 new records applied", || async {
        let row = app
            .db
            .query_one("SELECT count(*) FROM some_model WHERE name = 'after'", &[])
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 8).then_some(())
    })
    .await;
    let status = wait_for_state(&app, "upcreate", "running").await;
    let resets = status["partitions"][0]["offset_resets"].as_u64().unwrap();
    assert!(resets >= 1, "{status}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_worker_resuming_on_a_recreated_topic_that_is_still_empty_applies_all_its_new_records() {
    let mut broker = TestBroker::start().await;
    let app = app_through(&broker).await;
    let topic = app.settings.topics.updates_topic.clone();
    let before: Vec<String> = (0..5).map(|id| update(id, "before")).collect();
    app.produce(
        &topic,
        0,
        &before.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    app.start_upcreate().await;
    wait_until_all_named(&app, 5, "before").await;
    app.stop_upcreate().await;

    broker.restart().await;
    app.start_upcreate().await;
    // The worker recreates the topic and resumes at its stored offset 5, in an empty partition:
    // nothing to compare its last record with yet.
    eventually("the worker positioned at its stored offset", || async {
        let status = app.worker("upcreate").await;
        let p0 = status["partitions"]
            .as_array()?
            .iter()
            .find(|p| p["partition"] == 0)?
            .clone();
        (p0["next_offset"] == 5 && p0["high_watermark"] == 0).then_some(())
    })
    .await;
    let after: Vec<String> = (100..108).map(|id| update(id, "after")).collect();
    app.produce(
        &topic,
        0,
        &after.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    eventually(
        "all 8 new records applied, not just those past offset 5",
        || async {
            let row = app
                .db
                .query_one("SELECT count(*) FROM some_model WHERE name = 'after'", &[])
                .await
                .ok()?;
            (row.get::<_, i64>(0) == 8).then_some(())
        },
    )
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_worker_started_while_the_broker_is_cut_off_says_why_it_has_no_partitions() {
    let broker = TestBroker::start().await;
    let app = app_through(&broker).await;
    broker.proxy.set(Fault::Cut);
    app.start_upcreate().await;
    let status = wait_for_state(&app, "upcreate", "retrying").await;
    assert_eq!(status["partitions"], Value::Array(vec![]), "{status}");
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("cannot join consumer group "), "{status}");
    assert!(status["last_error_at"].is_string(), "{status}");

    broker.proxy.set(Fault::Pass);
    let status = eventually("the partitions listed", || async {
        let status = app.worker("upcreate").await;
        (status["state"] == "running" && status["partitions"].as_array()?.len() == 3)
            .then_some(status)
    })
    .await;
    assert!(status.get("last_error").is_none(), "{status}");
    app.cleanup().await;
}
