//! The API's errors: lethe's own paths answer `{"error": {"code", "message"}}`, the
//! Mork-compatible ones Mork's `{"detail": …}` (a list of problems for a 422, as FastAPI).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which error shape a path answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error": {"code", "message"}}`.
    Lethe,
    /// `{"detail": "…"}`, or `{"detail": [{"type", "loc", "msg", "input"}]}` for a 422.
    Mork,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// A stable code (`unauthorized`, `forbidden`, `not_found`, `invalid`, `internal`).
    pub code: &'static str,
    /// What is wrong, naming the thing.
    pub message: String,
    /// For a 422: where (`["query", "limit"]`) and the value given.
    pub at: Option<(Vec<String>, serde_json::Value)>,
    /// The shape to answer with.
    pub shape: Shape,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            at: None,
            shape: Shape::Lethe,
        }
    }

    /// 401: no key, or one nobody has.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid API key",
        )
    }

    /// 401 with why the request is not authenticated (a signature that does not match).
    pub fn unauthorized_because(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the key cannot do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the retirement's state does not allow it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 503: something this route needs is not there.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 503 because `what` failed (logged with its cause).
    pub fn unavailable_because(what: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "{what}");
        Self::unavailable(format!("{what} failed; see lethe's log"))
    }

    /// 422: a parameter or body field is wrong.
    pub fn invalid(loc: &[&str], input: serde_json::Value, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message);
        e.at = Some((loc.iter().map(|s| s.to_string()).collect(), input));
        e
    }

    /// `value`, the query parameter `name`, as an integer within `range`; 422 otherwise.
    pub fn bounded(
        name: &str,
        value: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, Self> {
        value
            .parse::<i64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                Self::invalid(
                    &["query", name],
                    serde_json::json!(value),
                    format!(
                        "{name} must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            })
    }

    /// 500: logged with its cause; the answer says only that it failed.
    pub fn internal(what: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what} failed; see lethe's log"),
        )
    }

    /// With Mork's shape.
    pub fn mork(mut self) -> Self {
        self.shape = Shape::Mork;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match (self.shape, &self.at) {
            (Shape::Mork, Some((loc, input))) => json!({"detail": [{
                "type": "value_error",
                "loc": loc,
                "msg": self.message,
                "input": input,
            }]}),
            (Shape::Mork, None) => json!({"detail": self.message}),
            (Shape::Lethe, _) => json!({"error": {"code": self.code, "message": self.message}}),
        };
        (self.status, axum::Json(body)).into_response()
    }
}
