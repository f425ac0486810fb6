//! `ApiError`: every failure a request can meet, with its HTTP status and JSON body, so handlers
//! just use `?`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use docfed_shared::wire::{ErrorBody, ErrorCode};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid `{field}`: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// A device's flags were asked for without that device's secret (or the node's token).
    /// Unknown and revoked devices get the same answer, so it does not tell which ids exist.
    #[error("this needs the device's secret (`Authorization: Bearer <secret>`, as returned by `POST /v1/devices`) or the node's token; the secret is missing or wrong, or the device is not registered here")]
    DeviceUnauthorized,
    #[error("registering a device needs the node's token (`Authorization: Bearer <token>`): this node does not have open enrollment")]
    EnrollmentClosed,
    /// A limit of the node's configuration was reached; `limit` names the setting.
    #[error("{message} (limit `{limit}` = {value})")]
    LimitReached {
        code: ErrorCode,
        limit: &'static str,
        value: String,
        message: String,
    },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    WrongTier(String),
    /// A request only servers may make, from a client that is not one.
    #[error("{0}")]
    Forbidden(String),
    #[error("content not here yet; retry shortly")]
    NotYet,
    /// A cap on concurrent work (`limit` names the setting) is reached; retry later.
    #[error("this node serves the most {what} it allows at once (limit `{limit}`); retry later")]
    Busy {
        what: &'static str,
        limit: &'static str,
    },
    #[error("document {id} is deleted; its content is served to its author only (with the token)")]
    Gone { id: String },
    #[error("content {md5} belongs only to deleted documents")]
    Withdrawn { md5: String },
    #[error("upload larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("range not satisfiable for a {size}-byte document")]
    RangeNotSatisfiable { size: u64 },
    #[error("not enough storage on this node")]
    InsufficientStorage,
    #[error("upload abandoned: {0}")]
    UploadAborted(String),
    #[error("database unavailable")]
    DbUnavailable(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field,
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::NotFound { what: what.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidField { .. }
            | ApiError::BadRequest(_)
            | ApiError::UploadAborted(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::DeviceUnauthorized | ApiError::EnrollmentClosed => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::LimitReached { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::WrongTier(_) | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotYet | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Gone { .. } | ApiError::Withdrawn { .. } => StatusCode::GONE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::DbUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidField { .. } => ErrorCode::InvalidField,
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::Unauthorized | ApiError::DeviceUnauthorized | ApiError::EnrollmentClosed => {
                ErrorCode::Unauthorized
            }
            ApiError::LimitReached { code, .. } => *code,
            ApiError::NotFound { .. } => ErrorCode::NotFound,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::WrongTier(_) => ErrorCode::WrongTier,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotYet => ErrorCode::NotYet,
            ApiError::Busy { .. } => ErrorCode::Busy,
            ApiError::Gone { .. } | ApiError::Withdrawn { .. } => ErrorCode::Deleted,
            ApiError::TooLarge { .. } => ErrorCode::TooLarge,
            ApiError::RangeNotSatisfiable { .. } => ErrorCode::RangeNotSatisfiable,
            ApiError::InsufficientStorage => ErrorCode::InsufficientStorage,
            ApiError::UploadAborted(_) => ErrorCode::UploadAborted,
            ApiError::DbUnavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_disk_full(&e) {
            return ApiError::InsufficientStorage;
        }
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                ApiError::DbUnavailable(e)
            }
            e => ApiError::Internal(e.into()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge { limit } => ApiError::TooLarge { limit },
            StoreError::DiskFull { .. } | StoreError::NoSpace(_) => ApiError::InsufficientStorage,
            StoreError::BodyAborted(_) | StoreError::IdleTimeout(_) => {
                ApiError::UploadAborted(e.to_string())
            }
            StoreError::Io(e) => ApiError::Internal(e.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(_) | ApiError::DbUnavailable(_) => {
                tracing::error!(error = ?self, "request failed")
            }
            // Expected answers (content still arriving, capacity reached): the client retries.
            ApiError::NotYet => tracing::debug!(error = %self, "request deferred"),
            _ if status.is_server_error() => tracing::warn!(error = %self, "request failed"),
            _ => tracing::debug!(error = %self, "request refused"),
        }
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
        };
        let mut resp = (status, Json(body)).into_response();
        match self {
            ApiError::Unauthorized | ApiError::DeviceUnauthorized | ApiError::EnrollmentClosed => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"docfed\""),
                );
            }
            ApiError::NotYet => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // The writer is busy (a first load holds it) or the database is unreachable.
            ApiError::DbUnavailable(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        resp
    }
}
