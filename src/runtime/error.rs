//! The errors of the runtime both services stand on: setting up Kafka, consuming, producing,
//! the changelog, and failures parked by rebalance callbacks. Each service's error type wraps
//! this one (`Runtime`) beside its own cases, so the shared cases are written once.

use crate::runtime::changelog::ChangelogError;
use crate::runtime::kafka::{KafkaSetupError, ProduceError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Changelog(#[from] ChangelogError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    /// A state the service cannot go on from (a failed restore, a fatal consumer error, a
    /// failure a rebalance callback parked).
    #[error("{0}")]
    Fatal(String),
}

/// An error with its causes, each once: what a library's own message leaves out (`reqwest`:
/// "error sending request"; `tokio-postgres`: "invalid connection string", its cause naming
/// the option).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// `From` each runtime error into a service's error type through its `Runtime` variant, so
/// `?` works on runtime calls in the service's code.
macro_rules! from_runtime_errors {
    ($service:ty) => {
        impl From<$crate::runtime::kafka::KafkaSetupError> for $service {
            fn from(e: $crate::runtime::kafka::KafkaSetupError) -> Self {
                Self::Runtime(e.into())
            }
        }
        impl From<rdkafka::error::KafkaError> for $service {
            fn from(e: rdkafka::error::KafkaError) -> Self {
                Self::Runtime(e.into())
            }
        }
        impl From<$crate::runtime::changelog::ChangelogError> for $service {
            fn from(e: $crate::runtime::changelog::ChangelogError) -> Self {
                Self::Runtime(e.into())
            }
        }
        impl From<$crate::runtime::kafka::ProduceError> for $service {
            fn from(e: $crate::runtime::kafka::ProduceError) -> Self {
                Self::Runtime(e.into())
            }
        }
        impl $service {
            /// A state the service cannot go on from.
            pub fn fatal(message: impl Into<String>) -> Self {
                Self::Runtime($crate::runtime::error::RuntimeError::Fatal(message.into()))
            }
        }
    };
}
pub(crate) use from_runtime_errors;
