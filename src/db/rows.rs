//! The SQL for table `some_model`: listing, one-row lookup, and the per-batch upsert and delete.

use deadpool_postgres::{GenericClient, Transaction};

use crate::{error::Result, model::Row};

/// All rows, highest id first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<Row>> {
    let statement = client
        .prepare_cached("SELECT id, name FROM some_model ORDER BY id DESC")
        .await?;
    let rows = client.query(&statement, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| Row {
            id: r.get(0),
            name: r.get(1),
        })
        .collect())
}

/// The row with this id, if any.
pub async fn get(client: &impl GenericClient, id: i64) -> Result<Option<Row>> {
    let statement = client
        .prepare_cached("SELECT id, name FROM some_model WHERE id = $1")
        .await?;
    Ok(client.query_opt(&statement, &[&id]).await?.map(|r| Row {
        id: r.get(0),
        name: r.get(1),
    }))
}

/// Inserts or renames every row in one statement.
///
/// `ids` must be unique (PostgreSQL refuses to touch one row twice in an `ON CONFLICT` statement)
/// and sorted, so concurrent batches lock rows in the same order and cannot deadlock each other.
pub async fn upsert(tx: &Transaction<'_>, ids: &[i64], names: &[&str]) -> Result<u64> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO some_model (id, name) \
             SELECT * FROM unnest($1::bigint[], $2::text[]) \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
        )
        .await?;
    Ok(tx.execute(&statement, &[&ids, &names]).await?)
}

/// Deletes every listed row; ids without a row are ignored. `ids` sorted, as for [`upsert`].
pub async fn delete(tx: &Transaction<'_>, ids: &[i64]) -> Result<u64> {
    let statement = tx
        .prepare_cached("DELETE FROM some_model WHERE id = ANY($1::bigint[])")
        .await?;
    Ok(tx.execute(&statement, &[&ids]).await?)
}
