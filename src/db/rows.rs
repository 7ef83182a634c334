//! The SQL for table `some_model`: listing, one-row lookup, and the per-batch upsert and delete.

use deadpool_postgres::{GenericClient, Object, Transaction};
use futures_util::{Stream, StreamExt};
use tokio_postgres::types::ToSql;

use crate::{
    error::{Error, Result},
    model::Row,
};

/// Which rows a listing returns: highest id first, optionally only those below an id, optionally
/// at most so many (keyset pagination).
#[derive(Debug, Clone, Copy, Default)]
pub struct Page {
    /// Only rows whose id is lower than this.
    pub before_id: Option<i64>,
    /// At most this many rows.
    pub limit: Option<i64>,
}

/// The page's rows, highest id first, as a stream that holds `client` until it ends.
///
/// PostgreSQL sends rows as the consumer reads them (tokio-postgres forwards one buffer at a
/// time), so memory stays flat however large the table.
pub async fn stream(
    client: Object,
    page: Page,
) -> Result<impl Stream<Item = Result<tokio_postgres::Row>> + Send + 'static> {
    // Two statements rather than `$1 IS NULL OR id < $1`, so each keeps an index range scan
    // under a generic plan. `LIMIT NULL` is no limit.
    let rows = match page.before_id {
        None => {
            let statement = client
                .prepare_cached("SELECT id, name FROM some_model ORDER BY id DESC LIMIT $1")
                .await?;
            client
                .query_raw(&statement, [&page.limit as &(dyn ToSql + Sync)])
                .await?
        }
        Some(before_id) => {
            let statement = client
                .prepare_cached(
                    "SELECT id, name FROM some_model WHERE id < $1 ORDER BY id DESC LIMIT $2",
                )
                .await?;
            let params: [&(dyn ToSql + Sync); 2] = [&before_id, &page.limit];
            client.query_raw(&statement, params).await?
        }
    };
    Ok(rows.map(move |row| {
        // The stream owns the pooled connection: it goes back to the pool when the stream ends.
        let _held = &client;
        row.map_err(Error::from)
    }))
}

/// The rows with these ids, in no particular order; ids without a row are left out.
pub async fn get_many(client: &impl GenericClient, ids: &[i64]) -> Result<Vec<Row>> {
    let statement = client
        .prepare_cached("SELECT id, name FROM some_model WHERE id = ANY($1)")
        .await?;
    let rows = client.query(&statement, &[&ids]).await?;
    Ok(rows
        .into_iter()
        .map(|r| Row {
            id: r.get(0),
            name: r.get(1),
        })
        .collect())
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
///
/// Runs under the statement's generic plan, an index probe per id: planned for each batch's
/// array, PostgreSQL spends milliseconds estimating every element and, on a table not much
/// larger than the batch, picks a scan of the whole table (BENCHMARKS.md, "The delete's plan").
/// The setting ends with the transaction.
pub async fn delete(tx: &Transaction<'_>, ids: &[i64]) -> Result<u64> {
    tx.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
        .await?;
    let statement = tx
        .prepare_cached("DELETE FROM some_model WHERE id = ANY($1::bigint[])")
        .await?;
    Ok(tx.execute(&statement, &[&ids]).await?)
}
