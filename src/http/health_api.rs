//! Health checks for orchestrators: liveness (the process answers) and readiness (PostgreSQL and
//! the broker answer, migrations are applied). Each answers within a second even when a
//! dependency hangs.

use std::{sync::Arc, time::Duration};

use poem::web::Data;
use poem_openapi::{payload::Json, ApiResponse, Object, OpenApi};

use super::{error::BodyTooLarge, ApiTags, AppState};
use crate::{
    db,
    workers::{WorkerKind, WorkerRegistry, WorkerState},
};

/// Bound on each readiness check; the checks run concurrently.
const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// Result of a health check.
#[derive(Debug, Clone, Object)]
pub struct HealthBody {
    /// `ok`; `degraded` when ready but a partition is stalled (see `checks.workers`); or
    /// `unavailable`.
    pub status: String,
    /// Each dependency checked: `ok`, or why not.
    #[oai(skip_serializing_if_is_none)]
    pub checks: Option<HealthChecks>,
}

/// Per-dependency outcome of a readiness check.
#[derive(Debug, Clone, Object)]
pub struct HealthChecks {
    /// PostgreSQL answers a query.
    pub postgres: String,
    /// Every migration is applied.
    pub migrations: String,
    /// The Kafka broker answers a metadata request.
    pub kafka: String,
    /// `ok`, or each partition stalled on a record batch it cannot decode: worker, partition,
    /// offset and why. A stalled partition makes the status `degraded` but never fails
    /// readiness: the API that moves past it must stay reachable.
    pub workers: String,
}

/// Answer of the liveness check.
#[derive(ApiResponse)]
pub enum LiveResponse {
    /// The process is up and serving HTTP.
    #[oai(status = 200)]
    Ok(Json<HealthBody>),
}

/// Answer of the readiness check.
#[derive(ApiResponse)]
pub enum HealthResponse {
    /// Healthy.
    #[oai(status = 200)]
    Ok(Json<HealthBody>),
    /// Not ready: a dependency is unreachable or migrations are missing.
    #[oai(status = 503)]
    Unavailable(Json<HealthBody>),
}

/// Liveness and readiness.
pub struct HealthApi;

#[OpenApi(prefix_path = "/health", tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// 200 while the process is up and serving HTTP.
    #[oai(path = "/live", method = "get", operation_id = "health_live")]
    async fn live(&self) -> Result<LiveResponse, BodyTooLarge> {
        Ok(LiveResponse::Ok(Json(HealthBody {
            status: "ok".to_owned(),
            checks: None,
        })))
    }

    /// Readiness
    ///
    /// 200 when PostgreSQL answers, every migration is applied and the Kafka broker answers;
    /// 503 otherwise, saying which check failed. Answers within a second. A partition stalled
    /// on a batch it cannot decode is named under `checks.workers` (status `degraded`, still 200).
    #[oai(path = "/ready", method = "get", operation_id = "health_ready")]
    async fn ready(&self, state: Data<&Arc<AppState>>) -> Result<HealthResponse, BodyTooLarge> {
        let database = async {
            let client = state
                .pool
                .get()
                .await
                .map_err(|e| db::errors::describe_pool_error(&e))?;
            client
                .query_one("SELECT 1", &[])
                .await
                .map_err(|e| db::errors::describe(&e))?;
            db::migrations_applied(&client)
                .await
                .map_err(|e| e.to_string())
        };
        let kafka = state.kafka.ping();
        let (database, kafka) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, database),
            tokio::time::timeout(CHECK_TIMEOUT, kafka)
        );
        let (postgres, migrations) = match database {
            Ok(Ok(true)) => ("ok".to_owned(), "ok".to_owned()),
            Ok(Ok(false)) => ("ok".to_owned(), "pending".to_owned()),
            Ok(Err(e)) => (e, "unknown".to_owned()),
            Err(_) => ("timed out".to_owned(), "unknown".to_owned()),
        };
        let kafka = match kafka {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        let stalled = stalled_partitions(&state.registry);
        let healthy = postgres == "ok" && migrations == "ok" && kafka == "ok";
        let status = match (healthy, stalled.is_empty()) {
            (false, _) => "unavailable",
            (true, true) => "ok",
            (true, false) => "degraded",
        };
        let body = HealthBody {
            status: status.to_owned(),
            checks: Some(HealthChecks {
                postgres,
                migrations,
                kafka,
                workers: if stalled.is_empty() {
                    "ok".to_owned()
                } else {
                    stalled.join("; ")
                },
            }),
        };
        Ok(if healthy {
            HealthResponse::Ok(Json(body))
        } else {
            HealthResponse::Unavailable(Json(body))
        })
    }
}

/// Each partition of a running worker stalled on a batch it cannot decode, described.
fn stalled_partitions(registry: &WorkerRegistry) -> Vec<String> {
    WorkerKind::ALL
        .into_iter()
        .map(|kind| registry.stats(kind).status())
        .filter(|status| status.state == WorkerState::Stalled)
        .flat_map(|status| {
            status.partitions.into_iter().filter_map(move |p| {
                let offset = p.stalled_at_offset?;
                let reason = p.last_error.unwrap_or_default();
                Some(format!(
                    "{} partition {} stalled at offset {offset}: {reason}",
                    status.name, p.partition
                ))
            })
        })
        .collect()
}
