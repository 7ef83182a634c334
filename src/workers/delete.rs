//! The delete worker's [`Change`]: a message `{"id": 1}` deletes row 1 (a missing row is no
//! error). Decoding is the codec's ([`codec::decode_delete`]), the SQL is [`rows::delete`].

use deadpool_postgres::Transaction;

use super::change::Change;
use crate::{
    db::rows,
    error::Result,
    kafka::codec::{self, InvalidMessage},
};

/// Deletes rows (the delete worker).
pub struct Delete;

impl Change for Delete {
    /// Nothing but the id.
    type Value = ();

    fn decode(value: Option<&[u8]>) -> Result<(i64, ()), InvalidMessage> {
        codec::decode_delete(value).map(|id| (id, ()))
    }

    async fn apply(tx: &Transaction<'_>, ids: &[i64], _: &[()]) -> Result<()> {
        rows::delete(tx, ids).await?;
        Ok(())
    }
}
