//! The workers API: what each worker is doing, per partition.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{param::Path, payload::Json, ApiResponse, OpenApi};

use super::{error::ApiError, ApiTags, AppState};
use crate::workers::{stats::WorkerStatus, WorkerKind};

/// Answer of `GET /api/workers/`.
#[derive(ApiResponse)]
pub enum WorkersResponse {
    /// Every worker's report.
    #[oai(status = 200)]
    Ok(Json<Vec<WorkerStatus>>),
}

/// Answer of `GET /api/workers/{name}/`.
#[derive(ApiResponse)]
pub enum WorkerResponse {
    /// The worker's report.
    #[oai(status = 200)]
    Ok(Json<WorkerStatus>),
}

/// Reports of the background workers.
pub struct WorkersApi;

#[OpenApi(prefix_path = "/api", tag = "ApiTags::Workers")]
impl WorkersApi {
    /// List workers
    ///
    /// Every worker's state and, per partition, its next offset, the high watermark, the lag,
    /// and how many records it applied or skipped as invalid since the service started.
    #[oai(path = "/workers/", method = "get", operation_id = "list_workers")]
    async fn list(&self, state: Data<&Arc<AppState>>) -> WorkersResponse {
        WorkersResponse::Ok(Json(
            WorkerKind::ALL
                .into_iter()
                .map(|kind| state.registry.stats(kind).status())
                .collect(),
        ))
    }

    /// Show one worker
    #[oai(path = "/workers/:name/", method = "get", operation_id = "get_worker")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        /// The worker: `upcreate` or `delete`.
        name: Path<String>,
    ) -> Result<WorkerResponse, ApiError> {
        let kind = WorkerKind::from_name(&name)
            .ok_or_else(|| ApiError::not_found(format!("no worker named {:?}", name.0)))?;
        Ok(WorkerResponse::Ok(Json(
            state.registry.stats(kind).status(),
        )))
    }
}
