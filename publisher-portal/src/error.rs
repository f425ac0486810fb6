//! `PortalError`: what a page request can fail with, and the status and message the author sees.
//!
//! Handlers return `Result<_, PortalError>` and use `?`. The error turns into a response that
//! carries an [`ErrorInfo`] extension; the session middleware (`web/session.rs`) renders it as a full
//! page (navigation, primary-down banner) since it knows who is logged in. No page ever shows a
//! stack trace or an internal error text: those go to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use docfed_shared::wire::ErrorCode;

use crate::db::DbError;
use crate::primaries::NodeError;

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("not found")]
    NotFound,
    /// Refused on purpose (bad CSRF token, cross-site request, expired session).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A rendered error: status, page title and the message for the author.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
}

impl PortalError {
    pub fn csrf() -> Self {
        PortalError::Forbidden(
            "This form has expired or did not come from the portal (missing or wrong security \
             token). Nothing was changed: reload the page and try again."
                .into(),
        )
    }

    pub fn info(&self) -> ErrorInfo {
        let (status, title, message) = match self {
            PortalError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page, or the document is not one of yours.".to_owned(),
            ),
            PortalError::Forbidden(m) => (StatusCode::FORBIDDEN, "Refused", m.clone()),
            PortalError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.clone()),
            PortalError::Db(e) => {
                tracing::error!(error = %e, "portal database");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Portal database unavailable",
                    "The portal cannot read its database right now; please retry in a moment."
                        .to_owned(),
                )
            }
            PortalError::Node(e) => return node_info(e),
        };
        ErrorInfo {
            status,
            title: title.to_owned(),
            message,
        }
    }
}

/// How a primary's refusal reads for an author.
pub fn node_info(e: &NodeError) -> ErrorInfo {
    let info = |status, title: &str, message: String| ErrorInfo {
        status,
        title: title.to_owned(),
        message,
    };
    match e {
        NodeError::Unavailable(_) => info(
            StatusCode::SERVICE_UNAVAILABLE,
            "No primary available",
            "No primary answers right now, so this cannot be done. Nothing was changed; please \
             retry in a moment."
                .into(),
        ),
        NodeError::BadAnswer { primary, error } => {
            tracing::error!(primary, error, "unreadable answer from a primary");
            info(
                StatusCode::BAD_GATEWAY,
                "Primary error",
                format!("Primary {primary} gave an answer the portal cannot read."),
            )
        }
        NodeError::Refused {
            primary,
            status,
            error,
            code,
        } => match code {
            ErrorCode::NotFound => info(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("Primary {primary} does not know this document (yet): {error}."),
            ),
            ErrorCode::Unauthorized | ErrorCode::WrongTier => {
                tracing::error!(
                    primary,
                    error,
                    ?code,
                    "a primary refused the portal's token or role"
                );
                info(
                    StatusCode::BAD_GATEWAY,
                    "Portal misconfigured",
                    format!(
                        "Primary {primary} refused the portal ({error}). The operator must check \
                         the portal's publish token (DOCFED_TOKEN) and its list of primaries."
                    ),
                )
            }
            ErrorCode::Conflict => info(
                StatusCode::CONFLICT,
                "Not possible now",
                format!("{error}."),
            ),
            ErrorCode::TooLarge => info(
                StatusCode::PAYLOAD_TOO_LARGE,
                "File too large",
                format!("Primary {primary} refused the file: {error}."),
            ),
            ErrorCode::InsufficientStorage => info(
                StatusCode::INSUFFICIENT_STORAGE,
                "Primary out of storage",
                format!("Primary {primary} has no room for this file. Nothing was published."),
            ),
            _ if status.is_client_error() && !code.is_transient() => info(
                StatusCode::BAD_REQUEST,
                "Refused",
                format!("Primary {primary} refused: {error}."),
            ),
            _ => info(
                StatusCode::BAD_GATEWAY,
                "Primary error",
                format!("Primary {primary} failed: {error}."),
            ),
        },
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let info = self.info();
        // The plain body is only seen if the middleware is bypassed.
        let mut r = (info.status, info.message.clone()).into_response();
        r.extensions_mut().insert(info);
        r
    }
}
