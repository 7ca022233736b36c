//! The one error type of this crate, and how it becomes an HTTP response.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coapgate_store::StoreError;
use serde_json::{Map, Value};

/// Why an admin request was refused or failed.
///
/// Every variant becomes a response whose body is the JSON object
/// `{"error": "<what is wrong>", "field": "<name>"}` (`field` left out when
/// no single field is to blame; an invalid template adds `"path"`, its place
/// in the template). No variant ever holds a PSK or the admin token: errors
/// name the rule a value broke, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// 400 Bad Request: the request is malformed or a field is invalid.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The offending field (of the body, the path or the query), if one is.
        field: Option<String>,
    },
    /// 400 Bad Request: a template is not valid.
    #[error("invalid template: {0}")]
    InvalidTemplate(coapgate_translate::TemplateError),
    /// 401 Unauthorized: the bearer token is missing or wrong. Sent with
    /// `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 404 Not Found: no such device, PSK, template or route.
    #[error("{0}")]
    NotFound(String),
    /// 405 Method Not Allowed.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409 Conflict: another device already holds the IP address.
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// The offending field.
        field: Option<String>,
    },
    /// 413 Payload Too Large: the body exceeds [`crate::MAX_BODY_BYTES`].
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 415 Unsupported Media Type: a body that is not `application/json`.
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// 422 Unprocessable Content: the template tester could not translate
    /// the payload; the message is the text of the device's error event.
    #[error("{0}")]
    Untranslatable(String),
    /// 503 Service Unavailable: `/healthz` before the server is ready.
    #[error("not ready")]
    NotReady,
    /// 503 Service Unavailable (with `Retry-After`): the store is busy or
    /// unreachable; nothing changed, and the same request may succeed later.
    #[error("the store is unavailable; try again later")]
    StoreUnavailable,
    /// 500 Internal Server Error: the store failed. The cause is logged, not
    /// sent.
    #[error("internal error; see the server log")]
    Internal,
}

impl AdminError {
    /// A 400 naming a field.
    pub(crate) fn field(field: &str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    /// A 400 naming no field.
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            field: None,
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::InvalidTemplate(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Untranslatable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotReady | Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The offending field, if one is to blame.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            Self::BadRequest { field, .. } | Self::Conflict { field, .. } => field.as_deref(),
            Self::InvalidTemplate(_) => Some("template"),
            Self::Untranslatable(_) => Some("payload"),
            _ => None,
        }
    }

    /// The JSON body: `{"error", "field"?, "path"?}`.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.to_string()));
        if let Some(field) = self.field_name() {
            body.insert("field".into(), Value::String(field.to_owned()));
        }
        if let Self::InvalidTemplate(e) = self {
            body.insert("path".into(), Value::String(e.path().to_owned()));
        }
        Value::Object(body)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, Self::StoreUnavailable) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if matches!(self, Self::Unauthorized(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"coapgate\""),
            );
        }
        response
    }
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::IpInUse { .. } => Self::Conflict {
                message: error.to_string(),
                field: Some("ip".into()),
            },
            StoreError::UnknownDevice { .. } => Self::NotFound(error.to_string()),
            // The text names the rule the PSK broke, never the PSK.
            StoreError::InvalidPsk(e) => Self::field("secretKey", e.to_string()),
            StoreError::InvalidTemplate(e) => Self::InvalidTemplate(e),
            StoreError::InvalidStatus => Self::field("status", error.to_string()),
            StoreError::InvalidPage { .. } => Self::field("page", error.to_string()),
            other if other.is_transient() => {
                tracing::warn!(error = %other, "admin API: store unavailable");
                Self::StoreUnavailable
            }
            other => {
                // Store errors never carry a secret (see StoreError).
                tracing::error!(error = %other, "admin API: store failure");
                Self::Internal
            }
        }
    }
}

#[cfg(test)]
mod store_error_tests {
    use super::*;

    #[test]
    fn a_busy_store_is_503_with_retry_after_and_another_failure_500() {
        let busy = StoreError::Busy {
            context: "write a device",
            source: "database is locked".into(),
        };
        let error = AdminError::from(busy);
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = error.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let broken = StoreError::Database {
            context: "write a device",
            source: "disk I/O error".into(),
        };
        assert_eq!(
            AdminError::from(broken).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
