//! The one error type of the HTTP edge.

use axum::Json;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An HTTP error with a stable machine-readable code. Internals are never shown.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

pub(crate) async fn not_found(uri: Uri) -> AppError {
    AppError { status: StatusCode::NOT_FOUND, code: "not_found", message: format!("no route for {}", uri.path()) }
}
