//! The API's one error shape, `{"error": …, "message": …, "field": …}`, and the mapping of
//! library and framework errors onto it. 4xx are the client's fault and are not logged as errors;
//! 5xx are logged with their cause and answered with an opaque message.

use poem::{http::StatusCode, IntoResponse, Response};
use poem_openapi::{payload::Json, ApiResponse, Object};

/// An error answer.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthorized`, `not_found`, `method_not_allowed`,
    /// `conflict`, `payload_too_large`, `unsupported_media_type`, `unavailable` or `internal`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// The parameter or field at fault, when there is one.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// 400: the request is malformed; `field` names the culprit.
#[derive(Debug)]
pub struct BadRequest(pub ErrorBody);

/// 401: a bearer token is required and was missing or wrong.
#[derive(Debug)]
pub struct Unauthorized(pub ErrorBody);

/// 404: the thing asked for does not exist.
#[derive(Debug)]
pub struct NotFound(pub ErrorBody);

/// 409: the request conflicts with the current state (the worker is running).
#[derive(Debug)]
pub struct Conflict(pub ErrorBody);

/// 503: PostgreSQL or Kafka is unreachable or too slow.
#[derive(Debug)]
pub struct Unavailable(pub ErrorBody);

impl BadRequest {
    /// 400 naming the field at fault.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self(body("bad_request", message.into(), Some(field.to_owned())))
    }
}

impl Unauthorized {
    /// 401 with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(body("unauthorized", message.into(), None))
    }
}

impl NotFound {
    /// 404 with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(body("not_found", message.into(), None))
    }
}

impl Conflict {
    /// 409 with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(body("conflict", message.into(), None))
    }
}

/// A library error met while answering: PostgreSQL or Kafka failing. Logged with its cause and
/// answered with an opaque message. (Operations that can meet [`Error::WorkerRunning`] or
/// [`Error::BadRequest`] map those themselves, before this.)
///
/// [`Error::WorkerRunning`]: crate::error::Error::WorkerRunning
/// [`Error::BadRequest`]: crate::error::Error::BadRequest
impl From<crate::error::Error> for Unavailable {
    fn from(error: crate::error::Error) -> Self {
        tracing::error!(error = %error, "request failed on a dependency");
        Self(body(
            "unavailable",
            "a dependency is unavailable; try again later".into(),
            None,
        ))
    }
}

/// Implements `From<X>` for an operation's error response, for each of the answers `X` it lists
/// (`BadRequest`, `Unauthorized`, `NotFound`, `Conflict`, `Unavailable`): the variant of the same
/// name. Each operation has its own response type listing exactly the statuses it can answer,
/// so its spec is true; an answer it does not list does not compile.
macro_rules! error_answers {
    ($response:ty: $($answer:ident),+ $(,)?) => {
        $(
            impl From<$crate::http::error::$answer> for $response {
                fn from(answer: $crate::http::error::$answer) -> Self {
                    Self::$answer(::poem_openapi::payload::Json(answer.0))
                }
            }
        )+
    };
}
pub(crate) use error_answers;

/// Implements `From<library Error>` for the error responses of operations whose every library
/// error is PostgreSQL or Kafka failing: a 503 ([`Unavailable`]).
macro_rules! unavailable_on_library_errors {
    ($($response:ty),+ $(,)?) => {
        $(
            impl From<$crate::error::Error> for $response {
                fn from(error: $crate::error::Error) -> Self {
                    $crate::http::error::Unavailable::from(error).into()
                }
            }
        )+
    };
}
pub(crate) use unavailable_on_library_errors;

/// The answer of an operation that can fail only before its handler runs: a body over 64 KiB
/// (refused for every operation, whether it takes a body or not).
#[derive(Debug, ApiResponse)]
pub enum BodyTooLarge {
    /// The request declares a body over 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
}

/// The body of a 400 for a request poem-openapi could not parse, naming the parameter at fault.
fn parse_failure(error: &poem::Error) -> ErrorBody {
    use poem_openapi::error::{ParseParamError, ParsePathError, ParseRequestPayloadError};
    if error.is::<poem::error::ParsePathError>() {
        // poem's router: a path that is not UTF-8 once percent-decoded, under a nested prefix.
        return body(
            "bad_request",
            "the path is not UTF-8 once percent-decoded".to_owned(),
            None,
        );
    }
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

/// poem-openapi names path parameters by position (`param0`); the only path parameter that can
/// fail to parse is a row's `id`. (A worker's `name` is a string: it fails only when it is not
/// UTF-8 once percent-decoded, and poem's router refuses such a path first, under `/api`.)
fn param_name(raw: &str) -> &str {
    if raw.starts_with("param") {
        "id"
    } else {
        raw
    }
}

/// The body of a 415: an operation taking a JSON body got none, or another media type.
fn unsupported_media_type(error: &poem::Error) -> ErrorBody {
    use poem_openapi::error::ContentTypeError;
    let message = match error.downcast_ref::<ContentTypeError>() {
        Some(ContentTypeError::NotSupported { content_type }) => {
            format!(
                "Content-Type {content_type:?} is not supported: send the body as application/json"
            )
        }
        _ => "the request has no Content-Type: send the body as application/json".to_owned(),
    };
    body("unsupported_media_type", message, None)
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
        // A typed handler's own answer, already in the error shape.
        return error.into_response();
    }
    let status = error.status();
    let body = match status {
        StatusCode::BAD_REQUEST => parse_failure(&error),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => unsupported_media_type(&error),
        _ => {
            let code = match status {
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
            body(code, message, None)
        }
    };
    poem::web::Json(body).with_status(status).into_response()
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
