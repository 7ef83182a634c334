//! [`Change`]: all that differs between worker kinds, how a record decodes into a change to one
//! row and the SQL that applies many at once. Folding, bisection, offsets and dead letters are
//! the same for every kind and live in [`batch`](super::batch) and [`commit`](super::commit).

use std::future::Future;

use deadpool_postgres::Transaction;

use crate::{error::Result, kafka::codec::InvalidMessage};

/// One kind of change to table `some_model`, implemented once per [`WorkerKind`]
/// (see [`WorkerKind::decode`] for which is which).
///
/// A batch applies, per id, the change of the id's last record. When PostgreSQL refuses it, the
/// id's previous record is decoded again and applied instead, as applying the records one by
/// one would have left the row.
///
/// [`WorkerKind`]: super::kind::WorkerKind
/// [`WorkerKind::decode`]: super::kind::WorkerKind::decode
pub trait Change: Send + Sync + 'static {
    /// What a record asks for its row besides naming it: the new name of an upsert, nothing
    /// (`()`, which takes no memory) for a delete.
    type Value: Send + Sync + 'static;

    /// The id a record value names and what it asks for; why not, when it is not a valid message.
    fn decode(value: Option<&[u8]>) -> Result<(i64, Self::Value), InvalidMessage>;

    /// Applies `values[i]` to row `ids[i]` for every `i`, in one statement. `ids` are sorted and
    /// unique, so concurrent batches lock rows in one order.
    fn apply(
        tx: &Transaction<'_>,
        ids: &[i64],
        values: &[Self::Value],
    ) -> impl Future<Output = Result<()>> + Send;
}
