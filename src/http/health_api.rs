//! Health checks for orchestrators: liveness (the process answers) and readiness (PostgreSQL and
//! the broker answer, migrations are applied). Each answers within a second even when a
//! dependency hangs.

use std::{sync::Arc, time::Duration};

use poem::web::Data;
use poem_openapi::{
    payload::{Json, PlainText},
    ApiResponse, Object, OpenApi,
};

use super::{ApiTags, AppState};
use crate::db;

/// Bound on each readiness check; the checks run concurrently.
const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// Result of a health check.
#[derive(Debug, Clone, Object)]
pub struct HealthBody {
    /// `ok` or `unavailable`.
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
}

/// Answer of a health check.
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
    async fn live(&self) -> HealthResponse {
        HealthResponse::Ok(Json(HealthBody {
            status: "ok".to_owned(),
            checks: None,
        }))
    }

    /// Readiness
    ///
    /// 200 when PostgreSQL answers, every migration is applied and the Kafka broker answers;
    /// 503 otherwise, saying which check failed. Answers within a second.
    #[oai(path = "/ready", method = "get", operation_id = "health_ready")]
    async fn ready(&self, state: Data<&Arc<AppState>>) -> HealthResponse {
        let database = async {
            let client = state.pool.get().await.map_err(|e| e.to_string())?;
            client
                .query_one("SELECT 1", &[])
                .await
                .map_err(|e| e.to_string())?;
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
        let healthy = postgres == "ok" && migrations == "ok" && kafka == "ok";
        let body = HealthBody {
            status: if healthy { "ok" } else { "unavailable" }.to_owned(),
            checks: Some(HealthChecks {
                postgres,
                migrations,
                kafka,
            }),
        };
        if healthy {
            HealthResponse::Ok(Json(body))
        } else {
            HealthResponse::Unavailable(Json(body))
        }
    }
}

/// Prometheus metrics.
pub struct MetricsApi;

#[OpenApi(tag = "ApiTags::Health")]
impl MetricsApi {
    /// Prometheus metrics
    ///
    /// Every metric in the Prometheus text format: HTTP requests by operation and status with a
    /// latency histogram; per worker and partition, records applied, invalid and dead-lettered,
    /// lag, batch size and batch latency; response-log records published and dropped; PostgreSQL
    /// pool usage. Names start with `rowsync_`.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, state: Data<&Arc<AppState>>) -> PlainText<String> {
        PlainText(state.metrics.render())
    }
}
