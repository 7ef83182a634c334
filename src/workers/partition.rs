//! One partition's consumer ([`PartitionConsumer`]): the step (fetch a batch, apply it with its
//! next offset in one PostgreSQL transaction) and the loop that repeats it, backing off on
//! failures. Reading is [`fetch`](super::fetch)'s, where to resume [`resume`](super::resume)'s,
//! the transaction [`commit`](super::commit)'s; starting and stopping loops, the supervisor's.

use std::sync::Arc;

use rskafka::client::error::Error as KafkaError;
use tokio_util::sync::CancellationToken;

use super::{
    commit::Commit,
    context::{is_unknown_topic, WorkerContext},
    failures::{FailureKind, Failures},
    fetch::{Fetched, Fetcher},
    resume::Position,
};
use crate::error::{Error, Result};

/// Consumes one partition for one worker. Owns what it fetches ahead (aborted when dropped).
pub struct PartitionConsumer {
    context: Arc<WorkerContext>,
    partition: i32,
    /// Connected lazily, and again after Kafka errors.
    reader: Option<Fetcher>,
    /// Read from PostgreSQL lazily, and again after any failure (the batch may or may not have
    /// committed).
    position: Option<Position>,
}

/// What one [`PartitionConsumer::step`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Connected and read where to resume: the offset of the next record to fetch.
    Positioned { at: i64 },
    /// A batch was applied: this many valid and invalid records.
    Applied { valid: usize, invalid: usize },
    /// The stored offset moved past record batches that hold nothing to apply (transaction
    /// markers, records of aborted transactions), to `to`.
    Skipped { to: i64 },
    /// Nothing new arrived within the fetch wait.
    Idle,
    /// The stored offset was out of range; consumption restarts from the earliest offset.
    Reset { from: i64, to: i64 },
    /// Cancelled before a batch was fetched; nothing was applied.
    Cancelled,
}

impl PartitionConsumer {
    /// A consumer that has not connected or read its offset yet.
    pub fn new(context: Arc<WorkerContext>, partition: i32) -> Self {
        Self {
            context,
            partition,
            reader: None,
            position: None,
        }
    }

    /// Steps until cancelled, retrying failures with capped, jittered exponential backoff that
    /// only progress (a batch applied or skipped, an empty fetch) resets.
    pub async fn run(mut self, cancel: CancellationToken) {
        let worker = self.context.kind.name();
        let topic = self.context.topic.clone();
        let partition = self.partition;
        let mut failures =
            Failures::new(Arc::clone(&self.context.stats), worker, &topic, partition);
        failures.clear_status();
        loop {
            match self.step(&cancel).await {
                Ok(Step::Cancelled) => return,
                Ok(Step::Applied { .. } | Step::Skipped { .. } | Step::Idle) => {
                    failures.progressed()
                }
                // Positioning alone is no progress: a failure that repeats after it keeps backing off.
                Ok(Step::Positioned { .. } | Step::Reset { .. }) => {}
                Err(error) => {
                    // rskafka returns the batches before an undecodable one; this fetch started
                    // at the bad batch itself.
                    let kind = match &error {
                        Error::Kafka(KafkaError::UndecodableBatch { base_offset, .. }) => {
                            FailureKind::Stalled {
                                offset: *base_offset,
                            }
                        }
                        _ => FailureKind::Transient,
                    };
                    let delay = failures.failed(kind, error.to_string());
                    // Start over from PostgreSQL's view: the batch may or may not have committed.
                    self.position = None;
                    if let Some(reader) = &mut self.reader {
                        reader.drop_prefetch();
                    }
                    if is_unknown_topic(&error) {
                        // A broker that lost its topics (restarted with memory storage, say).
                        self.context.recreate_topic().await;
                    }
                    if matches!(error, Error::Kafka(_) | Error::Timeout { .. })
                        && !kind.is_stalled()
                    {
                        self.reader = None;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Fetches one batch and applies it. Cancellation is honoured only before the batch is
    /// fetched; once fetched, the batch is applied (or rolled back) whole.
    pub async fn step(&mut self, cancel: &CancellationToken) -> Result<Step> {
        if self.reader.is_none() || self.position.is_none() {
            let positioned = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(Step::Cancelled),
                positioned = self.connect_and_position() => positioned?,
            };
            tracing::debug!(at = positioned, "positioned");
            return Ok(Step::Positioned { at: positioned });
        }
        let fetched = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(Step::Cancelled),
            fetched = self.fetch() => fetched?,
        };
        let (Some(reader), Some(position)) = (&mut self.reader, &mut self.position) else {
            unreachable!("positioned above, and fetching changes neither");
        };
        let commit = Commit {
            context: &self.context,
            partition: self.partition,
            expected: position.committed,
        };
        let step = match fetched {
            Fetched::Records {
                records,
                batch,
                next,
                held,
            } => {
                tracing::debug!(records = records.len(), next, "fetched");
                reader.grow();
                reader.start_prefetch(next);
                let applied = commit.batch(&records, batch, next).await;
                // Applied (or rolled back): the records' bytes go back to the worker's budget.
                drop((records, held));
                match applied {
                    Ok((valid, invalid)) => {
                        position.stored(next);
                        Step::Applied { valid, invalid }
                    }
                    Err(error) => {
                        reader.drop_prefetch();
                        return Err(error);
                    }
                }
            }
            Fetched::Skipped { to } => {
                commit.skip_to(to).await?;
                position.stored(to);
                Step::Skipped { to }
            }
            Fetched::Nothing => Step::Idle,
            Fetched::OutOfRange => {
                let (from, to) = position
                    .reset_to_earliest(&self.context, self.partition, reader)
                    .await?;
                Step::Reset { from, to }
            }
        };
        Ok(step)
    }

    /// Connects to the partition's leader and reads where to resume.
    async fn connect_and_position(&mut self) -> Result<i64> {
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => self
                .reader
                .insert(Fetcher::connect(Arc::clone(&self.context), self.partition).await?),
        };
        let position = Position::load(&self.context, self.partition, reader).await?;
        reader.start_small();
        Ok(self.position.insert(position).next)
    }

    /// One fetch from the position, unless the topic turns out to have been recreated.
    async fn fetch(&mut self) -> Result<Fetched> {
        let (Some(reader), Some(position)) = (&mut self.reader, &mut self.position) else {
            unreachable!("`step` connects and positions before fetching");
        };
        let Some(answer) = reader.answer(position.next).await? else {
            return Ok(Fetched::OutOfRange);
        };
        if position.recreated(reader, answer.high_watermark()).await? {
            return Ok(Fetched::OutOfRange);
        }
        reader.records(answer, position.next).await
    }
}
