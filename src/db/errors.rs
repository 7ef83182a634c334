//! What PostgreSQL's errors mean to rowsync: refused data (isolate the record) versus a lock
//! conflict (apply again) versus anything else (retry with backoff), told apart by SQLSTATE.
//! What to do about each is left to the workers.

use tokio_postgres::error::SqlState;

use crate::error::Error;

/// PostgreSQL refused the data itself (a data exception, a constraint, a trigger's error), as
/// opposed to failing: retrying will not help, isolating the record will.
pub fn is_refusal(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|state| {
        let code = state.code();
        code.starts_with("22") || code.starts_with("23") || code == "P0001"
    })
}

/// PostgreSQL rolled the transaction back to break a deadlock or a serialization conflict:
/// applying the same batch again is expected to succeed.
pub fn is_lock_conflict(error: &tokio_postgres::Error) -> bool {
    error.code().is_some_and(|state| {
        *state == SqlState::T_R_DEADLOCK_DETECTED || *state == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// PostgreSQL's own message for an error it answered with; the whole error otherwise.
pub fn postgres_reason(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map(|db| db.message().to_owned())
        .unwrap_or_else(|| error.to_string())
}

/// A refusal becomes [`Error::RowRejected`] with PostgreSQL's reason; other errors pass through.
pub fn as_rejection(error: Error) -> Error {
    match error {
        Error::Postgres(e) if is_refusal(&e) => Error::RowRejected(postgres_reason(&e)),
        other => other,
    }
}
