//! One worker's consumption: a supervisor per worker and a loop per partition that fetches a
//! batch, applies it and its next offset in one PostgreSQL transaction, and repeats.
//! The loop only races cancellation against fetching, so a stop always lands on a batch boundary.

use std::{
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use deadpool_postgres::{Pool, Transaction};
use rskafka::{
    client::{
        error::{Error as KafkaError, ProtocolError},
        partition::{FetchedRecords, OffsetAt, PartitionClient},
    },
    record::RecordAndOffset,
};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    dead_letter::{DeadLetter, DeadLetterQueue},
    failures::{FailureKind, Failures},
    WorkerKind, WorkerState, WorkerStats,
};
use crate::{
    db::{
        offsets::{self, StoredOffset},
        rows,
    },
    error::{bounded, Error, Result},
    kafka::{codec, Kafka},
    metrics::{BatchMetrics, PartitionLabels},
};

/// Immediate re-applications of a batch PostgreSQL rolled back to break a deadlock, before the
/// failure goes to the usual backoff.
const CONFLICT_RETRIES: usize = 3;

/// Bytes the first fetch after (re)positioning asks for; each fetch that returns records
/// doubles it, up to `KAFKA_FETCH_MAX_BYTES`. A worker starting on a backlog applies its first
/// small batch while the larger ones are still being fetched, instead of leaving PostgreSQL
/// idle until a full-size fetch arrives.
pub const FIRST_FETCH_BYTES: i32 = 64 * 1024;

/// The next fetch size: doubled after a fetch that returned records, capped at `max`.
fn grown_fetch_bytes(current: i32, max: i32) -> i32 {
    current.saturating_mul(2).min(max)
}

/// What one worker's loops share.
pub struct WorkerContext {
    pub kind: WorkerKind,
    pub topic: String,
    pub pool: Pool,
    pub kafka: Kafka,
    pub stats: Arc<WorkerStats>,
    /// Where records that cannot be applied go.
    pub dead_letters: DeadLetterQueue,
    /// Partitions and replication factor to recreate the topic with, should it vanish.
    pub topic_layout: (i32, i16),
    /// Most bytes one fetch asks for.
    pub fetch_max_bytes: i32,
    /// Longest the broker may hold a fetch open waiting for records (tansu needs ≥ 1 ms).
    pub fetch_max_wait_ms: i32,
    /// Where batch sizes and latencies are recorded.
    pub batch_metrics: BatchMetrics,
    /// Bound on any single PostgreSQL operation (reading offsets, applying a batch).
    pub db_timeout: Duration,
    /// Partitions of the topic, once listed (0 before): records without a key are counted
    /// when there is more than one.
    pub topic_partitions: std::sync::atomic::AtomicUsize,
    /// Whether this run of the worker has warned about records without a key (once per run).
    pub unkeyed_warned: AtomicBool,
}

impl WorkerContext {
    async fn recreate_topic(&self) {
        let (partitions, replication) = self.topic_layout;
        if let Err(error) = self
            .kafka
            .ensure_topics(&[&self.topic], partitions, replication)
            .await
        {
            tracing::warn!(worker = self.kind.name(), topic = %self.topic, error = %error, "cannot recreate the topic");
        }
    }
}

fn is_unknown_topic(error: &Error) -> bool {
    matches!(
        error,
        Error::NoPartitions(_)
            | Error::Kafka(KafkaError::ServerError {
                protocol_error: ProtocolError::UnknownTopicOrPartition,
                ..
            })
    )
}

/// Runs one worker until `cancel` fires: finds the topic's partitions, then one loop per partition.
pub async fn supervise(context: Arc<WorkerContext>, cancel: CancellationToken) {
    let worker = context.kind.name();
    let topic = context.topic.as_str();
    let mut backoff = retry_backoff();
    // Logged when it starts failing, then at most once a minute.
    let (mut attempts, mut logged_at) = (0u64, None::<std::time::Instant>);
    let partitions = loop {
        let listed = tokio::select! {
            _ = cancel.cancelled() => return,
            listed = context.kafka.partitions(topic) => listed,
        };
        match listed {
            Ok(partitions) => break partitions,
            Err(error) => {
                attempts += 1;
                if logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(worker, topic, error = %error, attempts, "cannot list partitions; retrying with backoff");
                    logged_at = Some(std::time::Instant::now());
                }
                if is_unknown_topic(&error) {
                    context.recreate_topic().await;
                }
                if sleep_or_cancel(&mut backoff, &cancel).await {
                    return;
                }
            }
        }
    };

    context
        .topic_partitions
        .store(partitions.len(), std::sync::atomic::Ordering::Relaxed);
    let mut loops = JoinSet::new();
    for partition in partitions {
        let consumer = PartitionConsumer::new(Arc::clone(&context), partition);
        // Every line logged by the loop (rskafka's too) carries worker, topic and partition.
        let span = tracing::info_span!("partition", worker, topic, partition);
        loops.spawn(consumer.run(cancel.clone()).instrument(span));
    }
    while let Some(joined) = loops.join_next().await {
        if let Err(error) = joined {
            tracing::error!(worker, topic, error = %error, "partition loop died");
            context.stats.set_state(WorkerState::Failed);
        }
    }
}

