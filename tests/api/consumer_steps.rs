//! The partition consumer driven one step at a time, for orderings a running worker only hits
//! by chance.

use std::{collections::HashMap, sync::Arc};

use rowsync::{
    config::Settings,
    kafka::{producer::TopicProducer, Kafka},
    workers::{
        dead_letter::DeadLetterQueue, PartitionConsumer, Step, WorkerContext, WorkerDeps,
        WorkerKind, WorkerStats,
    },
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    fault_proxy::{proxy_kafka, Fault},
    helpers::{fresh_settings, TestApp},
    test_broker::TestBroker,
};

fn updates(ids: std::ops::Range<i64>, name: &str) -> Vec<String> {
    ids.map(|id| json!({"id": id, "name": name}).to_string())
        .collect()
}

/// What the upcreate worker's loops share, for the settings' updates topic.
fn upcreate_context(
    settings: &Settings,
    kafka: Kafka,
    dead_letters: DeadLetterQueue,
    fetch_max_bytes: i32,
) -> Arc<WorkerContext> {
    let kind = WorkerKind::Upcreate;
    let topic = &settings.topics.updates_topic;
    let deps = WorkerDeps {
        pool: rowsync::db::pool(&settings.database).unwrap(),
        kafka,
        topics: HashMap::from([(kind, topic.clone())]),
        dead_letters: HashMap::from([(kind, dead_letters)]),
        topic_layout: (3, 1),
        fetch_max_bytes,
        fetch_budget_bytes: 8 * 1024 * 1024,
        fetch_max_wait_ms: 500,
        batch_metrics: rowsync::workers::metrics::BatchMetrics::default(),
        db_timeout: std::time::Duration::from_secs(5),
        group: Default::default(),
    };
    let stats = Arc::new(WorkerStats::new(kind, topic));
    Arc::new(WorkerContext::new(kind, &deps, stats))
}

async fn produce(app: &TestApp, topic: &str, values: &[String]) {
    app.produce(
        topic,
        0,
        &values.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
}

#[tokio::test]
async fn records_reaching_a_recreated_topic_after_the_consumer_positioned_itself_are_all_applied() {
    let mut broker = TestBroker::start().await;
    let mut settings = fresh_settings();
    proxy_kafka(&mut settings, &broker);
    let app = TestApp::start(settings.clone()).await;
    let topic = settings.topics.updates_topic.clone();
    let kafka = Kafka::connect(&settings.kafka).await.unwrap();
    let context = upcreate_context(
        &settings,
        kafka.clone(),
        DeadLetterQueue::new(None),
        1024 * 1024,
    );
    let cancel = CancellationToken::new();

    produce(&app, &topic, &updates(0..5, "before")).await;
    let mut consumer = PartitionConsumer::new(Arc::clone(&context), 0);
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Positioned { at: 0 }
    );
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Applied {
            valid: 5,
            invalid: 0
        }
    );

    // The broker loses every topic; the topic comes back empty.
    broker.restart().await;
    kafka.ensure_topics(&[&topic], 3, 1).await.unwrap();
    let mut consumer = PartitionConsumer::new(Arc::clone(&context), 0);
    // Nothing at offset 4 to compare the last applied record with yet: it resumes at 5.
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Positioned { at: 5 }
    );
    // Then more records arrive than it had consumed before.
    produce(&app, &topic, &updates(100..108, "after")).await;
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Reset { from: 5, to: 0 }
    );
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Applied {
            valid: 8,
            invalid: 0
        }
    );

    cancel.cancel();
    assert_eq!(consumer.step(&cancel).await.unwrap(), Step::Cancelled);
    app.cleanup().await;
}

