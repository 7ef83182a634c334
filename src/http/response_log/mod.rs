//! The response-log middleware: every response under `/api` becomes a record (`record`) that is
//! queued for Kafka (`kafka::response_log`) without the request waiting; a streamed body is
//! copied on its way to the client by a tee (`tee`).

mod record;
mod tee;

use std::sync::Arc;

use http_body::Body as _;
use poem::{Body, Endpoint, IntoResponse, Request, Response};

pub use self::record::MAX_DATA_BYTES;
use self::{
    record::{Captured, PendingRecord},
    tee::{BoxBody, Tee},
};
use crate::kafka::response_log::ResponseLogQueue;

/// Middleware body: runs the request, then queues its record and hands the response back.
///
/// A small body already in memory is read whole. Any other body (a streamed listing) goes to the
/// client as it comes while at most [`MAX_DATA_BYTES`] of it are copied for the record, which is
/// queued when the body ends; a larger one is logged with `data: null, truncated: true`.
pub async fn log_response<E: Endpoint>(
    log: Option<Arc<ResponseLogQueue>>,
    next: E,
    req: Request,
) -> poem::Result<Response> {
    let Some(log) = log else {
        // REST_LOG_ENABLED=false.
        return next.call(req).await.map(IntoResponse::into_response);
    };
    let url = req.original_uri().path().to_owned();
    let method = req.method().clone();
    let response = match next.call(req).await {
        Ok(response) => response.into_response(),
        Err(error) => error.into_response(),
    };
    let (parts, body) = response.into_parts();
    let is_json = parts
        .headers
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let pending = PendingRecord {
        log,
        url,
        method,
        status: parts.status.as_u16(),
        is_json,
    };
    let body = BoxBody::from(body);
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|size| size <= MAX_DATA_BYTES as u64);
    if small {
        let bytes = Body::from(body).into_bytes().await.unwrap_or_default();
        pending.queue(Captured::Whole(&bytes));
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    }
    let tee = Tee::new(body, pending);
    Ok(Response::from_parts(parts, Body::from(BoxBody::new(tee))))
}
