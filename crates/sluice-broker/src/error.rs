//! Kafka error codes are chosen here, once, from the typed errors of the lower layers.

use kafka_protocol::ResponseError;
use sluice_log::LogError;
use sluice_meta::{MetaError, StoreError};

/// An error to report to the client: a Kafka error code and an optional message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ResponseError,
    pub message: Option<String>,
}

impl ApiError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: Some(message.into()),
        }
    }

    pub fn from_log(e: LogError) -> ApiError {
        match e {
            LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.into(),
            other => {
                tracing::error!(error = %other, "log error");
                ApiError::new(ResponseError::KafkaStorageError, other.to_string())
            }
        }
    }

    pub fn from_store(e: StoreError) -> ApiError {
        match e {
            StoreError::Invalid(MetaError::TopicExists(name)) => ApiError::new(
                ResponseError::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            ),
            StoreError::Invalid(other) => {
                ApiError::new(ResponseError::InvalidRequest, other.to_string())
            }
            other => {
                tracing::error!(error = %other, "metadata store error");
                ApiError::new(ResponseError::KafkaStorageError, other.to_string())
            }
        }
    }
}

impl From<ResponseError> for ApiError {
    fn from(code: ResponseError) -> ApiError {
        ApiError {
            code,
            message: None,
        }
    }
}
