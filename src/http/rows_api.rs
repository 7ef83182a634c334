//! The rows API, the Django service's contract: list rows and publish one row to Kafka. Starting
//! and stopping the workers, on the same `/api/some_models/` paths, is `workers_api`'s.

use std::sync::Arc;

use futures_util::{future::Either, TryStreamExt};
use poem::web::Data;
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, OpenApi,
};

use super::{
    auth::{Access, ApiAuth},
    error::{error_answers, unavailable_on_library_errors, ErrorBody, NotFound, Unavailable},
    json_rows::JsonRows,
    ApiTags, AppState,
};
use crate::{
    db::rows::{self, Page},
    error::bounded,
    kafka::codec,
    model::Row,
};

/// Pages of at most this many rows are read whole from the main pool before they are sent;
/// larger ones, and the full listing, stream from the listing pool.
const SMALL_PAGE_ROWS: i64 = 1_000;
/// `Retry-After` of a listing refused because every slot is taken.
const RETRY_AFTER_SECS: u32 = 1;

/// Answer of `GET /api/some_models/`.
#[derive(ApiResponse)]
pub enum RowsResponse {
    /// The rows, highest id first. The body is streamed as PostgreSQL yields it.
    #[oai(status = 200)]
    Ok(JsonRows),
}

/// The errors `GET /api/some_models/` can answer.
#[derive(Debug, ApiResponse)]
pub enum ListRowsError {
    /// `limit` or `before_id` is malformed or out of range; `field` names it.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `API_TOKEN_FOR_READS=true` and the bearer token is missing or wrong.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The request declares a body over 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// PostgreSQL is unreachable or too slow, or `LISTING_MAX_CONCURRENT` listings of more
    /// than 1,000 rows are already streaming (then with `Retry-After`); retry later.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying, when every listing slot is taken.
        #[oai(header = "Retry-After")]
        Option<u32>,
    ),
}
error_answers!(ListRowsError: BadRequest, Unauthorized);

impl From<Unavailable> for ListRowsError {
    fn from(answer: Unavailable) -> Self {
        Self::Unavailable(Json(answer.0), None)
    }
}

/// Answer of `write_to_kafka`.
#[derive(ApiResponse)]
pub enum PublishedRowResponse {
    /// The row, as published and acknowledged by Kafka.
    #[oai(status = 200)]
    Ok(Json<Row>),
}

