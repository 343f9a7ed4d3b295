//! The one place that turns errors into HTTP answers: RFC 7807 problem+json with a stable `type`.
//! User errors say what was wrong; infrastructure errors are logged and shown only as "internal error". Every
//! problem carries the request's `trace_id`, the same id its log lines carry.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use commands::CommandError;
use domain::{InvalidValue, ProjectError, SubscriberError, SubscriptionError};
use serde_json::json;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("no such route")]
    RouteNotFound,
    #[error("this route does not take that method")]
    MethodNotAllowed,
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request (its body included) took longer than the request timeout.
    #[error("the request took longer than the server's request timeout")]
    RequestTimeout,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    /// A provider Herald depends on (the mail server) refused; nothing was recorded.
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::NotFound(_) | Self::RouteNotFound => {
                (StatusCode::NOT_FOUND, "not-found", "Not Found")
            }
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method Not Allowed",
            ),
            Self::Gone(_) => (StatusCode::GONE, "gone", "Gone"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::TooManyRequests(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too Many Requests",
            ),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad Request"),
            Self::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "Unprocessable Content",
            ),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload Too Large",
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "Request Timeout",
            ),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported Media Type",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service Unavailable",
            ),
            Self::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad-gateway", "Bad Gateway"),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal Server Error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let mut body = json!({
            "type": format!("urn:herald:problem:{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        // The trace id lets a user quote the one log line that explains an error, without the error leaking it.
        if let Some(trace_id) = commands::trace::current() {
            body["trace_id"] = trace_id.into();
        }
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        if let Self::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        response
    }
}

impl From<InvalidValue> for ApiError {
    fn from(e: InvalidValue) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Project(ProjectError::NotFound) => Self::NotFound("project"),
            CommandError::Project(ProjectError::Archived) => {
                Self::Gone("project is archived".into())
            }
            CommandError::Project(e @ ProjectError::AlreadyExists) => Self::Conflict(e.to_string()),
            CommandError::Project(e @ ProjectError::StaleSecretVersion { .. }) => {
                Self::Conflict(e.to_string())
            }
            CommandError::Subscription(SubscriptionError::NotFound) => {
                Self::NotFound("subscription")
            }
            CommandError::Subscription(e @ SubscriptionError::AlreadyExists) => {
                Self::Conflict(e.to_string())
            }
            CommandError::Subscription(SubscriptionError::Invalid(e)) => e.into(),
            CommandError::Subscriber(e) => subscriber_error(e),
            CommandError::BuildRun(domain::BuildRunError::History(e)) => {
                Self::Unavailable(format!("build history: {e}"))
            }
            CommandError::BuildRun(e) => Self::Invalid(e.to_string()),
            CommandError::Notification(domain::NotificationError::NotPlanned) => {
                Self::NotFound("notification")
            }
            CommandError::Notification(e) => Self::Conflict(e.to_string()),
            CommandError::Nul(e) => Self::Invalid(e.to_string()),
            CommandError::Conflict(e) => {
                Self::Conflict(format!("too many concurrent changes to {e}; retry"))
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

fn subscriber_error(e: SubscriberError) -> ApiError {
    match e {
        SubscriberError::NotFound => ApiError::NotFound("subscriber"),
        SubscriberError::ContactNotFound => ApiError::NotFound("contact"),
        SubscriberError::Invalid(e) => e.into(),
        e @ (SubscriberError::AlreadyExists
        | SubscriberError::DuplicateContact(_)
        | SubscriberError::AlreadyVerified) => ApiError::Conflict(e.to_string()),
        e @ (SubscriberError::BadToken | SubscriberError::BadLinkCode) => {
            ApiError::Gone(format!("{e}; ask for a new one"))
        }
        e @ SubscriberError::VerificationRequired => ApiError::Invalid(e.to_string()),
    }
}
