//! Every worker endpoint: starting and stopping the workers on the Django service's paths
//! ([`WorkerControlApi`], listed with the rows), and what each worker is doing, per partition,
//! and where it resumes ([`WorkersApi`]). The workers themselves are the registry's.

use std::{collections::BTreeMap, sync::Arc};

use poem::web::Data;
use poem_openapi::{param::Path, payload::Json, ApiResponse, Enum, Object, OpenApi, Union};

use super::{
    auth::{Access, ApiAuth},
    error::{
        error_answers, unavailable_on_library_errors, BadRequest, Conflict, ErrorBody, NotFound,
        Unavailable,
    },
    ApiTags, AppState,
};
use crate::{
    error::Error,
    workers::{stats::WorkerStatus, OffsetTarget, WorkerKind, WorkerState},
};

/// A worker's state after a start or a stop.
#[derive(Debug, Clone, Object)]
pub struct WorkerStateBody {
    /// The worker: `upcreate` or `delete`.
    pub worker: String,
    /// Its state now.
    pub state: WorkerState,
}

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
unavailable_on_library_errors!(WorkerControlError);

/// Where a reset moves a worker's next offsets.
#[derive(Debug, Clone, Union)]
#[oai(one_of)]
pub enum ResetTarget {
    /// Every partition to its earliest or latest offset.
    Position(OffsetPosition),
    /// Listed partitions (keys: partition numbers) to the given next offsets.
    Partitions(BTreeMap<String, i64>),
}

/// An end of every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum OffsetPosition {
    /// The oldest record still in the partition: everything is applied again.
    Earliest,
    /// The end of the partition: only records produced from now on are applied.
    Latest,
}

/// Body of a reset: `{"to": "earliest"}`, `{"to": "latest"}` or `{"to": {"0": 42, "2": 7}}`.
#[derive(Debug, Clone, Object)]
pub struct ResetOffsetsRequest {
    /// The new position.
    pub to: ResetTarget,
}

/// A partition's stored next offset.
#[derive(Debug, Clone, Object)]
pub struct PartitionOffset {
    /// The partition.
    pub partition: i32,
    /// The offset of the next record the worker applies there.
    pub next_offset: i64,
}

/// The offsets a reset stored.
#[derive(Debug, Clone, Object)]
pub struct ResetOffsetsBody {
    /// The worker.
    pub worker: String,
    /// Each partition changed, with its new next offset.
    pub offsets: Vec<PartitionOffset>,
}

/// Answer of a reset.
#[derive(ApiResponse)]
pub enum ResetOffsetsResponse {
    /// The new offsets are stored; the worker resumes from them when started.
    #[oai(status = 200)]
    Ok(Json<ResetOffsetsBody>),
}

