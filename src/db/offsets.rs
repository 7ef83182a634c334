//! The SQL for stored consumer offsets: where each worker resumes on each partition.
//! Offsets are written in the same transaction as the rows a batch changed.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Transaction};

use crate::error::Result;

/// Where a worker resumes on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredOffset {
    /// Offset of the next record to apply.
    pub next: i64,
    /// The last applied record, if known (not after a reset): its offset (below `next`; records
    /// between them were transaction markers or aborted) and its fingerprint.
    pub fingerprint: Option<(i64, i64)>,
}

/// Stored next offsets of `worker` on `topic`, by partition.
pub async fn load(
    client: &impl GenericClient,
    worker: &str,
    topic: &str,
) -> Result<HashMap<i32, StoredOffset>> {
    let statement = client
        .prepare_cached(
            "SELECT partition, next_offset, last_fingerprint, \
                    coalesce(fingerprint_offset, next_offset - 1) \
             FROM kafka_offsets WHERE worker = $1 AND topic = $2",
        )
        .await?;
    let rows = client.query(&statement, &[&worker, &topic]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let fingerprint: Option<i64> = r.get(2);
            let stored = StoredOffset {
                next: r.get(1),
                fingerprint: fingerprint.map(|f| (r.get(3), f)),
            };
            (r.get(0), stored)
        })
        .collect())
}

/// Moves the stored offset from `expected` (`None`: nothing stored yet) to `next`, remembering
/// the last applied record's offset and fingerprint (`None` when the range moved past held no
/// record to apply, only transaction markers or aborted records: the previous one is kept).
///
/// Returns `false`, changing nothing, when the stored value is not `expected`: another process
/// consumed this partition meanwhile, and the caller must roll back. Run it first in the batch's
/// transaction: the row lock it takes serialises concurrent appliers of one partition.
pub async fn advance(
    tx: &Transaction<'_>,
    worker: &str,
    topic: &str,
    partition: i32,
    expected: Option<i64>,
    next: i64,
    fingerprint: Option<(i64, i64)>,
) -> Result<bool> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO kafka_offsets AS o \
                 (worker, topic, partition, next_offset, fingerprint_offset, last_fingerprint) \
             VALUES ($1, $2, $3, $5, $6, $7) \
             ON CONFLICT (worker, topic, partition) DO UPDATE \
             SET next_offset = EXCLUDED.next_offset, \
                 fingerprint_offset = coalesce(EXCLUDED.fingerprint_offset, o.fingerprint_offset), \
                 last_fingerprint = coalesce(EXCLUDED.last_fingerprint, o.last_fingerprint), \
                 updated_at = now() \
             WHERE o.next_offset = $4",
        )
        .await?;
    // -1 never matches a stored offset, so "nothing stored" conflicts with any stored row.
    let expected = expected.unwrap_or(-1);
    let (at, fingerprint) = (fingerprint.map(|f| f.0), fingerprint.map(|f| f.1));
    let changed = tx
        .execute(
            &statement,
            &[
                &worker,
                &topic,
                &partition,
                &expected,
                &next,
                &at,
                &fingerprint,
            ],
        )
        .await?;
    Ok(changed == 1)
}

/// Overwrites the stored next offsets of `worker` on `topic` (used to reset a stopped worker).
pub async fn store(
    client: &impl GenericClient,
    worker: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<()> {
    let statement = client
        .prepare_cached(
            "INSERT INTO kafka_offsets (worker, topic, partition, next_offset) \
             SELECT $1, $2, p, o FROM unnest($3::integer[], $4::bigint[]) AS t(p, o) \
             ON CONFLICT (worker, topic, partition) DO UPDATE \
             SET next_offset = EXCLUDED.next_offset, last_fingerprint = NULL, fingerprint_offset = NULL, \
                 updated_at = now()",
        )
        .await?;
    let partitions: Vec<i32> = offsets.iter().map(|(p, _)| *p).collect();
    let next: Vec<i64> = offsets.iter().map(|(_, o)| *o).collect();
    client
        .execute(&statement, &[&worker, &topic, &partitions, &next])
        .await?;
    Ok(())
}
