//! Where a partition's consumer resumes ([`Position`]): the offset stored in PostgreSQL, checked
//! against the topic by the last applied record's fingerprint (a recreated topic is read again
//! from its earliest offset), and resets to the earliest offset. Fetching is
//! [`fetch`](super::fetch)'s; storing offsets with each batch is [`commit`](super::commit)'s.

use rskafka::record::Record;

use super::{context::WorkerContext, fetch::Fetcher};
use crate::{
    db::offsets::{self, StoredOffset},
    error::{bounded, Result},
};

/// Where one partition's consumer stands, read from PostgreSQL when it (re)positions.
pub(super) struct Position {
    /// Offset of the next record to fetch.
    pub(super) next: i64,
    /// The next offset as stored in PostgreSQL (`None`: nothing stored yet). Every commit
    /// checks it is unchanged, so two consumers of one partition can never both apply a batch.
    pub(super) committed: Option<i64>,
    /// A stored offset not yet checked against its topic: the offset of the last applied record
    /// and its fingerprint, while that offset lies beyond the partition's end.
    unverified: Option<(i64, i64)>,
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

impl Position {
    /// Reads the stored offset; a partition never seen before starts at its earliest offset.
    pub(super) async fn load(
        context: &WorkerContext,
        partition: i32,
        reader: &Fetcher,
    ) -> Result<Self> {
        let stored = bounded("reading stored offsets", context.db_timeout, async {
            let client = context.pool.get().await?;
            offsets::load(&client, context.kind.name(), &context.topic).await
        })
        .await?;
        let stored = stored.get(&partition).copied();
        let mut position = Position {
            next: 0,
            committed: stored.map(|s| s.next),
            unverified: None,
        };
        position.next = match stored {
            None => reader.earliest().await?,
            Some(StoredOffset {
                next,
                fingerprint: Some((at, fingerprint)),
            }) => match lineage(reader, at, fingerprint).await? {
                Lineage::Changed => {
                    let earliest = reader.earliest().await?;
                    let why = "the record before the stored offset changed (topic recreated)";
                    restart(context, partition, next, earliest, why);
                    earliest
                }
                Lineage::NotYetThere => {
                    // Checked again once the partition reaches it (see `recreated`).
                    position.unverified = Some((at, fingerprint));
                    next
                }
                Lineage::Same | Lineage::Gone => next,
            },
            Some(stored) => stored.next,
        };
        context.positioned(partition, position.next);
        Ok(position)
    }

    /// Whether the last applied record, once the partition reaches its offset again
    /// (`high_watermark`), turns out to have been replaced: the topic was recreated.
    pub(super) async fn recreated(
        &mut self,
        reader: &Fetcher,
        high_watermark: i64,
    ) -> Result<bool> {
        if let Some((offset, fingerprint)) = self.unverified {
            if high_watermark > offset {
                match lineage(reader, offset, fingerprint).await? {
                    Lineage::Changed => return Ok(true),
                    Lineage::NotYetThere => {}
                    Lineage::Same | Lineage::Gone => self.unverified = None,
                }
            }
        }
        Ok(false)
    }

    /// Restarts from the partition's earliest offset (the stored one is out of range, or its
    /// topic was recreated); returns the offsets from and to.
    pub(super) async fn reset_to_earliest(
        &mut self,
        context: &WorkerContext,
        partition: i32,
        reader: &Fetcher,
    ) -> Result<(i64, i64)> {
        let from = self.next;
        let to = reader.earliest().await?;
        restart(
            context,
            partition,
            from,
            to,
            "stored offset is out of range, or its topic was recreated",
        );
        self.next = to;
        self.unverified = None;
        Ok((from, to))
    }

    /// `next` is stored as the next offset: the consumer moves on to it.
    pub(super) fn stored(&mut self, next: i64) {
        self.committed = Some(next);
        self.next = next;
    }
}

/// Identifies a record well enough to tell whether an offset still holds the same one:
/// its timestamp and a hash of its key and value.
pub(super) fn fingerprint_of(record: &Record) -> i64 {
    let mut hash = murmur2::murmur2(
        record.key.as_deref().unwrap_or_default(),
        murmur2::KAFKA_SEED,
    );
    hash = murmur2::murmur2(record.value.as_deref().unwrap_or_default(), hash);
    record.timestamp.timestamp_millis().wrapping_mul(1_000_003) ^ i64::from(hash)
}

/// Whether the record at `offset` is still the one applied there (its fingerprint).
async fn lineage(reader: &Fetcher, offset: i64, fingerprint: i64) -> Result<Lineage> {
    let records = reader.covering(offset).await?.records;
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

/// Logs that the partition restarts from its earliest offset, and why; counts the reset.
fn restart(context: &WorkerContext, partition: i32, stored: i64, earliest: i64, why: &str) {
    tracing::warn!(
        worker = context.kind.name(),
        topic = %context.topic,
        partition,
        stored_offset = stored,
        earliest_offset = earliest,
        "{why}; restarting from the earliest offset"
    );
    context.stats.update(partition, |p| p.offset_resets += 1);
}