/// The errors a reset can answer.
#[derive(Debug, ApiResponse)]
pub enum ResetOffsetsError {
    /// The body is not JSON of the documented shape (`field` is `body`); `to` lists a partition
    /// the topic lacks, or a negative offset (`field` is `to`); or the path is not UTF-8 once
    /// percent-decoded.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `API_TOKEN` is set and the bearer token is missing or wrong.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// No worker has this name.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The worker is running; stop it first.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request declares a body over 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not sent as `application/json` (no `Content-Type`, or another one).
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// Kafka (asked for the partitions and their offsets) or PostgreSQL (which stores the
    /// offsets) is unreachable or too slow; retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}
error_answers!(ResetOffsetsError: BadRequest, Unauthorized, NotFound, Conflict, Unavailable);

/// A running worker is a 409, a partition the topic lacks a 400 naming `to`, anything else
/// PostgreSQL or Kafka failing, a 503.
impl From<Error> for ResetOffsetsError {
    fn from(error: Error) -> Self {
        match error {
            Error::WorkerRunning(_) => Conflict::new(error.to_string()).into(),
            Error::BadRequest(message) => BadRequest::new("to", message).into(),
            error => Unavailable::from(error).into(),
        }
    }
}

/// Answer of `GET /api/workers/`.
#[derive(ApiResponse)]
pub enum WorkersResponse {
    /// Every worker's report.
    #[oai(status = 200)]
    Ok(Json<Vec<WorkerStatus>>),
}

/// The errors `GET /api/workers/` can answer.
#[derive(Debug, ApiResponse)]
pub enum ListWorkersError {
    /// `API_TOKEN_FOR_READS=true` and the bearer token is missing or wrong.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The request declares a body over 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
}
error_answers!(ListWorkersError: Unauthorized);

/// Answer of `GET /api/workers/{name}/`.
#[derive(ApiResponse)]
pub enum WorkerResponse {
    /// The worker's report.
    #[oai(status = 200)]
    Ok(Json<WorkerStatus>),
}

/// The errors `GET /api/workers/{name}/` can answer.
#[derive(Debug, ApiResponse)]
pub enum GetWorkerError {
    /// The path (the worker's name) is not UTF-8 once percent-decoded.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `API_TOKEN_FOR_READS=true` and the bearer token is missing or wrong.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// No worker has this name.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request declares a body over 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
}
error_answers!(GetWorkerError: BadRequest, Unauthorized, NotFound);

/// Starting and stopping the workers, on the Django service's paths.
pub struct WorkerControlApi;

/// Declares [`WorkerControlApi`]'s operations, one row each: the handler's name, the worker it
/// starts or stops, the method, the path and the operation id. Every handler is [`control`]; each
/// row's doc comment becomes its summary and description in the spec.
macro_rules! worker_control_operations {
    ($($(#[doc = $doc:tt])* $name:ident($kind:ident, $action:ident) $method:tt $path:tt $id:tt;)+) => {
        #[OpenApi(prefix_path = "/api", tag = "ApiTags::SomeModels")]
        impl WorkerControlApi {
            $(
                $(#[doc = $doc])*
                #[oai(path = $path, method = $method, operation_id = $id)]
                async fn $name(&self, state: Data<&Arc<AppState>>, auth: ApiAuth) -> ControlAnswer {
                    control(&state, &auth, WorkerKind::$kind, Control::$action).await
                }
            )+
        }
    };
}

worker_control_operations! {
    /// Start the upcreate worker
    ///
    /// Starts consuming `UPDATES_TOPIC` (default `updates`). Each message `{"id": 5, "name": "smth"}`
    /// renames the row with that id, or inserts it. Consumption resumes after the last applied
    /// message. Every replica starts it (within a second) and they share the topic's partitions
    /// through the worker's consumer group; the answer comes once this replica has started it.
    /// Starting a running worker changes nothing.
    start_upcreate(Upcreate, Start) "post" "/some_models/start_upcreate_from_kafka/" "start_upcreate_from_kafka";

    /// Stop the upcreate worker
    ///
    /// Answers once the worker has finished its current batch and stopped on this replica;
    /// every other replica stops it within a second. Stopping a stopped worker changes nothing.
    stop_upcreate(Upcreate, Stop) "post" "/some_models/stop_upcreate_from_kafka/" "stop_upcreate_from_kafka";

    /// Start the delete worker
    ///
    /// Starts consuming `DELETE_TOPIC` (default `deletions`). Each message `{"id": 1}` deletes
    /// the row with that id; a missing row is not an error. Every replica starts it, sharing the
    /// partitions as the upcreate worker does. Starting a running worker changes nothing.
    start_delete(Delete, Start) "delete" "/some_models/start_delete_from_kafka/" "start_delete_from_kafka";

    /// Start the delete worker (POST)
    ///
    /// The same as `DELETE` on this path, for clients that cannot send `DELETE`.
    start_delete_post(Delete, Start) "post" "/some_models/start_delete_from_kafka/" "start_delete_from_kafka_post";

    /// Stop the delete worker
    ///
    /// Answers once the worker has finished its current batch and stopped on this replica;
    /// every other replica stops it within a second. Stopping a stopped worker changes nothing.
    stop_delete(Delete, Stop) "post" "/some_models/stop_delete_from_kafka/" "stop_delete_from_kafka";
}

/// What every start and stop answers.
type ControlAnswer = Result<WorkerStateResponse, WorkerControlError>;

/// A start or a stop.
#[derive(Debug, Clone, Copy)]
enum Control {
    Start,
    Stop,
}

/// The body of every start and stop handler: checks the token, then starts or stops `kind`.
async fn control(
    state: &AppState,
    auth: &ApiAuth,
    kind: WorkerKind,
    action: Control,
) -> ControlAnswer {
    state.guard.check(auth, Access::Write)?;
    let worker_state = match action {
        Control::Start => state.registry.start(kind).await?,
        Control::Stop => state.registry.stop(kind).await?,
    };
    Ok(WorkerStateResponse::Ok(Json(WorkerStateBody {
        worker: kind.name().to_owned(),
        state: worker_state,
    })))
}

/// Reports of the background workers.
pub struct WorkersApi;

#[OpenApi(prefix_path = "/api", tag = "ApiTags::Workers")]
impl WorkersApi {
    /// List workers
    ///
    /// Every worker's state on this replica, its consumer group (this replica's member id,
    /// generation and partitions) and, per partition of its topic, the replica that owns it,
    /// its next offset, the high watermark, the lag, and how many records this replica applied
    /// or skipped as invalid since it started.
    #[oai(path = "/workers/", method = "get", operation_id = "list_workers")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: ApiAuth,
    ) -> Result<WorkersResponse, ListWorkersError> {
        state.guard.check(&auth, Access::Read)?;
        Ok(WorkersResponse::Ok(Json(
            WorkerKind::ALL
                .into_iter()
                .map(|kind| state.registry.stats(kind).status())
                .collect(),
        )))
    }

    /// Show one worker
    #[oai(path = "/workers/:name/", method = "get", operation_id = "get_worker")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        auth: ApiAuth,
        /// The worker: `upcreate` or `delete`.
        name: Path<String>,
    ) -> Result<WorkerResponse, GetWorkerError> {
        state.guard.check(&auth, Access::Read)?;
        let kind = WorkerKind::from_name(&name)
            .ok_or_else(|| NotFound::new(format!("no worker named {:?}", name.0)))?;
        Ok(WorkerResponse::Ok(Json(
            state.registry.stats(kind).status(),
        )))
    }

    /// Reset a worker's offsets
    ///
    /// Moves where a **stopped** worker resumes: every partition to the `earliest` or `latest`
    /// offset, or listed partitions to given offsets (`{"to": {"0": 42}}`). Answers 409 while the
    /// worker runs. Like Kafka Connect's offsets API.
    #[oai(
        path = "/workers/:name/reset_offsets",
        method = "post",
        operation_id = "reset_worker_offsets"
    )]
    async fn reset_offsets(
        &self,
        state: Data<&Arc<AppState>>,
        auth: ApiAuth,
        /// The worker: `upcreate` or `delete`.
        name: Path<String>,
        body: Json<ResetOffsetsRequest>,
    ) -> Result<ResetOffsetsResponse, ResetOffsetsError> {
        state.guard.check(&auth, Access::Write)?;
        let kind = WorkerKind::from_name(&name)
            .ok_or_else(|| NotFound::new(format!("no worker named {:?}", name.0)))?;
        let target = match body.0.to {
            ResetTarget::Position(OffsetPosition::Earliest) => OffsetTarget::Earliest,
            ResetTarget::Position(OffsetPosition::Latest) => OffsetTarget::Latest,
            ResetTarget::Partitions(map) => OffsetTarget::Partitions(
                map.iter()
                    .map(|(partition, offset)| match partition.parse::<i32>() {
                        Ok(p) if p >= 0 && *offset >= 0 => Ok((p, *offset)),
                        _ => Err(BadRequest::new(
                            "to",
                            format!(
                                "partition {partition:?} and offset {offset} must both be \
                                 non-negative integers"
                            ),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let offsets = state.registry.reset_offsets(kind, target).await?;
        Ok(ResetOffsetsResponse::Ok(Json(ResetOffsetsBody {
            worker: kind.name().to_owned(),
            offsets: offsets
                .into_iter()
                .map(|(partition, next_offset)| PartitionOffset {
                    partition,
                    next_offset,
                })
                .collect(),
        })))
    }
}
