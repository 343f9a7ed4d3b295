use cqrs_es::AggregateError;
use domain::{BuildRunError, NotificationError, ProjectError, SubscriberError, SubscriptionError};

/// Why a command did not record anything. User errors carry the aggregate's own error; everything else is
/// infrastructure and must not be shown to the caller in detail.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    BuildRun(#[from] BuildRunError),
    #[error(transparent)]
    Subscriber(#[from] SubscriberError),
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    #[error(transparent)]
    Notification(#[from] NotificationError),
    /// The command's events would hold U+0000 (see `event_log`): the caller's input, refused whole.
    #[error(transparent)]
    Nul(#[from] crate::event_log::NulInText),
    #[error("too many concurrent changes to {0}; try again")]
    Conflict(String),
    #[error("event store: {0}")]
    Store(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl CommandError {
    pub(crate) fn from_aggregate<E>(aggregate_id: &str, error: AggregateError<E>) -> Self
    where
        E: std::error::Error,
        CommandError: From<E>,
    {
        match error {
            AggregateError::UserError(e) => e.into(),
            AggregateError::AggregateConflict => Self::Conflict(aggregate_id.to_owned()),
            AggregateError::UnexpectedError(e) => match e.downcast::<crate::event_log::NulInText>()
            {
                Ok(nul) => Self::Nul(*nul),
                Err(other) => Self::Store(other.to_string()),
            },
            other => Self::Store(other.to_string()),
        }
    }
}
