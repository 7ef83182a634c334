//! Records of every shape go through the broker and come back as written: rowsync's patched
//! rskafka (vendor/rskafka) computes each record's length instead of encoding it twice, sizes
//! batches up front and writes the frame's length into the request's own buffer.

use std::collections::BTreeMap;

use rskafka::{
    client::partition::{Compression, UnknownTopicHandling},
    record::Record,
};

use crate::helpers::spawn_app;

/// Sizes around every varint boundary a length can cross (1, 2 and 3 bytes), and empty.
const SIZES: [usize; 8] = [0, 1, 63, 64, 127, 128, 8_191, 70_000];

/// A value of `len` bytes that says which record it belongs to.
fn bytes(tag: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (tag * 31 + i) as u8).collect()
}

/// Every combination of key, value and headers, from absent to 70 kB.
fn records() -> Vec<Record> {
    let mut records = Vec::new();
    let now = chrono::Utc::now().timestamp_millis();
    for (n, &size) in SIZES.iter().enumerate() {
        for key in [None, Some(bytes(n, size))] {
            for value in [None, Some(bytes(n + 1, size))] {
                for headers in [0, 1, 3] {
                    let headers: BTreeMap<String, Option<Vec<u8>>> = (0..headers)
                        .map(|h| (format!("header-{h}-{size}"), Some(bytes(h, size.min(200)))))
                        .collect();
                    records.push(Record {
                        key: key.clone(),
                        value: value.clone(),
                        headers,
                        // Deltas of either sign, some needing several varint bytes, in whole
                        // milliseconds (rskafka truncates sub-millisecond deltas).
                        timestamp: chrono::DateTime::from_timestamp_millis(
                            now + records.len() as i64 * 997 - 20_000,
                        )
                        .expect("a valid timestamp"),
                    });
                }
            }
        }
    }
    records
}

#[tokio::test]
async fn records_of_every_shape_come_back_as_written_plain_and_compressed() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    let client = app
        .kafka
        .partition_client(&topic, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let written = records();
    // One batch of all of them uncompressed, then again compressed, then one at a time.
    let mut sent = Vec::new();
    for compression in [Compression::NoCompression, Compression::Snappy] {
        client
            .produce(written.clone(), compression)
            .await
            .expect("a batch of every shape is accepted");
        sent.extend(written.iter().cloned());
    }
    for record in &written {
        client
            .produce(vec![record.clone()], Compression::NoCompression)
            .await
            .expect("each record alone is accepted");
        sent.push(record.clone());
    }

    let read: Vec<Record> = app
        .read_topic(&topic)
        .await
        .into_iter()
        .filter(|(partition, _)| *partition == 0)
        .map(|(_, r)| r.record)
        .collect();
    assert_eq!(read.len(), sent.len(), "every record comes back once");
    for (i, (read, sent)) in read.iter().zip(&sent).enumerate() {
        assert_eq!(read.key, sent.key, "record {i}: key");
        assert_eq!(read.value, sent.value, "record {i}: value");
        assert_eq!(read.headers, sent.headers, "record {i}: headers");
        assert_eq!(
            read.timestamp.timestamp_millis(),
            sent.timestamp.timestamp_millis(),
            "record {i}: timestamp"
        );
    }
    app.cleanup().await;
}
