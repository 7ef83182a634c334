//! The workers API: what each worker is doing, per partition.

use std::sync::Arc;

use poem::web::Data;
use std::collections::BTreeMap;

use poem_openapi::{param::Path, payload::Json, ApiResponse, Enum, Object, OpenApi, Union};
use rskafka::client::partition::OffsetAt;

use super::{
    auth::{Access, ApiAuth},
    error::{error_answers, BadRequest, Conflict, ErrorBody, NotFound, Unavailable},
    ApiTags, AppState,
};
use crate::{
    error::Error,
    workers::{stats::WorkerStatus, WorkerKind},
};

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

/// Reports of the background workers.
pub struct WorkersApi;

#[OpenApi(prefix_path = "/api", tag = "ApiTags::Workers")]
impl WorkersApi {
    /// List workers
    ///
    /// Every worker's state and, per partition, its next offset, the high watermark, the lag,
    /// and how many records it applied or skipped as invalid since the service started.
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
            ResetTarget::Position(OffsetPosition::Earliest) => Target::All(OffsetAt::Earliest),
            ResetTarget::Position(OffsetPosition::Latest) => Target::All(OffsetAt::Latest),
            ResetTarget::Partitions(map) => Target::Listed(
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
        let kafka = state.kafka.clone();
        let offsets = state
            .registry
            .reset_offsets(kind, |topic| async move {
                let partitions = kafka.partitions(&topic).await?;
                match target {
                    Target::All(at) => {
                        let mut offsets = Vec::with_capacity(partitions.len());
                        for partition in partitions {
                            offsets.push((partition, kafka.offset(&topic, partition, at).await?));
                        }
                        Ok(offsets)
                    }
                    Target::Listed(listed) => {
                        if let Some((missing, _)) =
                            listed.iter().find(|(p, _)| !partitions.contains(p))
                        {
                            return Err(Error::BadRequest(format!(
                                "topic {topic} has no partition {missing}"
                            )));
                        }
                        Ok(listed)
                    }
                }
            })
            .await?;
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

/// A reset, decoded: every partition to one end, or listed partitions to given offsets.
enum Target {
    All(OffsetAt),
    Listed(Vec<(i32, i64)>),
}
