//! Writes records to one topic: keyed records on the partition Kafka's Java client would pick,
//! unkeyed batches round-robin. Each call waits for the broker's acknowledgement, within a bound.
//!
//! Keyed records sent at the same time share produce requests: each partition has one request
//! out at a time, and the records queued meanwhile go together in the next (group commit).
//! A lone record is sent at once, so this adds no latency when idle. A record whose caller gave
//! up before it was sent is not sent.
//!
//! The producer owns its per-partition tasks: dropping it aborts them (as rskafka's messenger
//! does its own), a produce request still out included.

use std::{
    future::Future,
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
use tokio_util::task::AbortOnDropHandle;

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
    /// Per partition, the queue of keyed records and the task producing them.
    keyed: Vec<PartitionQueue>,
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
        let compression = kafka
            .compression()
            .map_or(Compression::NoCompression, |c| c.codec());
        let timeout = kafka.timeout();
        for id in kafka.partitions(topic).await? {
            let client = Arc::new(kafka.partition_client(topic, id).await?);
            let shared = Arc::clone(&client);
            keyed.push(PartitionQueue::spawn(move |records| {
                let client = Arc::clone(&shared);
                async move {
                    bounded(
                        "producing a record",
                        timeout,
                        client.produce(records, compression),
                    )
                    .await
                }
            }));
            partitions.push(client);
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
            .queue_tx
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

/// One partition's queue of keyed records and the task that produces them; dropping it aborts
/// the task.
struct PartitionQueue {
    queue_tx: mpsc::UnboundedSender<Queued>,
    /// Ends by itself once `queue_tx` is gone and its last request answered; aborted on drop, so
    /// a request still out cannot keep it (and its partition client) alive.
    _task: AbortOnDropHandle<()>,
}

impl PartitionQueue {
    /// Starts the task; `produce` writes one produce request's records and returns their offsets.
    fn spawn<P, Fut>(produce: P) -> Self
    where
        P: FnMut(Vec<Record>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<i64>>> + Send + 'static,
    {
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        Self {
            queue_tx,
            _task: AbortOnDropHandle::new(tokio::spawn(produce_queued(queue_rx, produce))),
        }
    }
}

/// One partition's keyed records: takes everything queued, sends it in as few produce requests
/// as [`SHARED_REQUEST_BYTES`] allows (in queue order), answers every record with its offset or
/// the request's error, and goes again; records queued meanwhile wait for the next round.
async fn produce_queued<P, Fut>(mut queue: mpsc::UnboundedReceiver<Queued>, mut produce: P)
where
    P: FnMut(Vec<Record>) -> Fut,
    Fut: Future<Output = Result<Vec<i64>>>,
{
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
            match produce(records).await {
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

#[cfg(test)]
mod tests {
    use std::future;

    use super::*;

    fn queued(value: &str) -> (Queued, oneshot::Receiver<Result<i64>>) {
        let (offset, answered) = oneshot::channel();
        let record = Record {
            key: Some(b"key".to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: Default::default(),
            timestamp: Utc::now(),
        };
        (Queued { record, offset }, answered)
    }

    #[tokio::test]
    async fn queued_records_are_produced_together_and_answered_with_their_offsets() {
        let queue = PartitionQueue::spawn(|records: Vec<Record>| async move {
            Ok((0..records.len() as i64).map(|i| 40 + i).collect())
        });
        let (first, first_answer) = queued("a");
        let (second, second_answer) = queued("b");
        queue.queue_tx.send(first).unwrap();
        queue.queue_tx.send(second).unwrap();
        assert_eq!(first_answer.await.unwrap().unwrap(), 40);
        assert_eq!(second_answer.await.unwrap().unwrap(), 41);
    }

    #[tokio::test]
    async fn dropping_a_partition_queue_aborts_its_task_with_a_request_still_out() {
        // The produce request never answers, like a broker that stopped; it holds `request_out`
        // until it is dropped, and says when it was sent.
        let (request_out, request_dropped) = oneshot::channel::<()>();
        let mut request_out = Some(request_out);
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
        let queue = PartitionQueue::spawn(move |_records| {
            let held = request_out.take();
            let _ = sent_tx.send(());
            async move {
                let _held = held;
                future::pending::<Result<Vec<i64>>>().await
            }
        });
        let (record, answer) = queued("stuck");
        queue.queue_tx.send(record).unwrap();
        sent_rx.recv().await.expect("the record was sent");

        drop(queue);
        let stopped = tokio::time::timeout(Duration::from_secs(5), request_dropped).await;
        assert!(
            matches!(stopped, Ok(Err(_))),
            "the request still out was not dropped with its queue"
        );
        // Its caller hears that the producer stopped, instead of waiting out its bound.
        assert!(answer.await.is_err());
    }
}