/// Consumes one partition for one worker.
pub struct PartitionConsumer {
    context: Arc<WorkerContext>,
    partition: i32,
    /// Connected lazily and again after errors.
    client: Option<Arc<PartitionClient>>,
    /// The fetch (and decoding) of the batch after the one being applied, started before
    /// applying it so the broker's answer, the decoding and PostgreSQL's work overlap: the
    /// offset it fetches from, and the task.
    prefetch: Option<(i64, JoinHandle<Result<Prefetched>>)>,
    /// Bytes the next fetch asks for: [`FIRST_FETCH_BYTES`] after positioning, growing to the
    /// configured maximum.
    fetch_bytes: i32,
    /// Offset of the next record to fetch; `None` until read from PostgreSQL.
    position: Option<i64>,
    /// The next offset as stored in PostgreSQL (`None`: nothing stored yet). Every commit
    /// checks it is unchanged, so two consumers of one partition can never both apply a batch.
    committed: Option<i64>,
    /// A stored offset not yet checked against its topic: the offset of the last applied record
    /// and its fingerprint, while that offset lies beyond the partition's end.
    unverified: Option<(i64, i64)>,
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
            fetch_bytes: FIRST_FETCH_BYTES.min(context.fetch_max_bytes),
            context,
            partition,
            client: None,
            prefetch: None,
            position: None,
            committed: None,
            unverified: None,
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
                    self.drop_prefetch();
                    if is_unknown_topic(&error) {
                        // A broker that lost its topics (restarted with memory storage, say).
                        self.context.recreate_topic().await;
                    }
                    if matches!(error, Error::Kafka(_) | Error::Timeout { .. })
                        && !kind.is_stalled()
                    {
                        self.client = None;
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
        if self.client.is_none() || self.position.is_none() {
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
        let step = match fetched {
            Fetched::Records {
                records,
                batch,
                next,
            } => {
                tracing::debug!(records = records.len(), next, "fetched");
                self.fetch_bytes =
                    grown_fetch_bytes(self.fetch_bytes, self.context.fetch_max_bytes);
                self.start_prefetch(next);
                let applied = self.apply(records, batch, next).await;
                if applied.is_err() {
                    self.drop_prefetch();
                }
                applied?
            }
            Fetched::Skipped { to } => self.skip_to(to).await?,
            Fetched::Nothing => Step::Idle,
            Fetched::OutOfRange => self.reset_to_earliest().await?,
        };
        Ok(step)
    }

    /// Starts fetching from `from` in the background, for the next step.
    fn start_prefetch(&mut self, from: i64) {
        self.drop_prefetch();
        if let Some(client) = &self.client {
            let client = Arc::clone(client);
            let (max_bytes, max_wait) = (self.fetch_bytes, self.context.fetch_max_wait_ms);
            let timeout = self.context.kafka.timeout();
            let kind = self.context.kind;
            let task = tokio::spawn(async move {
                let mut fetched = raw_fetch(&client, from, max_bytes, max_wait, timeout).await?;
                keep_from(&mut fetched.records, from);
                // Decoded here only when the batch starts where asked; otherwise `fetch` fetches
                // again and the batch is decoded when applied.
                let batch = fetched
                    .records
                    .first()
                    .is_some_and(|r| r.offset == from)
                    .then(|| Batch::decode(kind, &fetched.records));
                Ok(Prefetched { fetched, batch })
            });
            self.prefetch = Some((from, task));
        }
    }

    /// Abandons a background fetch (its records were never applied, so nothing is lost).
    fn drop_prefetch(&mut self) {
        if let Some((_, task)) = self.prefetch.take() {
            task.abort();
        }
    }

    /// Connects to the partition's leader and reads where to resume.
    async fn connect_and_position(&mut self) -> Result<i64> {
        if self.client.is_none() {
            let client = self
                .context
                .kafka
                .partition_client(&self.context.topic, self.partition);
            self.client = Some(Arc::new(client.await?));
        }
        self.load_position().await
    }

    async fn fetch(&mut self) -> Result<Fetched> {
        let kafka = &self.context.kafka;
        let (client, position) = match (&self.client, self.position) {
            (Some(client), Some(position)) => (client, position),
            _ => unreachable!("`step` connects and positions before fetching"),
        };
        let (max_bytes, max_wait) = (self.fetch_bytes, self.context.fetch_max_wait_ms);
        let fetched = match self.prefetch.take() {
            Some((at, task)) if at == position => match task.await {
                Ok(fetched) => fetched,
                Err(joined) => Err(Error::Prefetch(joined.to_string())),
            },
            other => {
                if let Some((_, task)) = other {
                    task.abort();
                }
                raw_fetch(client, position, max_bytes, max_wait, kafka.timeout())
                    .await
                    .map(|fetched| Prefetched {
                        fetched,
                        batch: None,
                    })
            }
        };
        let Prefetched {
            fetched:
                FetchedRecords {
                    mut records,
                    high_watermark,
                    mut next_offset,
                    first_offset,
                    last_stable_offset,
                },
            mut batch,
        } = match fetched {
            Ok(fetched) => fetched,
            Err(Error::Kafka(KafkaError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            })) => return Ok(Fetched::OutOfRange),
            Err(error) => return Err(error),
        };
        self.context.stats.update(self.partition, |p| {
            p.high_watermark = Some(high_watermark);
        });
        if let Some((offset, fingerprint)) = self.unverified {
            if high_watermark > offset {
                match self.lineage(offset, fingerprint).await? {
                    Lineage::Changed => return Ok(Fetched::OutOfRange),
                    Lineage::NotYetThere => {}
                    Lineage::Same | Lineage::Gone => self.unverified = None,
                }
            }
        }
        keep_from(&mut records, position);
        // Kafka answers a fetch from inside a record batch with that whole batch; tansu answers
        // with the *next* batch, or nothing. Fetch again from where a batch starts so no record
        // is skipped.
        // Records at or past the last stable offset (an open transaction's) are not served yet.
        let skipped_ahead = first_offset.is_some_and(|first| first > position);
        let stuck = first_offset.is_none()
            && position
                < last_stable_offset
                    .unwrap_or(high_watermark)
                    .min(high_watermark);
        if skipped_ahead || stuck {
            let covering = self.fetch_covering(position).await?;
            (records, next_offset) = (covering.records, covering.next_offset);
            batch = None;
        }
        // Past the last batch of the answer: transaction markers and aborted records after the
        // last record are moved past too.
        let next = next_offset
            .unwrap_or(position)
            .max(records.last().map_or(position, |r| r.offset + 1));
        if !records.is_empty() {
            Ok(Fetched::Records {
                records,
                batch,
                next,
            })
        } else if next > position {
            Ok(Fetched::Skipped { to: next })
        } else if position > high_watermark {
            // Some brokers (tansu) never say "out of range": a recreated topic just ends earlier.
            Ok(Fetched::OutOfRange)
        } else {
            Ok(Fetched::Nothing)
        }
    }

