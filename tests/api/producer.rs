//! The keyed producer behind `write_to_kafka`: a record whose caller gave up before it was sent
//! is not sent, since that caller was told nothing was written.

use futures_util::FutureExt;
use rowsync::kafka::{partitioner::partition_for_key, producer::TopicProducer, Kafka};

use crate::helpers::{spawn_app, PARTITIONS};

#[tokio::test]
async fn records_of_callers_that_gave_up_before_they_were_sent_are_not_sent() {
    let app = spawn_app().await;
    let topic = app.settings.topics.objects_to_kafka_topic.clone();
    let kafka = Kafka::connect(&app.settings.kafka).await.unwrap();
    let producer = TopicProducer::connect(&kafka, &topic).await.unwrap();

    // Each call queues its record at its first poll and is then dropped, as a request whose
    // client left would be. Nothing here yields, so the produce tasks cannot run before every
    // one of them has given up.
    for n in 0..30 {
        let gave_up = producer
            .send_keyed(format!("gone-{n}").into_bytes(), b"{}".to_vec())
            .now_or_never();
        assert!(gave_up.is_none(), "call {n} was answered without waiting");
    }
    // Then one call per partition that waits for its answer.
    let mut kept = Vec::new();
    for n in 0.. {
        let key = format!("kept-{n}");
        let partition = partition_for_key(key.as_bytes(), PARTITIONS);
        if kept.iter().any(|(_, p)| *p == partition) {
            continue;
        }
        let (written_to, _) = producer
            .send_keyed(key.clone().into_bytes(), b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(written_to, partition);
        kept.push((key, partition));
        if kept.len() == PARTITIONS as usize {
            break;
        }
    }

    let mut written: Vec<String> = app
        .read_topic(&topic)
        .await
        .into_iter()
        .map(|(_, r)| String::from_utf8(r.record.key.unwrap()).unwrap())
        .collect();
    written.sort();
    let mut expected: Vec<String> = kept.into_iter().map(|(key, _)| key).collect();
    expected.sort();
    assert_eq!(written, expected, "only the records of callers that waited");
    app.cleanup().await;
}
