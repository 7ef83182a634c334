//! The partition consumer driven one step at a time, for orderings a running worker only hits
//! by chance.

use std::sync::Arc;

use rowsync::{
    kafka::Kafka,
    workers::{
        consumer::{PartitionConsumer, Step, WorkerContext},
        dead_letter::DeadLetterQueue,
        WorkerKind, WorkerStats,
    },
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    helpers::{fresh_settings, TestApp},
    test_broker::TestBroker,
};

fn updates(ids: std::ops::Range<i64>, name: &str) -> Vec<String> {
    ids.map(|id| json!({"id": id, "name": name}).to_string())
        .collect()
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
    settings.kafka.kafka_bootstrap_servers = vec![broker.bootstrap()];
    let app = TestApp::start(settings.clone()).await;
    let topic = settings.topics.updates_topic.clone();
    let kafka = Kafka::connect(&settings.kafka).await.unwrap();
    let context = Arc::new(WorkerContext {
        kind: WorkerKind::Upcreate,
        topic: topic.clone(),
        pool: rowsync::db::pool(&settings.database).unwrap(),
        kafka: kafka.clone(),
        stats: Arc::new(WorkerStats::new(WorkerKind::Upcreate, &topic)),
        dead_letters: DeadLetterQueue::new(None),
        topic_layout: (3, 1),
        fetch_max_bytes: 1024 * 1024,
        batch_metrics: rowsync::metrics::Metrics::new().batches(),
    });
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
