//! What PostgreSQL's errors mean to rowsync: refused data (isolate the record) versus a lock
//! conflict (apply again) versus anything else (retry with backoff), told apart by SQLSTATE;
//! and a failed connection as one line naming the setting to fix ([`describe`]). What to do
//! about each is left to the workers and the callers.

use std::{fmt, io};

use deadpool_postgres::PoolError;
use rustls::{AlertDescription, CertificateError};
use tokio_postgres::error::SqlState;

use crate::{
    config::SslMode,
    error::{error_chain, Error},
};

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

/// A failed TLS handshake with PostgreSQL, as one line naming the setting to fix.
#[derive(Debug)]
pub struct HandshakeError(String);

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandshakeError {}

impl HandshakeError {
    /// The handshake with `host` failed with `error`; `roots` says where the trusted roots came
    /// from (`DB_SSLROOTCERT (/etc/ca.pem)`, …).
    pub(super) fn new(error: &io::Error, host: &str, mode: SslMode, roots: &str) -> Self {
        let rustls_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        let text = match rustls_error {
            Some(rustls::Error::InvalidCertificate(
                problem @ (CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. }),
            )) => format!(
                "PostgreSQL certificate not valid for host {host} (sslmode={mode}): {problem} \
                 — check DB_HOST/DATABASE_URL or DB_SSLMODE"
            ),
            Some(rustls::Error::InvalidCertificate(problem)) => format!(
                "PostgreSQL certificate of {host} not trusted (sslmode={mode}, roots: {}): {} \
                 — check DB_SSLROOTCERT or DB_SSLMODE",
                roots,
                certificate_problem(problem)
            ),
            Some(rustls::Error::AlertReceived(alert)) => alert_text(*alert, Some((host, mode))),
            Some(other) => format!(
                "PostgreSQL TLS handshake with {host} failed (sslmode={mode}): {other} \
                 — check DB_SSLMODE"
            ),
            None if error.kind() == io::ErrorKind::InvalidInput => format!(
                "PostgreSQL host {host} cannot be used as a TLS server name (sslmode={mode}): \
                 {error} — check DB_HOST/DATABASE_URL or DB_SSLMODE"
            ),
            None => format!(
                "PostgreSQL TLS handshake with {host} failed (sslmode={mode}): {error} \
                 — check DB_SSLMODE"
            ),
        };
        Self(text)
    }
}

/// What is wrong with the server's certificate, in words.
fn certificate_problem(problem: &CertificateError) -> String {
    match problem {
        CertificateError::UnknownIssuer => {
            "it is not signed by a trusted certificate authority (UnknownIssuer)".to_owned()
        }
        CertificateError::BadSignature => "its signature is not valid (BadSignature)".to_owned(),
        CertificateError::Expired => "it has expired (Expired)".to_owned(),
        CertificateError::NotValidYet => "it is not valid yet (NotValidYet)".to_owned(),
        other => other.to_string(),
    }
}

/// The server ended the handshake with `alert`: about our client certificate, or TLS itself.
fn alert_text(alert: AlertDescription, during: Option<(&str, SslMode)>) -> String {
    let at = match during {
        Some((host, mode)) => format!(" at {host} (sslmode={mode})"),
        None => String::new(),
    };
    match alert {
        AlertDescription::BadCertificate
        | AlertDescription::UnknownCA
        | AlertDescription::CertificateRequired
        | AlertDescription::CertificateUnknown
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateRevoked
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::AccessDenied
        | AlertDescription::DecryptError => format!(
            "PostgreSQL server{at} refused the TLS client certificate (alert {alert:?}) \
             — check DB_SSLCERT and DB_SSLKEY"
        ),
        other => format!(
            "PostgreSQL server{at} ended the TLS handshake (alert {other:?}) — check DB_SSLMODE"
        ),
    }
}

/// A PostgreSQL connection error as one line that says what failed and which setting to check.
/// Never holds a password: neither rowsync's messages nor PostgreSQL's repeat one.
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return describe_db(db);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(handshake) = cause.downcast_ref::<HandshakeError>() {
            return handshake.to_string();
        }
        // After the handshake (TLS 1.3 servers judge a client certificate only then).
        let rustls_error = cause
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::AlertReceived(alert)) = rustls_error {
            return alert_text(*alert, None);
        }
        source = cause.source();
    }
    let text = one_line(&error_chain(error));
    if text.contains("password missing") {
        "PostgreSQL asks for a password and none is set — set POSTGRES_PASSWORD, \
         POSTGRES_PASSWORD_FILE or the password in DATABASE_URL"
            .to_owned()
    } else if text.contains("server does not support TLS") {
        "PostgreSQL does not offer TLS, which DB_SSLMODE (require, verify-ca or verify-full) \
         demands — check DB_SSLMODE or the server's ssl setting"
            .to_owned()
    } else {
        format!("PostgreSQL: {text}")
    }
}

/// [`describe`] for what PostgreSQL itself answered (authentication, a missing database, …).
fn describe_db(db: &tokio_postgres::error::DbError) -> String {
    let message = one_line(db.message());
    let code = db.code();
    if *code == SqlState::INVALID_PASSWORD {
        format!(
            "PostgreSQL authentication failed: {message} — check POSTGRES_USER and \
             POSTGRES_PASSWORD/POSTGRES_PASSWORD_FILE (or the user and password in DATABASE_URL)"
        )
    } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        let check = if message.contains("certificate") {
            "DB_SSLCERT and DB_SSLKEY (the client certificate) and POSTGRES_USER"
        } else if message.contains("encryption") || message.contains("SSL") {
            "DB_SSLMODE"
        } else {
            "POSTGRES_USER/DATABASE_URL"
        };
        format!("PostgreSQL refused the connection: {message} — check {check}")
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        format!("PostgreSQL: {message} — check DB_NAME/DATABASE_URL")
    } else {
        format!("PostgreSQL: {}: {message}", db.severity())
    }
}

/// [`describe`] for an error getting a pooled connection.
pub fn describe_pool_error(error: &PoolError) -> String {
    match error {
        PoolError::Backend(e) => describe(e),
        PoolError::Timeout(_) => "timed out waiting for a PostgreSQL connection".to_owned(),
        other => format!("PostgreSQL pool: {other}"),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
