//! `GET /metrics`: every metric rowsync exports, in the Prometheus text format. What is exported
//! is registered by each part at assembly (see `metrics`).

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::{payload::PlainText, ApiResponse, OpenApi};

use super::{error::BodyTooLarge, ApiTags, AppState};

/// Answer of `GET /metrics`.
#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// Every metric, in the Prometheus text format.
    #[oai(status = 200)]
    Ok(PlainText<String>),
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
    async fn metrics(&self, state: Data<&Arc<AppState>>) -> Result<MetricsResponse, BodyTooLarge> {
        Ok(MetricsResponse::Ok(PlainText(state.metrics.render())))
    }
}