    /// Records from `position` on, fetched from a batch boundary at or before it: steps back
    /// 1, 2, 4, … offsets (down to the earliest) until the answer's first batch covers
    /// `position`. A gap that remains when fetching from the earliest offset is real (compaction).
    async fn fetch_covering(&self, position: i64) -> Result<FetchedRecords> {
        let client = self.client.as_ref().expect("connected before fetching");
        let timeout = self.context.kafka.timeout()
            + Duration::from_millis(self.context.fetch_max_wait_ms as u64);
        let earliest = self.earliest().await?;
        let mut back = 1;
        loop {
            let from = (position - back).max(earliest);
            let mut fetched = bounded(
                "fetching records",
                timeout,
                client.fetch_records_detailed(from, 1..self.context.fetch_max_bytes, 1),
            )
            .await?;
            keep_from(&mut fetched.records, position);
            // Batches in one answer follow each other: one starting at or before `position`
            // and an answer reaching past it cover it.
            let covers = fetched.first_offset.is_some_and(|first| first <= position)
                && fetched.next_offset.is_some_and(|next| next > position);
            if from == earliest || covers {
                return Ok(fetched);
            }
            back = back.saturating_mul(2);
        }
    }

    /// Reads the stored offset; a partition never seen before starts at its earliest offset.
    async fn load_position(&mut self) -> Result<i64> {
        let stored = bounded("reading stored offsets", self.context.db_timeout, async {
            let client = self.context.pool.get().await?;
            offsets::load(&client, self.context.kind.name(), &self.context.topic).await
        })
        .await?;
        let stored = stored.get(&self.partition).copied();
        self.fetch_bytes = FIRST_FETCH_BYTES.min(self.context.fetch_max_bytes);
        self.committed = stored.map(|s| s.next);
        self.unverified = None;
        let position = match stored {
            None => self.earliest().await?,
            Some(StoredOffset {
                next,
                fingerprint: Some((at, fingerprint)),
            }) => match self.lineage(at, fingerprint).await? {
                Lineage::Changed => {
                    let earliest = self.earliest().await?;
                    self.warn_recreated(next, earliest);
                    earliest
                }
                Lineage::NotYetThere => {
                    // Checked again once the partition reaches it (see `fetch`).
                    self.unverified = Some((at, fingerprint));
                    next
                }
                Lineage::Same | Lineage::Gone => next,
            },
            Some(stored) => stored.next,
        };
        self.position = Some(position);
        self.context
            .stats
            .update(self.partition, |p| p.next_offset = Some(position));
        Ok(position)
    }

