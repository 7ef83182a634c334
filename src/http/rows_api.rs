//! The rows API, the Django service's contract: list rows, start and stop the workers that apply
//! Kafka topics to them, and publish one row to Kafka.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, Object, OpenApi,
};

use super::{
    auth::{Access, ApiAuth},
    error::{error_answers, ErrorBody, NotFound, Unavailable},
    json_rows::JsonRows,
    ApiTags, AppState,
};
use crate::{
    db::rows::{self, Page},
    error::bounded,
    kafka::codec,
    model::Row,
    workers::{WorkerKind, WorkerState},
};

/// A worker's state after a start or a stop.
#[derive(Debug, Clone, Object)]
pub struct WorkerStateBody {
    /// The worker: `upcreate` or `delete`.
    pub worker: String,
    /// Its state now.
    pub state: WorkerState,
}

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
    /// PostgreSQL is unreachable or too slow; retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}
error_answers!(ListRowsError: BadRequest, Unauthorized, Unavailable);

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

/// Answer of a worker start or stop.
#[derive(ApiResponse)]
pub enum WorkerStateResponse {
    /// The worker and its state now.
    #[oai(status = 200)]
    Ok(Json<WorkerStateBody>),
}

/// The errors a worker start or stop can answer.
#[derive(Debug, ApiResponse)]
pub enum WorkerControlError {
    /// `API_TOKEN` is set and the bearer token is missing or wrong.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The request declares a body over 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// PostgreSQL, which keeps the worker's desired state, is unreachable or too slow; retry
    /// later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}
error_answers!(WorkerControlError: Unauthorized, Unavailable);

/// Every library error these operations can meet is PostgreSQL or Kafka failing: a 503.
macro_rules! unavailable_on_library_errors {
    ($($response:ty),+) => {
        $(
            impl From<crate::error::Error> for $response {
                fn from(error: crate::error::Error) -> Self {
                    Unavailable::from(error).into()
                }
            }
        )+
    };
}
unavailable_on_library_errors!(ListRowsError, PublishError, WorkerControlError);

/// Rows of table `some_model` and the workers that keep them in step with Kafka.
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
        let rows = bounded("listing rows", state.db_timeout, async {
            let client = state.pool.get().await?;
            rows::stream(client, page).await
        })
        .await?;
        let permit = generation.and_then(|_| state.listing.try_fill());
        Ok(RowsResponse::Ok(match (generation, permit) {
            (Some(generation), Some(permit)) => {
                JsonRows::caching(rows, state.db_timeout, permit, generation)
            }
            _ => JsonRows::new(rows, state.db_timeout),
        }))
    }

    /// Start the upsert worker
    ///
    /// Starts consuming `UPDATES_TOPIC` (default `updates`). Each message `{"id": 5, "name": "smth"}`
    /// renames the row with that id, or inserts it. Consumption resumes after the last applied
    /// message. Starting a running worker changes nothing.
    #[oai(
        path = "/some_models/start_upcreate_from_kafka/",
        method = "post",
        operation_id = "start_upcreate_from_kafka"
    )]
    async fn start_upcreate(
        &self,
        state: Data<&Arc<AppState>>,
        auth: ApiAuth,
    ) -> Result<WorkerStateResponse, WorkerControlError> {
        state.guard.check(&auth, Access::Write)?;
        start(&state, WorkerKind::Upcreate).await
    }

    /// Stop the upsert worker
    ///
    /// Answers once the worker has finished its current batch and stopped. Stopping a stopped
    /// worker changes nothing.
    #[oai(
        path = "/some_models/stop_upcreate_from_kafka/",
        method = "post",
        operation_id = "stop_upcreate_from_kafka"
    )]
    async fn stop_upcreate(
        &self,
        state: Data<&Arc<AppState>>,
        auth: ApiAuth,
    ) -> Result<WorkerStateResponse, WorkerControlError> {
        state.guard.check(&auth, Access::Write)?;
        stop(&state, WorkerKind::Upcreate).await
    }

    /// Start the delete worker
    ///
    /// Starts consuming `DELETE_TOPIC` (default `deletions`). Each message `{"id": 1}` deletes
    /// the row with that id; a missing row is not an error. Starting a running worker changes nothing.
    #[oai(
        path = "/some_models/start_delete_from_kafka/",
        method = "delete",
        operation_id = "start_delete_from_kafka"
    )]
    async fn start_delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: ApiAuth,
    ) -> Result<WorkerStateResponse, WorkerControlError> {
        state.guard.check(&auth, Access::Write)?;
        start(&state, WorkerKind::Delete).await
    }

    /// Start the delete worker (POST)
    ///
    /// The same as `DELETE` on this path, for clients that cannot send `DELETE`.
    #[oai(
        path = "/some_models/start_delete_from_kafka/",
        method = "post",
        operation_id = "start_delete_from_kafka_post"
    )]
    async fn start_delete_post(
        &self,
        state: Data<&Arc<AppState>>,
        auth: ApiAuth,
    ) -> Result<WorkerStateResponse, WorkerControlError> {
        state.guard.check(&auth, Access::Write)?;
        start(&state, WorkerKind::Delete).await
    }

    /// Stop the delete worker
    ///
    /// Answers once the worker has finished its current batch and stopped. Stopping a stopped
    /// worker changes nothing.
    #[oai(
        path = "/some_models/stop_delete_from_kafka/",
        method = "post",
        operation_id = "stop_delete_from_kafka"
    )]
    async fn stop_delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: ApiAuth,
    ) -> Result<WorkerStateResponse, WorkerControlError> {
        state.guard.check(&auth, Access::Write)?;
        stop(&state, WorkerKind::Delete).await
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

async fn start(
    state: &AppState,
    kind: WorkerKind,
) -> Result<WorkerStateResponse, WorkerControlError> {
    let worker_state = state.registry.start(kind).await?;
    Ok(WorkerStateResponse::Ok(Json(WorkerStateBody {
        worker: kind.name().to_owned(),
        state: worker_state,
    })))
}

async fn stop(
    state: &AppState,
    kind: WorkerKind,
) -> Result<WorkerStateResponse, WorkerControlError> {
    let worker_state = state.registry.stop(kind).await?;
    Ok(WorkerStateResponse::Ok(Json(WorkerStateBody {
        worker: kind.name().to_owned(),
        state: worker_state,
    })))
}
