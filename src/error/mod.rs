//! The library's error type: each variant says which dependency failed; [`kafka`] says what
//! Kafka's errors mean. HTTP mapping lives in `http::error`; workers turn these into log lines
//! and retries.

pub mod kafka;

use std::time::Duration;

/// Result with rowsync's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an operation against PostgreSQL or Kafka failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL answered with an error or the connection broke.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No pooled PostgreSQL connection could be had.
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A query that answered several callers' reads failed (each caller gets this).
    #[error("postgres: {0}")]
    PostgresShared(String),
    /// Kafka answered with an error or the connection broke. A refused certificate or refused
    /// credentials say so, and name the setting to look at ([`kafka::describe`]).
    /// The message already holds rskafka's whole chain of causes, so it is not a `source`
    /// (`{:#}` would repeat each cause).
    #[error("kafka: {}", kafka::describe(.0))]
    Kafka(rskafka::client::error::Error),
    /// The Kafka settings do not fit together, or a file they name cannot be used: one line
    /// naming the setting.
    #[error("{0}")]
    KafkaSettings(String),
    /// A produce request that carried several callers' records failed (each caller gets this).
    #[error("kafka: {0}")]
    KafkaShared(String),
    /// A call did not finish within its bound.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The call that timed out.
        what: &'static str,
        /// Its bound.
        after: Duration,
    },
    /// Another process moved this partition's stored offset; the batch was rolled back.
    #[error("stored offset of {worker}/{topic}/{partition} was moved by another process")]
    OffsetConflict {
        worker: &'static str,
        topic: String,
        partition: i32,
    },
    /// This replica is no longer a member of the worker's consumer group (no heartbeat was
    /// accepted within the session timeout, or it was fenced): the batch was rolled back, as its
    /// partition may belong to another replica by now.
    #[error("not a member of consumer group {group} any more; the batch was rolled back")]
    MembershipLost { group: String },
    /// PostgreSQL refused a record of a batch (a constraint, a data exception); the batch is
    /// applied again with the refused records isolated.
    #[error("PostgreSQL refused a record: {0}")]
    RowRejected(String),
    /// The request names something that does not fit (a partition the topic lacks, say).
    #[error("{0}")]
    BadRequest(String),
    /// The operation needs the worker stopped.
    #[error("worker {0} is running; stop it first")]
    WorkerRunning(&'static str),
    /// A background fetch task died (it panicked or was aborted).
    #[error("fetching ahead failed: {0}")]
    Prefetch(String),
    /// The broker does not know the topic, or it has no partitions.
    #[error("topic {0} has no partitions")]
    NoPartitions(String),
}

impl From<rskafka::client::error::Error> for Error {
    fn from(error: rskafka::client::error::Error) -> Self {
        Self::Kafka(error)
    }
}

/// Runs `future`, failing with [`Error::Timeout`] when it takes longer than `after`.
pub async fn bounded<T, E>(
    what: &'static str,
    after: Duration,
    future: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T>
where
    Error: From<E>,
{
    match tokio::time::timeout(after, future).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::Timeout { what, after }),
    }
}

/// Display of an error and all its sources (refinery's and tokio-postgres's own Display hide
/// the cause's message).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