    /// Whether the record at `offset` is still the one applied there (its fingerprint).
    async fn lineage(&self, offset: i64, fingerprint: i64) -> Result<Lineage> {
        let records = self.fetch_covering(offset).await?.records;
        Ok(match records.first() {
            Some(first) if first.offset == offset => {
                if fingerprint_of(&first.record) == fingerprint {
                    Lineage::Same
                } else {
                    Lineage::Changed
                }
            }
            Some(_) => Lineage::Gone,
            None => Lineage::NotYetThere,
        })
    }

    fn warn_recreated(&self, stored: i64, earliest: i64) {
        tracing::warn!(
            worker = self.context.kind.name(),
            topic = %self.context.topic,
            partition = self.partition,
            stored_offset = stored,
            earliest_offset = earliest,
            "the record before the stored offset changed (topic recreated); restarting from the earliest offset"
        );
        self.context
            .stats
            .update(self.partition, |p| p.offset_resets += 1);
    }

    async fn earliest(&self) -> Result<i64> {
        let client = self.client.as_ref().expect("connected before positioning");
        bounded(
            "listing the earliest offset",
            self.context.kafka.timeout(),
            client.get_offset(OffsetAt::Earliest),
        )
        .await
    }

    async fn reset_to_earliest(&mut self) -> Result<Step> {
        let from = self.position.unwrap_or_default();
        let to = self.earliest().await?;
        tracing::warn!(
            worker = self.context.kind.name(),
            topic = %self.context.topic,
            partition = self.partition,
            stored_offset = from,
            earliest_offset = to,
            "stored offset is out of range, or its topic was recreated; restarting from the earliest offset"
        );
        self.position = Some(to);
        self.unverified = None;
        self.context
            .stats
            .update(self.partition, |p| p.offset_resets += 1);
        Ok(Step::Reset { from, to })
    }

    /// Stores `to` as the next offset when the batches before it held nothing to apply
    /// (transaction markers, records of aborted transactions).
    async fn skip_to(&mut self, to: i64) -> Result<Step> {
        let worker = self.context.kind.name();
        let topic = self.context.topic.as_str();
        let partition = self.partition;
        let expected = self.committed;
        bounded("storing an offset", self.context.db_timeout, async {
            let mut client = self.context.pool.get().await?;
            let tx = client.transaction().await?;
            if !offsets::advance(&tx, worker, topic, partition, expected, to, None).await? {
                return Err(Error::OffsetConflict {
                    worker,
                    topic: topic.to_owned(),
                    partition,
                });
            }
            tx.commit().await?;
            Ok(())
        })
        .await?;
        tracing::debug!(to, "moved past batches with nothing to apply");
        self.committed = Some(to);
        self.position = Some(to);
        self.context
            .stats
            .update(partition, |p| p.next_offset = Some(to));
        Ok(Step::Skipped { to })
    }