/// The errors `write_to_kafka` can answer.
#[derive(Debug, ApiResponse)]
pub enum PublishError {
    /// `id` is not an integer between -2^63 and 2^63-1 (`field` is `id`), or the path is not
    /// UTF-8 once percent-decoded.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `API_TOKEN` is set and the bearer token is missing or wrong.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// No row has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request declares a body over 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// PostgreSQL or Kafka is unreachable or too slow: Kafka has not acknowledged the record
    /// (if it was already sent, it may still land); retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}
error_answers!(PublishError: BadRequest, Unauthorized, NotFound, Unavailable);

unavailable_on_library_errors!(ListRowsError, PublishError);

/// Rows of table `some_model`.
pub struct SomeModelsApi;

#[OpenApi(prefix_path = "/api", tag = "ApiTags::SomeModels")]
impl SomeModelsApi {
    /// List rows
    ///
    /// Rows of table `some_model`, highest id first: all of them by default, as the Django
    /// service answered. For keyset pagination pass `limit`, then pass the last id received as
    /// `before_id` to get the next page; an empty array means there are no more rows.
    #[oai(
        path = "/some_models/",
        method = "get",
        operation_id = "list_some_models"
    )]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: ApiAuth,
        /// At most this many rows (1 to 1,000,000); all rows when absent.
        #[oai(validator(minimum(value = "1"), maximum(value = "1000000")))]
        limit: Query<Option<i64>>,
        /// Only rows whose id is lower than this: the last id of the previous page.
        before_id: Query<Option<i64>>,
    ) -> Result<RowsResponse, ListRowsError> {
        state.guard.check(&auth, Access::Read)?;
        let page = Page {
            before_id: before_id.0,
            limit: limit.0,
        };
        let whole_table = page.before_id.is_none() && page.limit.is_none();
        // Taken before the query starts, and counting every change committed before this
        // request: a copy read at this generation is exactly as fresh as a query.
        let generation = match whole_table {
            true => state.listing.generation(state.db_timeout).await,
            false => None,
        };
        if let Some(body) = generation.and_then(|g| state.listing.get(g)) {
            return Ok(RowsResponse::Ok(JsonRows::cached(body)));
        }
        if page.limit.is_some_and(|limit| limit <= SMALL_PAGE_ROWS) {
            // A small page comes from the main pool, read whole before the answer starts: its
            // connection is back in the pool at once, whether or not the client reads.
            let rows: Vec<_> = bounded("listing rows", state.db_timeout, async {
                let client = state.pool.get().await?;
                rows::stream(client, page).await?.try_collect().await
            })
            .await?;
            return Ok(RowsResponse::Ok(JsonRows::new(
                futures_util::stream::iter(rows.into_iter().map(Ok)),
                state.db_timeout,
            )));
        }
        // A streamed listing holds a connection of the listing pool until its client has read
        // it all, so at most as many stream as that pool has connections; beyond, after a short
        // bounded queue, 503.
        let Some(slot) = state.listing_slots.acquire().await else {
            return Err(ListRowsError::Unavailable(
                Json(ErrorBody {
                    error: "unavailable".to_owned(),
                    message: "too many listings are streaming; try again later, or page with \
                              `limit`"
                        .to_owned(),
                    field: None,
                }),
                Some(RETRY_AFTER_SECS),
            ));
        };
        // Queued while another listing filled the cache: served from it.
        if let Some(body) = generation.and_then(|g| state.listing.get(g)) {
            return Ok(RowsResponse::Ok(JsonRows::cached(body)));
        }
        // The whole table has a statement of its own that keeps PostgreSQL on the primary key
        // whatever the table's statistics (`rows::stream_all`); a page's keeps its plan.
        let rows = bounded("listing rows", state.db_timeout, async {
            let client = state.listing_pool.get().await?;
            match whole_table {
                true => rows::stream_all(client).await.map(Either::Left),
                false => rows::stream(client, page).await.map(Either::Right),
            }
        })
        .await?;
        let capture =
            generation.and_then(|generation| Some((state.listing.try_fill()?, generation)));
        Ok(RowsResponse::Ok(JsonRows::watched(
            rows,
            state.db_timeout,
            capture,
            state.send_timeout,
            slot,
        )))
    }

    /// Publish one row to Kafka
    ///
    /// Publishes the row as `{"id": 5, "name": "smth"}` to `OBJECTS_TO_KAFKA_TOPIC` (default
    /// `some_model_objects`), keyed by the id in decimal, on the partition Kafka's Java client
    /// would choose for that key. Answers once the broker has acknowledged it.
    #[oai(
        path = "/some_models/:id/write_to_kafka/",
        method = "post",
        operation_id = "write_to_kafka"
    )]
    async fn write_to_kafka(
        &self,
        state: Data<&Arc<AppState>>,
        auth: ApiAuth,
        /// The row's id.
        id: Path<i64>,
    ) -> Result<PublishedRowResponse, PublishError> {
        state.guard.check(&auth, Access::Write)?;
        let row = bounded("reading a row", state.db_timeout, state.row_reads.get(id.0))
            .await?
            .ok_or_else(|| NotFound::new(format!("no row with id {}", id.0)))?;
        state
            .objects
            .send_keyed(row.id.to_string().into_bytes(), codec::encode_row(&row))
            .await?;
        Ok(PublishedRowResponse::Ok(Json(row)))
    }
}
