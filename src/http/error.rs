//! The API's one error shape, `{"error": …, "message": …, "field": …}`, and the mapping of
//! library and framework errors onto it. 4xx are the client's fault and are not logged as errors;
//! 5xx are logged with their cause and answered with an opaque message.

use poem::{http::StatusCode, IntoResponse, Response};
use poem_openapi::{payload::Json, ApiResponse, Object};

/// An error answer.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthorized`, `not_found`, `method_not_allowed`,
    /// `conflict`, `payload_too_large`, `unavailable` or `internal`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// The parameter or field at fault, when there is one.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Every error an operation can answer with.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed; `field` names the culprit.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// A bearer token is required (`API_TOKEN` is set) and was missing or wrong.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The thing asked for does not exist.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the current state (for example, the worker is running).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// A dependency (PostgreSQL or Kafka) is unreachable or too slow; retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

impl ApiError {
    /// 400 naming the field at fault.
    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        Self::BadRequest(Json(body(
            "bad_request",
            message.into(),
            Some(field.to_owned()),
        )))
    }

    /// 401 with a message.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized(Json(body("unauthorized", message.into(), None)))
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(Json(body("not_found", message.into(), None)))
    }
}

/// Library errors: a running worker is a 409; everything else is PostgreSQL or Kafka failing, a 503.
impl From<crate::error::Error> for ApiError {
    fn from(error: crate::error::Error) -> Self {
        match error {
            crate::error::Error::WorkerRunning(_) => {
                return Self::Conflict(Json(body("conflict", error.to_string(), None)));
            }
            crate::error::Error::BadRequest(message) => return Self::bad_request("to", message),
            _ => {}
        }
        tracing::error!(error = %error, "request failed on a dependency");
        Self::Unavailable(Json(body(
            "unavailable",
            "a dependency is unavailable; try again later".into(),
            None,
        )))
    }
}

/// The body of a 400 for a request poem-openapi could not parse, naming the parameter at fault.
fn parse_failure(error: &poem::Error) -> ErrorBody {
    use poem_openapi::error::{ParseParamError, ParsePathError, ParseRequestPayloadError};
    let field = error
        .downcast_ref::<ParsePathError>()
        .map(|e| param_name(e.name))
        .or_else(|| error.downcast_ref::<ParseParamError>().map(|e| e.name))
        .or_else(|| error.is::<ParseRequestPayloadError>().then_some("body"))
        .map(str::to_owned);
    let message = match &field {
        Some(name) if name == "id" => "id must be an integer between -2^63 and 2^63-1".to_owned(),
        _ => error.to_string(),
    };
    body("bad_request", message, field)
}

/// poem-openapi names path parameters by position (`param0`); the only typed path parameter
/// in this API is a row's `id`.
fn param_name(raw: &str) -> &str {
    if raw.starts_with("param") {
        "id"
    } else {
        raw
    }
}

fn body(error: &str, message: String, field: Option<String>) -> ErrorBody {
    ErrorBody {
        error: error.to_owned(),
        message,
        field,
    }
}

/// Renders any error that escaped the typed handlers (unknown path, wrong method, body too large)
/// in the one error shape, keeping its status.
pub async fn render(error: poem::Error) -> Response {
    if error.is_from_response() {
        // A typed handler's own answer (an `ApiError`), already in the error shape.
        return error.into_response();
    }
    let status = error.status();
    if status == StatusCode::BAD_REQUEST {
        return poem::web::Json(parse_failure(&error))
            .with_status(status)
            .into_response();
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let message = if status.is_server_error() {
        tracing::error!(error = %error, status = status.as_u16(), "request failed");
        "internal error".to_owned()
    } else {
        match status {
            StatusCode::NOT_FOUND => "no such path".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this path".to_owned(),
            _ => error.to_string(),
        }
    };
    poem::web::Json(body(code, message, None))
        .with_status(status)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_path_parameters_are_reported_as_id() {
        assert_eq!(param_name("param0"), "id");
        assert_eq!(param_name("limit"), "limit");
    }
}