    /// Records without a key, counted when the topic has more than one partition (their
    /// producer spread one id's updates over partitions, whose order Kafka does not keep);
    /// warns once per run of the worker.
    fn count_unkeyed(&self, records: &[RecordAndOffset]) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let partitions = self.context.topic_partitions.load(Relaxed);
        if partitions <= 1 {
            return 0;
        }
        let unkeyed = records.iter().filter(|r| r.record.key.is_none()).count() as u64;
        if unkeyed > 0 && !self.context.unkeyed_warned.swap(true, Relaxed) {
            tracing::warn!(
                worker = self.context.kind.name(),
                topic = %self.context.topic,
                partition = self.partition,
                partitions,
                "records without a key on a topic with several partitions: updates to one id may be applied out of order; key them by id (logged once per worker start)"
            );
        }
        unkeyed
    }

    /// Applies a batch, its dead letters and its next offset, all or nothing.
    ///
    /// The batch is first applied as one statement. If PostgreSQL refuses a record in it (a
    /// constraint, say), the transaction is rolled back and the batch applied again with the
    /// refused records isolated by bisection under savepoints, so they alone are dead-lettered.
    async fn apply(
        &mut self,
        records: Vec<RecordAndOffset>,
        decoded: Option<Batch>,
        next: i64,
    ) -> Result<Step> {
        let worker = self.context.kind.name();
        let topic = self.context.topic.as_str();
        let partition = self.partition;
        let last = records.last().expect("a batch is never empty");
        let fingerprint = Some((last.offset, fingerprint_of(&last.record)));
        let started = std::time::Instant::now();
        let mut batch = match decoded {
            Some(batch) => batch,
            None => {
                let batch = Batch::decode(self.context.kind, &records);
                tracing::trace!(records = records.len(), "decoded");
                batch
            }
        };
        for (index, reason) in &batch.invalid {
            let offset = records[*index].offset;
            tracing::warn!(worker, topic, partition, offset, reason = %reason, "skipping invalid record");
        }

        let mut first_try = bounded(
            "applying a batch",
            self.context.db_timeout,
            self.commit(&records, &mut batch, next, fingerprint, false),
        )
        .await;
        for _ in 0..CONFLICT_RETRIES {
            match &first_try {
                Err(Error::Postgres(e)) if is_lock_conflict(e) => {
                    // Another transaction (not one of ours: batches lock ids in sorted order)
                    // deadlocked with this one and PostgreSQL rolled this one back.
                    tracing::info!(worker, topic, partition, error = %e, "batch rolled back by a lock conflict; applying it again");
                }
                _ => break,
            }
            first_try = bounded(
                "applying a batch",
                self.context.db_timeout,
                self.commit(&records, &mut batch, next, fingerprint, false),
            )
            .await;
        }
        let outcome = match first_try {
            Err(Error::RowRejected(reason)) => {
                tracing::warn!(worker, topic, partition, reason = %reason, "PostgreSQL refused a record; isolating it");
                bounded(
                    "applying a batch",
                    self.context.db_timeout,
                    self.commit(&records, &mut batch, next, fingerprint, true),
                )
                .await?
            }
            other => other?,
        };

        self.committed = Some(next);
        self.position = Some(next);
        let invalid = batch.invalid.len() + outcome.rejected;
        let valid = batch.valid - outcome.rejected;
        let unkeyed = self.count_unkeyed(&records);
        self.context.stats.update(partition, |p| {
            p.next_offset = Some(next);
            p.records_applied += valid as u64;
            p.records_invalid += invalid as u64;
            p.records_dead_lettered += outcome.dead_lettered as u64;
            p.records_unkeyed += unkeyed;
        });
        let labels = PartitionLabels {
            worker: worker.to_owned(),
            topic: topic.to_owned(),
            partition,
        };
        self.context
            .batch_metrics
            .observe(&labels, records.len(), started.elapsed().as_secs_f64());
        tracing::debug!(
            worker,
            topic,
            partition,
            valid,
            invalid,
            next_offset = next,
            "applied batch"
        );
        Ok(Step::Applied { valid, invalid })
    }

    /// One attempt at a batch in one transaction: fence the offset, change the rows, write the
    /// dead letters, commit. With `isolate`, records PostgreSQL refuses are found and left out.
    async fn commit(
        &self,
        records: &[RecordAndOffset],
        batch: &mut Batch,
        next: i64,
        fingerprint: Option<(i64, i64)>,
        isolate: bool,
    ) -> Result<Outcome> {
        let worker = self.context.kind.name();
        let topic = self.context.topic.as_str();
        let partition = self.partition;
        let mut client = self.context.pool.get().await?;
        let mut tx = client.transaction().await?;
        if !offsets::advance(
            &tx,
            worker,
            topic,
            partition,
            self.committed,
            next,
            fingerprint,
        )
        .await?
        {
            return Err(Error::OffsetConflict {
                worker,
                topic: topic.to_owned(),
                partition,
            });
        }
        let refused = if isolate {
            batch.apply_isolating(&mut tx, records).await?
        } else {
            batch.apply_all(&tx).await?;
            Vec::new()
        };

        let mut letters: Vec<DeadLetter<'_>> = batch
            .invalid
            .iter()
            .map(|(index, reason)| DeadLetter {
                record: &records[*index],
                reason: reason.to_string(),
            })
            .chain(refused.iter().map(|(index, reason)| {
                let offset = records[*index].offset;
                tracing::warn!(worker, topic, partition, offset, reason = %reason, "PostgreSQL refused record");
                DeadLetter {
                    record: &records[*index],
                    reason: format!("refused by PostgreSQL: {reason}"),
                }
            }))
            .collect();
        letters.sort_by_key(|letter| letter.record.offset);
        let dead_lettered = self
            .context
            .dead_letters
            .send(worker, topic, partition, &letters)
            .await?;
        tx.commit().await?;
        Ok(Outcome {
            rejected: refused.len(),
            dead_lettered,
        })
    }
}

