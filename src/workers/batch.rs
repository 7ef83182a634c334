//! One batch of records decoded for a single statement: each id's records folded (the last one
//! wins, as in Kafka's order), ids sorted, applied whole or with refused records isolated by
//! bisection. What a record means is the kind's [`Change`]; the transaction is the partition's.

use std::ops::Range;

use deadpool_postgres::Transaction;
use futures_util::future::BoxFuture;
use rskafka::record::RecordAndOffset;

use super::change::Change;
use crate::{
    db::errors::{as_rejection, is_refusal, postgres_reason},
    error::{Error, Result},
    kafka::codec::InvalidMessage,
};

/// A decoded batch of change `C`: what to change, with duplicate ids folded and ids sorted so
/// concurrent batches lock rows in one order.
pub(super) struct Batch<C: Change> {
    /// Ids to change, sorted and unique.
    ids: Vec<i64>,
    /// What to apply per id, in `ids`' order: its last record's.
    values: Vec<C::Value>,
    /// Indices of the records that named each id, grouped by id in `ids`' order, oldest first
    /// within a group (one flat vector rather than one per id).
    sources: Vec<usize>,
    /// Per id, its group in `sources`; the group's last record is the one applied.
    spans: Vec<Range<usize>>,
    /// Valid records.
    valid: usize,
    /// Records that are not valid messages: index and why.
    invalid: Vec<(usize, InvalidMessage)>,
}

/// A decoded batch of whichever kind: what the partition loop needs of it. One implementation,
/// [`Batch`]; the kind is chosen once per batch ([`WorkerKind::decode`](super::kind::WorkerKind::decode)).
pub(super) trait DecodedBatch: Send + Sync {
    /// Valid records.
    fn valid(&self) -> usize;

    /// Records that are not valid messages: index and why.
    fn invalid(&self) -> &[(usize, InvalidMessage)];

    /// Applies every change in one statement; a refused record fails it with [`Error::RowRejected`].
    fn apply_all<'a>(&'a self, tx: &'a Transaction<'_>) -> BoxFuture<'a, Result<()>>;

    /// Applies every change PostgreSQL accepts, bisecting under savepoints to find the ones it
    /// refuses. A refused record's id falls back to its previous record in this batch, as
    /// applying the records one by one would have left it. Returns the refused records: index
    /// and reason.
    fn apply_isolating<'a>(
        &'a mut self,
        tx: &'a mut Transaction<'_>,
        records: &'a [RecordAndOffset],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>>>;
}

impl<C: Change> Batch<C> {
    /// Decodes `records` and folds them per id.
    pub(super) fn decode(records: &[RecordAndOffset]) -> Self {
        // (id, record index, value), sorted by id with a stable sort: each id's records stay in
        // Kafka's order, so the last of a run is the one that wins.
        let mut decoded: Vec<(i64, usize, C::Value)> = Vec::with_capacity(records.len());
        let mut invalid = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match C::decode(record.record.value.as_deref()) {
                Ok((id, value)) => decoded.push((id, index, value)),
                Err(reason) => invalid.push((index, reason)),
            }
        }
        let valid = decoded.len();
        decoded.sort_by_key(|(id, _, _)| *id);
        let mut batch = Batch {
            ids: Vec::with_capacity(valid),
            values: Vec::with_capacity(valid),
            sources: Vec::with_capacity(valid),
            spans: Vec::with_capacity(valid),
            valid,
            invalid,
        };
        for (id, index, value) in decoded {
            let at = batch.sources.len();
            batch.sources.push(index);
            if batch.ids.last() == Some(&id) {
                batch.spans.last_mut().expect("a span per id").end = at + 1;
                *batch.values.last_mut().expect("a value per id") = value;
            } else {
                batch.ids.push(id);
                batch.spans.push(at..at + 1);
                batch.values.push(value);
            }
        }
        batch
    }

    async fn apply_range(&self, tx: &Transaction<'_>, range: Range<usize>) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        C::apply(tx, &self.ids[range.clone()], &self.values[range]).await
    }

    async fn isolate(
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
                        let previous = &records[self.sources[span.end - 1]];
                        // It decoded when the batch was built, so it decodes again.
                        if let Ok((_, value)) = C::decode(previous.record.value.as_deref()) {
                            self.values[at] = value;
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

impl<C: Change> DecodedBatch for Batch<C> {
    fn valid(&self) -> usize {
        self.valid
    }

    fn invalid(&self) -> &[(usize, InvalidMessage)] {
        &self.invalid
    }

    fn apply_all<'a>(&'a self, tx: &'a Transaction<'_>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.apply_range(tx, 0..self.ids.len())
                .await
                .map_err(as_rejection)
        })
    }

    fn apply_isolating<'a>(
        &'a mut self,
        tx: &'a mut Transaction<'_>,
        records: &'a [RecordAndOffset],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>>> {
        Box::pin(self.isolate(tx, records))
    }
}

#[cfg(test)]
mod tests {
    use rskafka::record::Record;

    use super::*;
    use crate::workers::{delete::Delete, upcreate::Upcreate};

    impl<C: Change> Batch<C> {
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
    fn a_batch_keeps_the_last_write_per_id_with_ids_sorted_and_every_source_in_order() {
        let records = records(&[
            r#"{"id": 7, "name": "first"}"#,
            r#"{"id": -2, "name": "minus"}"#,
            "not json",
            r#"{"id": 7, "name": "second"}"#,
            r#"{"id": 3, "name": "three"}"#,
            r#"{"id": 7, "name": "third"}"#,
        ]);
        let batch = Batch::<Upcreate>::decode(&records);
        assert_eq!(batch.ids, [-2, 3, 7]);
        assert_eq!(batch.values, ["minus", "three", "third"]);
        assert_eq!(batch.sources_of(0), [1]);
        assert_eq!(batch.sources_of(1), [4]);
        assert_eq!(batch.sources_of(2), [0, 3, 5]);
        assert_eq!(batch.valid, 5);
        assert_eq!(
            batch.invalid.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [2]
        );

        let deletes = Batch::<Delete>::decode(&self::records(&[
            r#"{"id": 9}"#,
            r#"{"id": 1}"#,
            r#"{"id": 9}"#,
        ]));
        assert_eq!(deletes.ids, [1, 9]);
        // A delete keeps no name (nor anything else) per id.
        assert_eq!(std::mem::size_of_val(deletes.values.as_slice()), 0);
        assert_eq!(deletes.sources_of(0), [1]);
        assert_eq!(deletes.sources_of(1), [0, 2]);
    }
}
