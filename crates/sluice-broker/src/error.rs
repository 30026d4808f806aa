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

/// The Kafka code of each group coordinator refusal.
pub fn group_error_code(e: &sluice_group::GroupError) -> ResponseError {
    use sluice_group::GroupError as G;
    match e {
        G::UnknownMemberId => ResponseError::UnknownMemberId,
        G::IllegalGeneration => ResponseError::IllegalGeneration,
        G::RebalanceInProgress => ResponseError::RebalanceInProgress,
        G::MemberIdRequired { .. } => ResponseError::MemberIdRequired,
        G::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        G::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        G::FencedInstanceId => ResponseError::FencedInstanceId,
        G::GroupIdNotFound => ResponseError::GroupIdNotFound,
        G::NonEmptyGroup => ResponseError::NonEmptyGroup,
        G::InvalidGroupId => ResponseError::InvalidGroupId,
        G::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        G::NotCoordinator => ResponseError::NotCoordinator,
        G::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        G::UnknownServerError => ResponseError::UnknownServerError,
    }
}

impl ApiError {
    pub fn from_append(e: crate::append::AppendError) -> ApiError {
        use crate::append::AppendError;
        use crate::producer_state::SequenceError;
        match e {
            AppendError::NotLeader => ResponseError::NotLeaderOrFollower.into(),
            AppendError::Log(e) => ApiError::from_log(e),
            AppendError::Sequence(SequenceError::OutOfOrder) => {
                ResponseError::OutOfOrderSequenceNumber.into()
            }
            AppendError::Sequence(SequenceError::InvalidEpoch) => {
                ResponseError::InvalidProducerEpoch.into()
            }
            AppendError::Sequence(SequenceError::UnknownProducer) => {
                ResponseError::UnknownProducerId.into()
            }
        }
    }
}
