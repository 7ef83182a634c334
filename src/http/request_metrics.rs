//! Request metrics: every HTTP request counted and timed, by operation, method and status. The
//! middleware ([`record_request`]) wraps the whole endpoint, so unknown paths and `/docs` count
//! too (operation `none`).

use std::sync::Arc;

use poem::{Endpoint, IntoResponse, Request, Response};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// Labels of an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The OpenAPI operation id, or `none` (unknown path, `/docs`, …).
    pub operation: String,
    pub method: String,
    pub status: u16,
}

/// The request counter and latency histogram; the families are shared with the registry.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
}

impl Default for RequestMetrics {
    /// Metrics not (yet) registered anywhere.
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
            }),
        }
    }
}

impl RequestMetrics {
    /// The request metrics, registered with `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by operation, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (until the response head), in seconds",
            metrics.duration.clone(),
        );
        metrics
    }
}

/// Middleware body: counts and times every request.
pub async fn record_request<E: Endpoint>(
    metrics: Arc<RequestMetrics>,
    next: E,
    req: Request,
) -> poem::Result<Response> {
    let method = req.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = match next.call(req).await {
        Ok(response) => response.into_response(),
        Err(error) => error.into_response(),
    };
    let operation = response
        .data::<poem_openapi::OperationId>()
        .map(|id| id.0.to_owned())
        .unwrap_or_else(|| "none".to_owned());
    let labels = RequestLabels {
        operation,
        method,
        status: response.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}
