//! Errors in text-embeddings-inference's shape, and their status codes.

use super::*;

/// An error answer, in text-embeddings-inference's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: String,
    pub error_type: String,
}

/// An HTTP error with its reason.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::UNPROCESSABLE_ENTITY => "Validation",
            StatusCode::PAYLOAD_TOO_LARGE => "Validation",
            StatusCode::TOO_MANY_REQUESTS => "Overloaded",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::NOT_FOUND => "NotFound",
            _ => "Backend",
        };
        (
            self.status,
            axum::Json(ErrorResponse {
                error: self.message,
                error_type: kind.into(),
            }),
        )
            .into_response()
    }
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> ApiError {
        match r {
            Refused::Full { tower, capacity } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the {tower} queue is full ({capacity} requests waiting); retry later"),
            ),
            Refused::Failed(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
}
