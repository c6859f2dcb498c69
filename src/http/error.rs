//! Errors of the HTTP API and the extractors that produce them.
//!
//! Every failure a handler or an extractor can meet becomes an [`ApiError`];
//! [`ApiError::status`] is the one place that maps errors to status codes.
//! The native API renders them as `{"error": ..., "kind": ...}`, the
//! Maxine-compatible API as `{"message": ...}` ([`MaxineError`]), with the
//! same status codes. 5xx answers carry a generic message; the detail is logged.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::HttpState;
use crate::core::{NameError, RegistryError};

/// Why a request failed. The text is shown to API users as is (but for 500).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value is out of range.
    #[error("{0}")]
    BadRequest(String),
    /// A service or instance that the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// No route matches the path.
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    /// The path exists, but not with this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// No valid credential: missing, malformed, unknown, expired or revoked
    /// (answered with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid credential that lacks the permission; the text names it
    /// (`token lacks service:write on "payments"`).
    #[error("{0}")]
    Forbidden(String),
    /// The request's `Host` is not one of the API's own names (DNS rebinding).
    #[error("{0}")]
    MisdirectedHost(String),
    /// Over a token's quota; the text names the limit.
    #[error("{0}")]
    TooManyRequests(String),
    /// The write contradicts what is registered (e.g. two names that map to one DNS label).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request target is longer than the server's limit.
    #[error("{0}")]
    UriTooLong(String),
    /// The request head has too many or too large headers.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The request body did not arrive within the body deadline.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Nothing can serve the request right now (no instance, not ready).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected state; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The one mapping from errors to status codes.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable name of the error class.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::NoRoute { .. } => "no_route",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::MisdirectedHost(_) => "misdirected_host",
            ApiError::TooManyRequests(_) => "quota_exceeded",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UriTooLong(_) => "uri_too_long",
            ApiError::HeadersTooLarge(_) => "headers_too_large",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// What the client is told: the error text, or a generic one for a 500.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error in the HTTP API");
                "internal server error".to_string()
            }
            other => other.to_string(),
        }
    }

    /// An error for a status that axum chose (for rejections we do not list).
    fn from_status(status: StatusCode, text: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(text),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
            s if s.is_server_error() => ApiError::Internal(text),
            // 422 and the like: to API users every unusable request is a 400.
            _ => ApiError::BadRequest(text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({ "error": self.public_message(), "kind": self.kind() });
        with_challenge(status, (status, Json(body)).into_response())
    }
}

/// A 401 says how to authenticate (RFC 6750 3).
fn with_challenge(status: StatusCode, mut res: Response) -> Response {
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"maxine\""),
        );
    }
    res
}

/// An [`ApiError`] rendered the way the Node.js Maxine answers: `{"message": ...}`.
#[derive(Debug)]
pub struct MaxineError(pub ApiError);

impl From<ApiError> for MaxineError {
    fn from(e: ApiError) -> Self {
        MaxineError(e)
    }
}

impl IntoResponse for MaxineError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let res = (status, Json(json!({ "message": self.0.public_message() }))).into_response();
        with_challenge(status, res)
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(_) | RegistryError::NameIsDatacenter(_) => {
                ApiError::BadRequest(e.to_string())
            }
            RegistryError::Conflict(_) => ApiError::Conflict(e.to_string()),
            RegistryError::Blacklisted { .. } => ApiError::Forbidden(e.to_string()),
            RegistryError::Quota { .. } => ApiError::TooManyRequests(e.to_string()),
            RegistryError::Acl(ref a) => match a {
                crate::core::AclError::Invalid(_) | crate::core::AclError::UnknownPolicy(_) => {
                    ApiError::BadRequest(e.to_string())
                }
                crate::core::AclError::NotFound(_) => ApiError::NotFound(e.to_string()),
                crate::core::AclError::AlreadyBootstrapped(_) => ApiError::Forbidden(e.to_string()),
                crate::core::AclError::Conflict(_) => ApiError::Conflict(e.to_string()),
            },
            RegistryError::NotFound { .. } | RegistryError::NoCheck { .. } => {
                ApiError::NotFound(e.to_string())
            }
            // The log cannot order the change: nothing was applied.
            RegistryError::IndexOrder { .. } | RegistryError::IndexOutOfRange(_) => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if let Some(t) = cause::<super::BodyTimeout>(&r) {
            return ApiError::RequestTimeout(t.to_string());
        }
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "the request body must be JSON, sent with Content-Type: application/json".into(),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::BadRequest(format!("malformed JSON: {}", source_text(&e)))
            }
            JsonRejection::JsonDataError(e) => {
                ApiError::BadRequest(format!("invalid request body: {}", source_text(&e)))
            }
            other => ApiError::from_status(other.status(), other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        match r {
            QueryRejection::FailedToDeserializeQueryString(e) => {
                ApiError::BadRequest(format!("invalid query string: {}", source_text(&e)))
            }
            other => ApiError::from_status(other.status(), other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        match r {
            PathRejection::FailedToDeserializePathParams(e) => {
                ApiError::BadRequest(format!("invalid path: {}", e.body_text()))
            }
            other => ApiError::from_status(other.status(), other.body_text()),
        }
    }
}

/// The first error of type `T` in the chain of causes of `e`.
fn cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

/// The innermost cause of a rejection, which is the part worth showing
/// (e.g. "unknown field `foo`, expected one of ... at line 1 column 9").
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `axum::Json`, rejecting with [`ApiError`] (and naming the body limit on 413).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<HttpState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &HttpState) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r)
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE
                    && cause::<super::BodyTimeout>(&r).is_none() =>
            {
                Err(ApiError::PayloadTooLarge(format!(
                    "the request body is larger than the limit of {} bytes",
                    state.max_body_bytes
                )))
            }
            Err(r) => Err(r.into()),
        }
    }
}

/// `axum::extract::Query`, rejecting with [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(v) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(v))
    }
}

/// `axum::extract::Path`, rejecting with [`ApiError`].
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(v) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(v))
    }
}
