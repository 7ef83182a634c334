//! The HTTP surface: the OpenAPI services under `/api` (rows, workers), `/health` and `/metrics`,
//! Swagger UI at `/docs`, the spec at `/openapi.json`, trailing-slash normalisation, JSON
//! errors, the request metrics and the response log.

pub mod auth;
pub mod error;
pub mod health_api;
pub mod json_rows;
pub mod listener;
pub mod listing_cache;
pub mod listing_slots;
pub mod metrics_api;
pub mod request_metrics;
pub mod response_log;
pub mod rows_api;
pub mod send_timeout;
pub mod workers_api;

use std::sync::Arc;

use deadpool_postgres::Pool;
use poem::{
    http::{header::CONTENT_LENGTH, StatusCode},
    middleware::{NormalizePath, TrailingSlash},
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route,
};
use poem_openapi::{OpenApiService, Tags};

use crate::{
    db::row_reads::RowReads,
    kafka::{producer::TopicProducer, response_log::ResponseLogQueue, Kafka},
    metrics::Metrics,
    workers::WorkerRegistry,
};

/// Largest request body accepted; larger ones get 413. Every body of this API is tiny.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
pub struct AppState {
    /// The main pool (`DB_POOL_SIZE`): workers, row reads, small pages, readiness.
    pub pool: Pool,
    /// The streamed full listings' own pool, `LISTING_MAX_CONCURRENT` connections: clients that
    /// stop reading can hold these, never the main pool's.
    pub listing_pool: Pool,
    /// One slot per full listing streaming (as many as `listing_pool` has connections); none
    /// free after a short bounded queue, a full listing answers 503 with `Retry-After`.
    pub listing_slots: listing_slots::ListingSlots,
    /// `HTTP_SEND_TIMEOUT_MS`: how long a streamed listing waits for its client to read before
    /// it is cut and its connection freed.
    pub send_timeout: std::time::Duration,
    /// Single-row reads; reads asked for together share one query.
    pub row_reads: RowReads,
    pub registry: Arc<WorkerRegistry>,
    /// For readiness checks.
    pub kafka: Kafka,
    /// Producer for `OBJECTS_TO_KAFKA_TOPIC`.
    pub objects: Arc<TopicProducer>,
    /// Everything `/metrics` exports.
    pub metrics: Arc<Metrics>,
    /// Every request counted and timed (registered with `metrics`).
    pub request_metrics: Arc<request_metrics::RequestMetrics>,
    /// Who may call what.
    pub guard: auth::Guard,
    /// The full listing while the table is unchanged.
    pub listing: Arc<listing_cache::ListingCache>,
    /// Bound on a request's PostgreSQL work; past it the request answers 503.
    pub db_timeout: std::time::Duration,
}

/// Groups of operations in the spec.
#[derive(Tags)]
pub enum ApiTags {
    /// Rows of table `some_model`, and the workers that apply Kafka topics to them.
    SomeModels,
    /// What the background workers are doing.
    Workers,
    /// Liveness, readiness and metrics, for orchestrators and monitoring.
    Health,
}

/// The API's operations (their paths carry `/api` or `/health`), without state: enough to
/// produce the spec.
pub type ApiService = OpenApiService<
    (
        rows_api::SomeModelsApi,
        workers_api::WorkerControlApi,
        workers_api::WorkersApi,
        health_api::HealthApi,
        metrics_api::MetricsApi,
    ),
    (),
>;

/// The API's services.
pub fn api_service() -> ApiService {
    OpenApiService::new(
        (
            rows_api::SomeModelsApi,
            workers_api::WorkerControlApi,
            workers_api::WorkersApi,
            health_api::HealthApi,
            metrics_api::MetricsApi,
        ),
        "rowsync",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Keeps PostgreSQL table `some_model` in step with Kafka topics. \
         Every path works with and without its trailing slash. \
         Every response under `/api` is also published to the response-log topic.",
    )
}

/// The spec as served at `/openapi.json` and committed as `openapi/openapi.json`.
pub fn openapi_json() -> String {
    api_service().spec()
}

/// The whole HTTP application.
pub fn endpoint(state: Arc<AppState>, log: Option<ResponseLogQueue>) -> impl Endpoint {
    let service = api_service();
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();
    let operations = Arc::new(
        service
            .with(NormalizePath::new(TrailingSlash::Trim))
            .around(limit_body)
            .catch_all_error(error::render),
    );
    // One shared handle: a request clones one Arc, not the queue's sender and its counters.
    let log = log.map(Arc::new);
    let logged = Arc::clone(&operations)
        .around(move |next, req| response_log::log_response(log.clone(), next, req));
    let metrics = Arc::clone(&state.request_metrics);
    Route::new()
        .nest_no_strip("/api", logged)
        .nest_no_strip("/health", Arc::clone(&operations))
        .nest_no_strip("/metrics", operations)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .catch_all_error(error::render)
        .around(move |next, req| request_metrics::record_request(Arc::clone(&metrics), next, req))
        .data(state)
}

/// Refuses a body declared larger than [`MAX_BODY_BYTES`] with 413 before reading it.
/// (poem's `SizeLimit` also refuses bodiless requests without `Content-Length`, with 411.)
async fn limit_body<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(poem::Error::from_string(
            format!("request body over {MAX_BODY_BYTES} bytes"),
            StatusCode::PAYLOAD_TOO_LARGE,
        ));
    }
    next.call(req).await.map(IntoResponse::into_response)
}
