//! The upcreate worker's [`Change`]: a message `{"id": 5, "name": "smth"}` inserts row 5 or
//! renames it. Decoding is the codec's ([`codec::decode_upsert`]), the SQL is [`rows::upsert`].

use deadpool_postgres::Transaction;

use super::change::Change;
use crate::{
    db::rows,
    error::Result,
    kafka::codec::{self, InvalidMessage},
};

/// Upserts rows (the upcreate worker).
pub struct Upcreate;

impl Change for Upcreate {
    /// The row's new name.
    type Value = String;

    fn decode(value: Option<&[u8]>) -> Result<(i64, String), InvalidMessage> {
        codec::decode_upsert(value).map(|row| (row.id, row.name))
    }

    async fn apply(tx: &Transaction<'_>, ids: &[i64], names: &[String]) -> Result<()> {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        rows::upsert(tx, ids, &names).await?;
        Ok(())
    }
}
