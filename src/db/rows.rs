//! The SQL for table `some_model`: listing (pages and the whole table), one-row lookup, and the
//! per-batch upsert and delete.

use deadpool_postgres::{GenericClient, Object, Transaction};
use futures_util::{Stream, StreamExt};
use tokio_postgres::{types::ToSql, SimpleQueryMessage, SimpleQueryRow};

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

/// One row of a listing as PostgreSQL sent it: binary from a prepared statement (pages, see
/// [`stream`]), text from the simple query protocol (the whole table, see [`stream_all`]).
#[derive(Debug)]
pub enum ListedRow {
    /// A row of a page.
    Binary(tokio_postgres::Row),
    /// A row of the whole-table listing.
    Text(SimpleQueryRow),
}

impl ListedRow {
    /// Column `id`.
    pub fn id(&self) -> Result<i64> {
        match self {
            Self::Binary(row) => Ok(row.try_get(0)?),
            Self::Text(row) => row
                .try_get(0)?
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| {
                    Error::PostgresShared("the listing sent an id that is no bigint".into())
                }),
        }
    }

    /// Column `name`.
    pub fn name(&self) -> Result<&str> {
        match self {
            Self::Binary(row) => Ok(row.try_get(1)?),
            Self::Text(row) => row
                .try_get(1)?
                .ok_or_else(|| Error::PostgresShared("the listing sent a null name".into())),
        }
    }
}

/// The whole-table listing's statement. [`stream_all`] runs it after [`LIST_ALL_SETTINGS`].
const LIST_ALL: &str = "SELECT id, name FROM some_model ORDER BY id DESC";

/// Planner settings of the whole-table listing, each ending with its statement.
///
/// Without a `LIMIT`, PostgreSQL weighs reading the whole table through the primary key against
/// a sequential scan plus a sort, by the table's statistics. On a table not analyzed yet (after
/// a bulk load, before autovacuum), or one whose rows lie out of id order, it picks the sort:
/// parallel workers sort the table into temporary files and the first row waits for all of it
/// (125–130 ms at 1 M rows). Forbidding the sort leaves the backward index scan, whose first
/// row is the table's highest id at once, whatever the statistics (BENCHMARKS.md, "The
/// listing's plan"). No parallel plan either: a listing is paced by its client, and workers
/// only delay the first row. Considered and left: a cursor (`cursor_tuple_fraction`) still
/// weighs costs by the statistics, and its `FETCH`es cost a round trip per chunk and copy
/// each chunk into a tuplestore; keyset chunks with `LIMIT` cost a round trip per chunk and
/// need a repeatable-read transaction to stay one snapshot; an explicit transaction leaves a
/// `BEGIN` open on the pooled connection when the client goes away mid-stream.
const LIST_ALL_SETTINGS: &str =
    "SET LOCAL enable_sort = off; SET LOCAL max_parallel_workers_per_gather = 0; ";

/// The whole table, highest id first, as a stream that holds `client` until it ends.
///
/// One simple-protocol query: the settings of [`LIST_ALL_SETTINGS`] and the `SELECT` run in
/// the one implicit transaction PostgreSQL gives a multi-statement query, so the settings end
/// with it even when the client goes away mid-stream (nothing is left on the pooled
/// connection), and the rows are one snapshot, as one statement. Rows come as text, streamed
/// as PostgreSQL produces them. Returns once the `SELECT` has been planned and has started, so
/// an error before the first row fails the call rather than the stream.
pub async fn stream_all(
    client: Object,
) -> Result<impl Stream<Item = Result<ListedRow>> + Send + 'static> {
    let mut messages = Box::pin(
        client
            .simple_query_raw(&format!("{LIST_ALL_SETTINGS}{LIST_ALL}"))
            .await?,
    );
    // The settings' command completions, then the `SELECT`'s row description.
    loop {
        match messages.next().await.transpose()? {
            Some(SimpleQueryMessage::RowDescription(_)) => break,
            Some(_) => continue,
            None => {
                return Err(Error::PostgresShared(
                    "the listing ended before its rows".into(),
                ))
            }
        }
    }
    Ok(messages.filter_map(move |message| {
        // The stream owns the pooled connection: it goes back to the pool when the stream ends.
        let _held = &client;
        std::future::ready(match message {
            Ok(SimpleQueryMessage::Row(row)) => Some(Ok(ListedRow::Text(row))),
            Ok(_) => None,
            Err(error) => Some(Err(Error::from(error))),
        })
    }))
}

/// PostgreSQL's plan for the whole-table listing, one line per plan line: `EXPLAIN` of the
/// very statement [`stream_all`] runs, under the same settings (for tests and benchmarks).
pub async fn explain_all(client: &tokio_postgres::Client) -> Result<Vec<String>> {
    let messages = client
        .simple_query(&format!("{LIST_ALL_SETTINGS}EXPLAIN {LIST_ALL}"))
        .await?;
    Ok(messages
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect())
}

/// The page's rows, highest id first, as a stream that holds `client` until it ends.
///
/// PostgreSQL sends rows as the consumer reads them (tokio-postgres forwards one buffer at a
/// time), so memory stays flat however large the table. The whole table has a statement of
/// its own, [`stream_all`].
pub async fn stream(
    client: Object,
    page: Page,
) -> Result<impl Stream<Item = Result<ListedRow>> + Send + 'static> {
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
        row.map(ListedRow::Binary).map_err(Error::from)
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