/// Identifies a record well enough to tell whether an offset still holds the same one:
/// its timestamp and a hash of its key and value.
fn fingerprint_of(record: &rskafka::record::Record) -> i64 {
    let mut hash = murmur2::murmur2(
        record.key.as_deref().unwrap_or_default(),
        murmur2::KAFKA_SEED,
    );
    hash = murmur2::murmur2(record.value.as_deref().unwrap_or_default(), hash);
    record.timestamp.timestamp_millis().wrapping_mul(1_000_003) ^ i64::from(hash)
}

/// Keeps the records at or after `position`, each offset once, in order. A batch can start
/// before the offset asked for, and tansu can repeat batches in one answer.
fn keep_from(records: &mut Vec<RecordAndOffset>, position: i64) {
    let mut next = position;
    records.retain(|r| {
        let keep = r.offset >= next;
        if keep {
            next = r.offset + 1;
        }
        keep
    });
}

/// What a committed batch left out.
struct Outcome {
    /// Records PostgreSQL refused.
    rejected: usize,
    /// Records written to the dead-letter topic.
    dead_lettered: usize,
}

/// How a stored offset relates to what the partition holds now.
enum Lineage {
    /// The last applied record is still there: resume after it.
    Same,
    /// Another record sits at its offset: the topic was recreated.
    Changed,
    /// The partition does not reach that offset (yet).
    NotYetThere,
    /// Records there were removed (retention, compaction): nothing to compare.
    Gone,
}

impl Drop for PartitionConsumer {
    fn drop(&mut self) {
        self.drop_prefetch();
    }
}

/// A fetch made ahead: what it returned (its records from the offset asked for on), and the
/// records decoded (when they start at that offset).
struct Prefetched {
    fetched: FetchedRecords,
    batch: Option<Batch>,
}

/// One fetch request from `position`, bounded by the request timeout plus the broker's wait.
async fn raw_fetch(
    client: &PartitionClient,
    position: i64,
    max_bytes: i32,
    max_wait_ms: i32,
    timeout: Duration,
) -> Result<FetchedRecords> {
    bounded(
        "fetching records",
        timeout + Duration::from_millis(max_wait_ms as u64),
        client.fetch_records_detailed(position, 1..max_bytes, max_wait_ms),
    )
    .await
}

enum Fetched {
    /// Records from the position on, their decoded batch if it was decoded ahead, and the
    /// offset to resume from once they are applied (past any markers after them).
    Records {
        records: Vec<RecordAndOffset>,
        batch: Option<Batch>,
        next: i64,
    },
    /// Only batches with nothing to apply (transaction markers, aborted records) up to `to`.
    Skipped {
        to: i64,
    },
    Nothing,
    OutOfRange,
}

