//! Dead letters: records a worker cannot apply (invalid, or refused by PostgreSQL), written to the
//! worker's dead-letter topic with their original key, value and headers, plus headers saying
//! where they came from and why. Writing them is part of the batch: if it fails, the batch is retried.

use std::sync::Arc;

use rskafka::record::{Record, RecordAndOffset};

use crate::{error::Result, kafka::producer::TopicProducer};

/// Header naming the topic a dead letter was read from.
pub const HEADER_TOPIC: &str = "rowsync.dlq.source.topic";
/// Header naming the partition a dead letter was read from.
pub const HEADER_PARTITION: &str = "rowsync.dlq.source.partition";
/// Header giving the offset a dead letter had in its source partition.
pub const HEADER_OFFSET: &str = "rowsync.dlq.source.offset";
/// Header naming the worker that gave up on the record.
pub const HEADER_WORKER: &str = "rowsync.dlq.worker";
/// Header saying why the record could not be applied.
pub const HEADER_REASON: &str = "rowsync.dlq.reason";

/// A record a worker could not apply, and why.
pub struct DeadLetter<'a> {
    pub record: &'a RecordAndOffset,
    pub reason: String,
}

/// Where one worker's dead letters go; `None` when dead-lettering is switched off.
#[derive(Clone)]
pub struct DeadLetterQueue {
    producer: Option<Arc<TopicProducer>>,
}

impl DeadLetterQueue {
    /// A queue writing to `producer`'s topic, or none.
    pub fn new(producer: Option<Arc<TopicProducer>>) -> Self {
        Self { producer }
    }

    /// Whether dead letters are written anywhere.
    pub fn is_enabled(&self) -> bool {
        self.producer.is_some()
    }

    /// Writes `letters` (from one source partition, in order) as one batch; returns how many
    /// were written (0 when switched off).
    pub async fn send(
        &self,
        worker: &str,
        topic: &str,
        partition: i32,
        letters: &[DeadLetter<'_>],
    ) -> Result<usize> {
        let Some(producer) = &self.producer else {
            return Ok(0);
        };
        if letters.is_empty() {
            return Ok(0);
        }
        let records = letters
            .iter()
            .map(|letter| {
                let original = &letter.record.record;
                let mut headers = original.headers.clone();
                headers.insert(HEADER_TOPIC.to_owned(), Some(topic.as_bytes().to_vec()));
                headers.insert(
                    HEADER_PARTITION.to_owned(),
                    Some(partition.to_string().into_bytes()),
                );
                headers.insert(
                    HEADER_OFFSET.to_owned(),
                    Some(letter.record.offset.to_string().into_bytes()),
                );
                headers.insert(HEADER_WORKER.to_owned(), Some(worker.as_bytes().to_vec()));
                headers.insert(
                    HEADER_REASON.to_owned(),
                    Some(letter.reason.clone().into_bytes()),
                );
                Record {
                    key: original.key.clone(),
                    value: original.value.clone(),
                    headers,
                    timestamp: original.timestamp,
                }
            })
            .collect();
        // Same partition number as the source keeps one source partition's letters in order.
        producer.send_to(partition, records).await?;
        Ok(letters.len())
    }
}