#[tokio::test]
async fn a_batch_whose_dead_letters_cannot_be_written_is_not_applied_until_they_can() {
    // The source topic on the shared broker; the dead-letter topic on a broker of its own,
    // behind a proxy, so only the dead-letter write fails.
    let dlq_broker = TestBroker::start().await;
    let settings = fresh_settings();
    let app = TestApp::start(settings.clone()).await;
    let topic = settings.topics.updates_topic.clone();
    let mut dlq_settings = settings.kafka.clone();
    dlq_settings.kafka_bootstrap_servers = vec![dlq_broker.bootstrap()];
    dlq_settings.kafka_request_timeout_ms = 1_000;
    let dlq_kafka = Kafka::connect(&dlq_settings).await.unwrap();
    let dlq_topic = format!("{topic}.dlq");
    dlq_kafka.ensure_topics(&[&dlq_topic], 3, 1).await.unwrap();
    let dlq = TopicProducer::connect(&dlq_kafka, &dlq_topic)
        .await
        .unwrap();
    let context = upcreate_context(
        &settings,
        Kafka::connect(&settings.kafka).await.unwrap(),
        DeadLetterQueue::new(Some(Arc::new(dlq))),
        1024 * 1024,
    );
    let cancel = CancellationToken::new();
    let mut consumer = PartitionConsumer::new(Arc::clone(&context), 0);
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Positioned { at: 0 }
    );
    produce(
        &app,
        &topic,
        &[
            json!({"id": 1, "name": "held"}).to_string(),
            "not json".to_owned(),
        ],
    )
    .await;

    dlq_broker.proxy.set(Fault::Cut);
    let failed = consumer.step(&cancel).await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(
        app.rows().await.is_empty(),
        "nothing of the batch is applied"
    );
    let stored = app
        .db
        .query_opt(
            "SELECT next_offset FROM kafka_offsets WHERE partition = 0",
            &[],
        )
        .await
        .unwrap();
    assert!(stored.is_none(), "the offset did not move");

    dlq_broker.proxy.set(Fault::Pass);
    // rskafka reconnects on its own schedule; each failed step changes nothing.
    let deadline = tokio::time::Instant::now() + crate::helpers::DEADLINE;
    let applied = loop {
        match consumer.step(&cancel).await {
            Ok(step) => break step,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still failing: {error}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(
        applied,
        Step::Applied {
            valid: 1,
            invalid: 1
        }
    );
    assert_eq!(app.rows().await.len(), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_batch_fetched_ahead_is_neither_lost_nor_applied_after_a_stop() {
    let settings = fresh_settings();
    let app = TestApp::start(settings.clone()).await;
    let topic = settings.topics.updates_topic.clone();
    let kafka = Kafka::connect(&settings.kafka).await.unwrap();
    // Smaller than one produced batch: each fetch returns exactly one batch.
    let context = upcreate_context(&settings, kafka, DeadLetterQueue::new(None), 100);
    produce(&app, &topic, &updates(0..5, "first")).await;
    produce(&app, &topic, &updates(5..10, "second")).await;

    let cancel = CancellationToken::new();
    let mut consumer = PartitionConsumer::new(Arc::clone(&context), 0);
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Positioned { at: 0 }
    );
    // Applies the first batch while the second is fetched in the background.
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Applied {
            valid: 5,
            invalid: 0
        }
    );
    cancel.cancel();
    assert_eq!(consumer.step(&cancel).await.unwrap(), Step::Cancelled);
    drop(consumer);
    let ids: Vec<i64> = app.rows().await.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        [4, 3, 2, 1, 0],
        "the fetched-ahead batch is not applied"
    );

    // A new consumer resumes right after the first batch: the second is applied, once.
    let cancel = CancellationToken::new();
    let mut consumer = PartitionConsumer::new(context, 0);
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Positioned { at: 5 }
    );
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Applied {
            valid: 5,
            invalid: 0
        }
    );
    let ids: Vec<i64> = app.rows().await.iter().map(|r| r.id).collect();
    assert_eq!(ids, (0..10).rev().collect::<Vec<_>>());
    app.cleanup().await;
}

#[tokio::test]
async fn a_backlog_is_applied_in_batches_that_start_small_and_grow() {
    let settings = fresh_settings();
    let app = TestApp::start(settings.clone()).await;
    let topic = settings.topics.updates_topic.clone();
    let kafka = Kafka::connect(&settings.kafka).await.unwrap();
    let context = upcreate_context(&settings, kafka, DeadLetterQueue::new(None), 4 << 20);
    // 80 record batches of ~21 KB (1.7 MB in all): one fetch of the maximum size would take
    // the whole backlog at once.
    for batch in 0..80 {
        produce(
            &app,
            &topic,
            &updates(batch * 500..(batch + 1) * 500, "backlog"),
        )
        .await;
    }

    let cancel = CancellationToken::new();
    let mut consumer = PartitionConsumer::new(Arc::clone(&context), 0);
    assert_eq!(
        consumer.step(&cancel).await.unwrap(),
        Step::Positioned { at: 0 }
    );
    let mut applied = Vec::new();
    while applied.iter().sum::<usize>() < 40_000 {
        match consumer.step(&cancel).await.unwrap() {
            Step::Applied { valid, invalid: 0 } => applied.push(valid),
            other => panic!("unexpected step {other:?} after {applied:?}"),
        }
    }
    // The first fetch asks for FIRST_FETCH_BYTES (64 KiB: three of these record batches and
    // the one crossing the limit), and each later one for twice the one before.
    assert!(
        applied[0] <= 2_500,
        "first batch of {} records, expected about 64 KiB of them: {applied:?}",
        applied[0]
    );
    assert!(
        applied.len() >= 3
            && applied[..applied.len() - 1]
                .windows(2)
                .all(|w| w[1] >= w[0]),
        "batches grow until the backlog runs out: {applied:?}"
    );
    assert!(
        *applied.iter().max().unwrap() >= 4 * applied[0],
        "batches grow: {applied:?}"
    );
    assert_eq!(app.rows().await.len(), 40_000);
    cancel.cancel();
    app.cleanup().await;
}