/// A decoded batch: what to change, with duplicate ids folded (the last record wins, as in
/// Kafka's order) and ids sorted so concurrent batches lock rows in one order.
struct Batch {
    kind: WorkerKind,
    /// Ids to change, sorted and unique.
    ids: Vec<i64>,
    /// New name per id (upserts only).
    names: Vec<String>,
    /// Indices of the records that named each id, grouped by id in `ids`' order, oldest first
    /// within a group (one flat vector rather than one per id).
    sources: Vec<usize>,
    /// Per id, its group in `sources`; the group's last record is the one applied.
    spans: Vec<std::ops::Range<usize>>,
    /// Valid records.
    valid: usize,
    /// Records that are not valid messages: index and why.
    invalid: Vec<(usize, codec::InvalidMessage)>,
}

impl Batch {
    fn decode(kind: WorkerKind, records: &[RecordAndOffset]) -> Self {
        // (id, record index, name), sorted by id with a stable sort: each id's records stay in
        // Kafka's order, so the last of a run is the one that wins.
        let mut decoded: Vec<(i64, usize, String)> = Vec::with_capacity(records.len());
        let mut invalid = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let value = record.record.value.as_deref();
            let message = match kind {
                WorkerKind::Upcreate => codec::decode_upsert(value).map(|row| (row.id, row.name)),
                WorkerKind::Delete => codec::decode_delete(value).map(|id| (id, String::new())),
            };
            match message {
                Ok((id, name)) => decoded.push((id, index, name)),
                Err(reason) => invalid.push((index, reason)),
            }
        }
        let valid = decoded.len();
        decoded.sort_by_key(|(id, _, _)| *id);
        let mut batch = Batch {
            kind,
            ids: Vec::with_capacity(valid),
            names: Vec::new(),
            sources: Vec::with_capacity(valid),
            spans: Vec::with_capacity(valid),
            valid,
            invalid,
        };
        for (id, index, name) in decoded {
            let at = batch.sources.len();
            batch.sources.push(index);
            if batch.ids.last() == Some(&id) {
                batch.spans.last_mut().expect("a span per id").end = at + 1;
                if kind == WorkerKind::Upcreate {
                    *batch.names.last_mut().expect("a name per id") = name;
                }
            } else {
                batch.ids.push(id);
                batch.spans.push(at..at + 1);
                if kind == WorkerKind::Upcreate {
                    batch.names.push(name);
                }
            }
        }
        batch
    }

    /// Applies every change in one statement; a refused record fails it with [`Error::RowRejected`].
    async fn apply_all(&self, tx: &Transaction<'_>) -> Result<()> {
        self.apply_range(tx, 0..self.ids.len())
            .await
            .map_err(as_rejection)
    }

    async fn apply_range(&self, tx: &Transaction<'_>, range: std::ops::Range<usize>) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        match self.kind {
            WorkerKind::Upcreate => {
                let names: Vec<&str> = self.names[range.clone()]
                    .iter()
                    .map(String::as_str)
                    .collect();
                rows::upsert(tx, &self.ids[range], &names).await?;
            }
            WorkerKind::Delete => {
                rows::delete(tx, &self.ids[range]).await?;
            }
        }
        Ok(())
    }

    /// Applies every change PostgreSQL accepts, bisecting under savepoints to find the ones it
    /// refuses. A refused upsert falls back to the id's previous record in this batch, as applying
    /// the records one by one would have left it. Returns the refused records: index and reason.
    async fn apply_isolating(
        &mut self,
        tx: &mut Transaction<'_>,
        records: &[RecordAndOffset],
    ) -> Result<Vec<(usize, String)>> {
        let mut refused = Vec::new();
        let mut pending = Vec::new();
        pending.push(0..self.ids.len());
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            let savepoint = tx.savepoint("isolate").await?;
            match self.apply_range(&savepoint, range.clone()).await {
                Ok(()) => savepoint.commit().await?,
                Err(Error::Postgres(e)) if is_refusal(&e) => {
                    savepoint.rollback().await?;
                    if range.len() > 1 {
                        let middle = range.start + range.len() / 2;
                        pending.push(middle..range.end);
                        pending.push(range.start..middle);
                        continue;
                    }
                    let at = range.start;
                    let span = &mut self.spans[at];
                    assert!(span.end > span.start, "every id has a source record");
                    span.end -= 1;
                    refused.push((self.sources[span.end], postgres_reason(&e)));
                    if span.end > span.start {
                        let previous = self.sources[span.end - 1];
                        if self.kind == WorkerKind::Upcreate {
                            let value = records[previous].record.value.as_deref();
                            // It decoded when the batch was built, so it decodes again.
                            self.names[at] = codec::decode_upsert(value)
                                .map(|row| row.name)
                                .unwrap_or_default();
                        }
                        pending.push(range);
                    }
                }
                Err(other) => return Err(other),
            }
        }
        Ok(refused)
    }
}

