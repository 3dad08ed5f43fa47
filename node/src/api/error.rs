//! API errors in Kubo's shape: `{"Message","Code","Type":"error"}`; 4xx for the caller's
//! mistakes, 5xx (details logged, not leaked) for ours.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::p2p::NetError;
use crate::publish::PublishError;
use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for the caller.
    pub message: String,
}

impl ApiError {
    /// 400: the request was wrong.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    /// 500, logged.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "API request failed");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // go-ipfs-cmds codes: 0 normal, 1 client, 4 forbidden.
        let code = match self.status.as_u16() {
            401 | 403 => 4,
            400..=499 => 1,
            _ => 0,
        };
        let body = serde_json::json!({"Message": self.message, "Code": code, "Type": "error"});
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 here is passing (catching up, reopening the store, shutting down).
            return (
                self.status,
                [(axum::http::header::RETRY_AFTER, "1")],
                Json(body),
            )
                .into_response();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull => {
                tracing::warn!("refused a write: the disk holding the block store is full");
                ApiError {
                    status: StatusCode::INSUFFICIENT_STORAGE,
                    message: e.to_string(),
                }
            }
            StoreError::Reopening => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
            },
            other => ApiError::internal(other),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(_) | PublishError::InBatch { .. } => ApiError::bad(e.to_string()),
            PublishError::Store(e) => e.into(),
            PublishError::Stopped | PublishError::NotReady(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
            },
        }
    }
}

impl From<NetError> for ApiError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Stopped => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
            },
            other => ApiError::internal(other),
        }
    }
}
