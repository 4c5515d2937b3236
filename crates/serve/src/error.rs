//! Errors of the serving layer, and how each maps to an OpenAI error body and HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What can go wrong between a request and its tokens.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request names neither the base model nor a known adapter.
    #[error(
        "the model `{0}` does not exist: GET /v1/models lists the base model and every adapter"
    )]
    UnknownModel(String),
    /// The engine's waiting queue is full; retry shortly.
    #[error("the server is busy ({0} requests waiting); retry after a second")]
    QueueFull(usize),
    /// Prompt plus requested tokens exceed the model's context.
    #[error("this model's maximum context length is {context} tokens; the prompt has {prompt} tokens and {max_tokens} more were requested")]
    ContextOverflow {
        context: usize,
        prompt: usize,
        max_tokens: usize,
        param: &'static str,
    },
    /// A request parameter is out of range or malformed.
    #[error("{message}")]
    BadParam {
        param: &'static str,
        message: String,
    },
    /// An adapter could not be registered or loaded.
    #[error("adapter `{name}`: {message}")]
    Adapter { name: String, message: String },
    /// The model runtime failed.
    #[error("model runtime: {0}")]
    Model(#[from] openledger_model::ModelError),
    /// Runtime adapter loading is turned off by the operator.
    #[error("loading and unloading adapters at run time is off on this server (the operator can turn it on: [serve] allow_runtime_lora = true)")]
    RuntimeLoraOff,
    /// A paid adapter was called without a known API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's credit cannot cover the most this call could cost.
    #[error("{0}")]
    PaymentRequired(String),
    /// The chain side failed (resolving an adapter or recording a charge); nothing was charged.
    #[error("{0}")]
    Ledger(String),
    /// The engine thread is gone (it panicked or the server is shutting down).
    #[error("the inference engine has stopped")]
    EngineStopped,
}

impl ServeError {
    pub(crate) fn bad(param: &'static str, message: impl Into<String>) -> Self {
        ServeError::BadParam {
            param,
            message: message.into(),
        }
    }

    /// HTTP status, OpenAI error `type`, `param` and `code`.
    pub fn parts(
        &self,
    ) -> (
        StatusCode,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    ) {
        match self {
            ServeError::UnknownModel(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            ServeError::QueueFull(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                None,
                Some("queue_full"),
            ),
            ServeError::ContextOverflow { param, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some(param),
                Some("context_length_exceeded"),
            ),
            ServeError::BadParam { param, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some(param),
                Some("invalid_value"),
            ),
            ServeError::Adapter { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("lora_path"),
                Some("adapter_error"),
            ),
            ServeError::RuntimeLoraOff => (
                StatusCode::FORBIDDEN,
                "permission_error",
                None,
                Some("runtime_lora_disabled"),
            ),
            ServeError::Model(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                None,
            ),
            ServeError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
            ServeError::PaymentRequired(_) => (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                None,
                Some("insufficient_quota"),
            ),
            ServeError::Ledger(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                None,
                Some("ledger_unavailable"),
            ),
            ServeError::EngineStopped => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                None,
                Some("engine_stopped"),
            ),
        }
    }

    /// The OpenAI error body `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        let (_, kind, param, code) = self.parts();
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let (status, ..) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        if matches!(self, ServeError::QueueFull(_)) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
