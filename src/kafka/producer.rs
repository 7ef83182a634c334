//! Writes records to one topic: keyed records on the partition Kafka's Java client would pick,
//! unkeyed batches round-robin. Each call waits for the broker's acknowledgement, within a bound.
//!
//! Keyed records sent at the same time share produce requests: each partition has one request
//! out at a time, and the records queued meanwhile go together in the next (group commit).
//! A lone record is sent at once, so this adds no latency when idle. A record whose caller gave
//! up before it was sent is not sent.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::Utc;
use rskafka::{
    client::partition::{Compression, PartitionClient},
    record::Record,
};
use tokio::sync::{mpsc, oneshot};

use super::{partitioner::partition_for_key, Kafka};
use crate::error::{bounded, Error, Result};

/// Batches of at least this many bytes are compressed by [`TopicProducer::send_batch`].
pub const COMPRESS_FROM_BYTES: usize = 256 * 1024;
/// Keyed records queued together go in produce requests of at most this many bytes of values
/// (a record larger than that goes alone), well under Kafka's default 1 MB message limit.
const SHARED_REQUEST_BYTES: usize = 512 * 1024;
/// Most keyed records taken into one round of produce requests.
const SHARED_REQUEST_RECORDS: usize = 1024;

/// A keyed record waiting for its partition's next produce request, and where its offset goes.
struct Queued {
    record: Record,
    offset: oneshot::Sender<Result<i64>>,
}

/// A producer for one topic, holding a client per partition (partition `i` at index `i`).
pub struct TopicProducer {
    topic: String,
    partitions: Vec<Arc<PartitionClient>>,
    /// Per partition, the queue of keyed records to its produce task.
    keyed: Vec<mpsc::UnboundedSender<Queued>>,
    timeout: Duration,
    /// Next partition for an unkeyed batch.
    next: AtomicUsize,
    /// Codec of every batch when `KAFKA_COMPRESSION` is set.
    compression: Option<Compression>,
}

impl TopicProducer {
    /// Connects to the leader of every partition of `topic`.
    pub async fn connect(kafka: &Kafka, topic: &str) -> Result<Self> {
        let mut partitions = Vec::new();
        let mut keyed = Vec::new();
        for id in kafka.partitions(topic).await? {
            let client = Arc::new(kafka.partition_client(topic, id).await?);
            let (queue, queued) = mpsc::unbounded_channel();
            // Ends once the producer (every sender) is gone.
            let compression = kafka
                .compression()
                .map_or(Compression::NoCompression, |c| c.codec());
            tokio::spawn(produce_queued(
                Arc::clone(&client),
                queued,
                kafka.timeout(),
                compression,
            ));
            partitions.push(client);
            keyed.push(queue);
        }
        Ok(Self {
            topic: topic.to_owned(),
            partitions,
            keyed,
            timeout: kafka.timeout(),
            next: AtomicUsize::new(0),
            compression: kafka.compression().map(|c| c.codec()),
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
        let (offset, answered) = oneshot::channel();
        self.keyed[partition as usize]
            .send(Queued { record, offset })
            .map_err(|_| Error::KafkaShared("the producer is shutting down".into()))?;
        let offset = match tokio::time::timeout(self.timeout, answered).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(Error::KafkaShared("the producer stopped".into())),
            Err(_) => {
                return Err(Error::Timeout {
                    what: "producing a record",
                    after: self.timeout,
                })
            }
        };
        Ok((partition, offset))
    }

    /// Writes records as one batch to partition `partition` modulo this topic's partition count.
    pub async fn send_to(&self, partition: i32, records: Vec<Record>) -> Result<()> {
        let index = partition.unsigned_abs() as usize % self.partitions.len();
        bounded(
            "producing a batch",
            self.timeout,
            self.partitions[index].produce(
                records,
                self.compression.unwrap_or(Compression::NoCompression),
            ),
        )
        .await?;
        Ok(())
    }

    /// Writes unkeyed values as one batch to the next partition in turn, in the codec
    /// `KAFKA_COMPRESSION` names or, unset, snappy-compressed from [`COMPRESS_FROM_BYTES`] on
    /// (response-log records are JSON: large batches shrink several times over, and the broker
    /// has that much less to take in; small ones are not worth the CPU).
    pub async fn send_batch(&self, values: Vec<Vec<u8>>) -> Result<()> {
        let bytes: usize = values.iter().map(Vec::len).sum();
        let compression = match self.compression {
            Some(codec) => codec,
            None if bytes >= COMPRESS_FROM_BYTES => Compression::Snappy,
            None => Compression::NoCompression,
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

/// One partition's keyed records: takes everything queued, sends it in as few produce requests
/// as [`SHARED_REQUEST_BYTES`] allows (in queue order), answers every record with its offset or
/// the request's error, and goes again; records queued meanwhile wait for the next round.
async fn produce_queued(
    client: Arc<PartitionClient>,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    timeout: Duration,
    compression: Compression,
) {
    let mut round = Vec::new();
    while queue.recv_many(&mut round, SHARED_REQUEST_RECORDS).await > 0 {
        // A caller that gave up before its record was sent (its bound passed, its HTTP client
        // left) was told nothing was written: its record is not sent now.
        round.retain(|queued: &Queued| !queued.offset.is_closed());
        let mut round = round.drain(..).peekable();
        while round.peek().is_some() {
            let (mut records, mut waiting, mut bytes) = (Vec::new(), Vec::new(), 0);
            while let Some(next) = round.peek() {
                let size = next.record.approximate_size();
                if !records.is_empty() && bytes + size > SHARED_REQUEST_BYTES {
                    break;
                }
                let Queued { record, offset } = round.next().expect("peeked");
                bytes += size;
                records.push(record);
                waiting.push(offset);
            }
            let produced = bounded(
                "producing a record",
                timeout,
                client.produce(records, compression),
            )
            .await;
            match produced {
                Ok(offsets) => {
                    for (waiter, offset) in waiting.into_iter().zip(offsets) {
                        // A caller that gave up while its record was out is skipped; the
                        // record was still written.
                        let _ = waiter.send(Ok(offset));
                    }
                }
                Err(error) => {
                    // `KafkaShared` says "kafka: " itself.
                    let message = match &error {
                        Error::Kafka(e) => super::security::describe(e),
                        other => other.to_string(),
                    };
                    for waiter in waiting {
                        let _ = waiter.send(Err(Error::KafkaShared(message.clone())));
                    }
                }
            }
        }
    }
}
