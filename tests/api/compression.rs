//! `KAFKA_COMPRESSION`: every batch rowsync writes (objects, response log, dead letters) is
//! stored in the codec it names, and rowsync reads each of them back.

use rowsync::config::KafkaCompression;
use serde_json::Value;

use crate::{
    helpers::{eventually, fresh_settings, TestApp, PARTITIONS},
    raw_kafka::batch_codecs,
};

/// Kafka's codec ids, as a batch's attributes carry them.
fn codec_id(codec: KafkaCompression) -> i16 {
    match codec {
        KafkaCompression::None => 0,
        KafkaCompression::Gzip => 1,
        KafkaCompression::Snappy => 2,
        KafkaCompression::Lz4 => 3,
        KafkaCompression::Zstd => 4,
    }
}

/// Codecs of every batch of every partition of `topic`.
async fn codecs(app: &TestApp, topic: &str) -> Vec<i16> {
    let bootstrap = app.settings.kafka.bootstrap_servers()[0].clone();
    let mut all = Vec::new();
    for partition in 0..PARTITIONS {
        all.extend(batch_codecs(&bootstrap, topic, partition).await);
    }
    all
}

#[tokio::test]
async fn every_batch_rowsync_writes_uses_the_codec_kafka_compression_names() {
    for codec in [
        KafkaCompression::None,
        KafkaCompression::Gzip,
        KafkaCompression::Snappy,
        KafkaCompression::Lz4,
        KafkaCompression::Zstd,
    ] {
        let mut settings = fresh_settings();
        settings.kafka.kafka_compression = Some(codec);
        let app = TestApp::start(settings).await;
        let topics = app.settings.topics.clone();
        app.insert_rows(&[(1, "one"), (2, "two")]).await;
        for id in [1, 2] {
            let response = app.write_to_kafka(id).await;
            assert_eq!(response.status(), 200, "{codec:?}");
        }
        app.produce(&topics.updates_topic, 0, &["not json"]).await;
        app.start_upcreate().await;
        let dlq = format!("{}.dlq", topics.updates_topic);
        // Read back through rskafka (every codec decodes) and as stored (every batch in the codec).
        let letters = eventually("the dead letter", || async {
            let letters = app.read_topic(&dlq).await;
            (!letters.is_empty()).then_some(letters)
        })
        .await;
        assert_eq!(letters[0].1.record.value.as_deref(), Some(&b"not json"[..]));
        let objects = app.read_topic(&topics.objects_to_kafka_topic).await;
        let mut ids: Vec<i64> = objects
            .iter()
            .map(|(_, r)| {
                serde_json::from_slice::<Value>(r.record.value.as_deref().unwrap()).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, [1, 2], "{codec:?}");
        let logged = eventually("the response log", || async {
            let records = app.read_topic(&topics.rest_log_topic).await;
            (records.len() >= 3).then_some(records)
        })
        .await;
        assert!(logged.iter().all(|(_, r)| serde_json::from_slice::<Value>(
            r.record.value.as_deref().unwrap()
        )
        .is_ok()));
        for topic in [&topics.objects_to_kafka_topic, &topics.rest_log_topic, &dlq] {
            let stored = codecs(&app, topic).await;
            assert!(!stored.is_empty(), "{topic}");
            assert!(
                stored.iter().all(|c| *c == codec_id(codec)),
                "{codec:?}: {topic} holds batches in codecs {stored:?}"
            );
        }
        app.cleanup().await;
    }
}