/// PostgreSQL refused the data itself (a data exception, a constraint, a trigger's error), as
/// opposed to failing: retrying will not help, isolating the record will.
fn is_refusal(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|state| {
        let code = state.code();
        code.starts_with("22") || code.starts_with("23") || code == "P0001"
    })
}

/// PostgreSQL rolled the transaction back to break a deadlock or a serialization conflict:
/// applying the same batch again is expected to succeed.
fn is_lock_conflict(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|state| {
        *state == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            || *state == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
    })
}

fn postgres_reason(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|db| db.message().to_owned())
        .unwrap_or_else(|| error.to_string())
}

fn as_rejection(error: Error) -> Error {
    match error {
        Error::Postgres(e) if is_refusal(&e) => Error::RowRejected(postgres_reason(&e)),
        other => other,
    }
}

/// Capped exponential backoff with jitter, never giving up (listing the partitions).
fn retry_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sleeps the next backoff delay; returns `true` if cancelled meanwhile.
async fn sleep_or_cancel(backoff: &mut ExponentialBackoff, cancel: &CancellationToken) -> bool {
    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use rskafka::record::Record;

    use super::*;

    impl Batch {
        fn sources_of(&self, at: usize) -> &[usize] {
            &self.sources[self.spans[at].clone()]
        }
    }

    fn records(values: &[&str]) -> Vec<RecordAndOffset> {
        values
            .iter()
            .enumerate()
            .map(|(offset, value)| RecordAndOffset {
                record: Record {
                    key: None,
                    value: Some(value.as_bytes().to_vec()),
                    headers: Default::default(),
                    timestamp: chrono::Utc::now(),
                },
                offset: offset as i64,
            })
            .collect()
    }

    #[test]
    fn fetches_start_small_and_double_up_to_the_maximum() {
        let max = 1024 * 1024;
        let mut sizes = vec![FIRST_FETCH_BYTES.min(max)];
        while *sizes.last().unwrap() < max {
            sizes.push(grown_fetch_bytes(*sizes.last().unwrap(), max));
        }
        assert_eq!(sizes, [64, 128, 256, 512, 1024].map(|k| k * 1024));
        // A maximum below the first size, or not a power of two, is never exceeded.
        assert_eq!(FIRST_FETCH_BYTES.min(4096), 4096);
        assert_eq!(grown_fetch_bytes(64 * 1024, 100_000), 100_000);
        assert_eq!(grown_fetch_bytes(i32::MAX, i32::MAX), i32::MAX);
    }

    #[test]
    fn a_batch_keeps_the_last_write_per_id_with_ids_sorted_and_every_source_in_order() {
        let records = records(&[
            r#"{"id": 7, "name": "first"}"#,
            r#"{"id": -2, "name": "minus"}"#,
            "not json",
            r#"{"id": 7, "name": "second"}"#,
            r#"{"id": 3, "name": "three"}"#,
            r#"{"id": 7, "name": "third"}"#,
        ]);
        let batch = Batch::decode(WorkerKind::Upcreate, &records);
        assert_eq!(batch.ids, [-2, 3, 7]);
        assert_eq!(batch.names, ["minus", "three", "third"]);
        assert_eq!(batch.sources_of(0), [1]);
        assert_eq!(batch.sources_of(1), [4]);
        assert_eq!(batch.sources_of(2), [0, 3, 5]);
        assert_eq!(batch.valid, 5);
        assert_eq!(
            batch.invalid.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [2]
        );

        let deletes = Batch::decode(
            WorkerKind::Delete,
            &self::records(&[r#"{"id": 9}"#, r#"{"id": 1}"#, r#"{"id": 9}"#]),
        );
        assert_eq!(deletes.ids, [1, 9]);
        assert!(deletes.names.is_empty());
        assert_eq!(deletes.sources_of(0), [1]);
        assert_eq!(deletes.sources_of(1), [0, 2]);
    }
}
