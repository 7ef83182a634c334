//! Writes records to one topic: keyed records on the partition Kafka's Java client would pick,
//! unkeyed batches round-robin. Each call waits for the broker's acknowledgement, within a bound.

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;
use rskafka::{
    client::partition::{Compression, PartitionClient},
    record::Record,
};

use super::{partitioner::partition_for_key, Kafka};
use crate::error::{bounded, Result};

/// Batches of at least this many bytes are compressed by [`TopicProducer::send_batch`].
pub const COMPRESS_FROM_BYTES: usize = 256 * 1024;

/// A producer for one topic, holding a client per partition (partition `i` at index `i`).
pub struct TopicProducer {
    topic: String,
    partitions: Vec<PartitionClient>,
    timeout: std::time::Duration,
    /// Next partition for an unkeyed batch.
    next: AtomicUsize,
}

impl TopicProducer {
    /// Connects to the leader of every partition of `topic`.
    pub async fn connect(kafka: &Kafka, topic: &str) -> Result<Self> {
        let mut partitions = Vec::new();
        for id in kafka.partitions(topic).await? {
            partitions.push(kafka.partition_client(topic, id).await?);
        }
        Ok(Self {
            topic: topic.to_owned(),
            partitions,
            timeout: kafka.timeout(),
            next: AtomicUsize::new(0),
        })
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes one keyed record; returns the partition and offset it got.
    pub async fn send_keyed(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(i32, i64)> {
        let partition = partition_for_key(&key, self.partitions.len() as i32);
        let record = Record {
            key: Some(key),
            value: Some(value),
            headers: Default::default(),
            timestamp: Utc::now(),
        };
        let client = &self.partitions[partition as usize];
        let offsets = bounded(
            "producing a record",
            self.timeout,
            client.produce(vec![record], Compression::NoCompression),
        )
        .await?;
        Ok((partition, offsets.first().copied().unwrap_or(-1)))
    }

    /// Writes records as one batch to partition `partition` modulo this topic's partition count.
    pub async fn send_to(&self, partition: i32, records: Vec<Record>) -> Result<()> {
        let index = partition.unsigned_abs() as usize % self.partitions.len();
        bounded(
            "producing a batch",
            self.timeout,
            self.partitions[index].produce(records, Compression::NoCompression),
        )
        .await?;
        Ok(())
    }

    /// Writes unkeyed values as one batch to the next partition in turn, snappy-compressed
    /// from [`COMPRESS_FROM_BYTES`] on (response-log records are JSON: large batches shrink
    /// several times over, and the broker has that much less to take in; small ones are not
    /// worth the CPU).
    pub async fn send_batch(&self, values: Vec<Vec<u8>>) -> Result<()> {
        let bytes: usize = values.iter().map(Vec::len).sum();
        let compression = if bytes >= COMPRESS_FROM_BYTES {
            Compression::Snappy
        } else {
            Compression::NoCompression
        };
        let now = Utc::now();
        let records = values
            .into_iter()
            .map(|value| Record {
                key: None,
                value: Some(value),
                headers: Default::default(),
                timestamp: now,
            })
            .collect();
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.partitions.len();
        bounded(
            "producing a batch",
            self.timeout,
            self.partitions[index].produce(records, compression),
        )
        .await?;
        Ok(())
    }
}
