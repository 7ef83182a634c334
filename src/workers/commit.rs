//! A partition's writes to PostgreSQL ([`Commit`]): a batch in one transaction that checks and
//! moves the stored offset, changes the rows, writes the dead letters and commits (again after a
//! lock conflict, and with refused records isolated), then its counters and metrics; and moving
//! the offset past batches with nothing to apply. When to write is [`partition`](super::partition)'s.

use rskafka::record::RecordAndOffset;

use super::{
    batch::DecodedBatch, context::WorkerContext, dead_letter::DeadLetter, metrics::PartitionLabels,
    resume::fingerprint_of,
};
use crate::{
    db::{errors::is_lock_conflict, offsets},
    error::{bounded, Error, Result},
};

/// Immediate re-applications of a batch PostgreSQL rolled back to break a deadlock, before the
/// failure goes to the usual backoff.
const CONFLICT_RETRIES: usize = 3;

/// One partition's writes, from the next offset it last read or stored.
pub(super) struct Commit<'a> {
    pub(super) context: &'a WorkerContext,
    pub(super) partition: i32,
    /// The next offset as stored in PostgreSQL (`None`: nothing stored yet). Every transaction
    /// checks it is unchanged, so two consumers of one partition can never both apply a batch.
    pub(super) expected: Option<i64>,
}

/// What a committed batch left out.
struct Outcome {
    /// Records PostgreSQL refused.
    rejected: usize,
    /// Records written to the dead-letter topic.
    dead_lettered: usize,
}

impl Commit<'_> {
    /// Applies a batch, its dead letters and its next offset `next`, all or nothing; returns
    /// how many records were valid and invalid. `decoded` is the batch if it was decoded ahead.
    ///
    /// The batch is first applied as one statement. If PostgreSQL refuses a record in it (a
    /// constraint, say), the transaction is rolled back and the batch applied again with the
    /// refused records isolated by bisection under savepoints, so they alone are dead-lettered.
    pub(super) async fn batch(
        &self,
        records: &[RecordAndOffset],
        decoded: Option<Box<dyn DecodedBatch>>,
        next: i64,
    ) -> Result<(usize, usize)> {
        let worker = self.context.kind.name();
        let topic = self.context.topic.as_str();
        let partition = self.partition;
        let last = records.last().expect("a batch is never empty");
        let fingerprint = Some((last.offset, fingerprint_of(&last.record)));
        let started = std::time::Instant::now();
        let mut batch = match decoded {
            Some(batch) => batch,
            None => {
                let batch = self.context.kind.decode(records);
                tracing::trace!(records = records.len(), "decoded");
                batch
            }
        };
        for (index, reason) in batch.invalid() {
            let offset = records[*index].offset;
            tracing::warn!(worker, topic, partition, offset, reason = %reason, "skipping invalid record");
        }

        let mut first_try = self
            .attempt(records, &mut *batch, next, fingerprint, false)
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
            first_try = self
                .attempt(records, &mut *batch, next, fingerprint, false)
                .await;
        }
        let outcome = match first_try {
            Err(Error::RowRejected(reason)) => {
                tracing::warn!(worker, topic, partition, reason = %reason, "PostgreSQL refused a record; isolating it");
                self.attempt(records, &mut *batch, next, fingerprint, true)
                    .await?
            }
            other => other?,
        };

        let invalid = batch.invalid().len() + outcome.rejected;
        let valid = batch.valid() - outcome.rejected;
        let unkeyed = self.context.count_unkeyed(partition, records);
        self.context.positioned(partition, next);
        self.context.stats.update(partition, |p| {
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
        Ok((valid, invalid))
    }

    /// Stores `to` as the next offset when the batches before it held nothing to apply
    /// (transaction markers, records of aborted transactions).
    pub(super) async fn skip_to(&self, to: i64) -> Result<()> {
        let worker = self.context.kind.name();
        let topic = self.context.topic.as_str();
        let (partition, expected) = (self.partition, self.expected);
        bounded("storing an offset", self.context.db_timeout, async {
            let mut client = self.context.pool.get().await?;
            let tx = client.transaction().await?;
            if !offsets::advance(&tx, worker, topic, partition, expected, to, None).await? {
                return Err(self.conflict());
            }
            self.context.check_lease()?;
            tx.commit().await?;
            Ok(())
        })
        .await?;
        tracing::debug!(to, "moved past batches with nothing to apply");
        self.context.positioned(partition, to);
        Ok(())
    }

    /// One attempt at a batch in one transaction, bounded in time: fence the offset (moved to
    /// `next`, remembering the last record's `fingerprint`), change the rows, write the dead
    /// letters, commit. With `isolate`, records PostgreSQL refuses are found and left out.
    async fn attempt(
        &self,
        records: &[RecordAndOffset],
        batch: &mut dyn DecodedBatch,
        next: i64,
        fingerprint: Option<(i64, i64)>,
        isolate: bool,
    ) -> Result<Outcome> {
        let worker = self.context.kind.name();
        let topic = self.context.topic.as_str();
        let partition = self.partition;
        let expected = self.expected;
        bounded("applying a batch", self.context.db_timeout, async {
            let mut client = self.context.pool.get().await?;
            let mut tx = client.transaction().await?;
            if !offsets::advance(&tx, worker, topic, partition, expected, next, fingerprint).await?
            {
                return Err(self.conflict());
            }
            let refused = if isolate {
                batch.apply_isolating(&mut tx, records).await?
            } else {
                batch.apply_all(&tx).await?;
                Vec::new()
            };

            let mut letters: Vec<DeadLetter<'_>> = batch
                .invalid()
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
            self.context.check_lease()?;
            tx.commit().await?;
            Ok(Outcome {
                rejected: refused.len(),
                dead_lettered,
            })
        })
        .await
    }

    /// Another process moved this partition's stored offset.
    fn conflict(&self) -> Error {
        Error::OffsetConflict {
            worker: self.context.kind.name(),
            topic: self.context.topic.clone(),
            partition: self.partition,
        }
    }
}
