//! What Kafka's errors mean: rskafka's errors as one line that says what failed and which
//! setting to look at (a refused certificate, refused credentials), never repeating a secret.
//! Making the connections is `kafka::security`'s.

use rskafka::client::error::Error as KafkaError;
use rustls::{AlertDescription, CertificateError};

/// What went wrong talking to Kafka, as one line: a refused certificate or refused credentials
/// say so and name the setting to look at; anything else is rskafka's own message. rskafka's
/// errors never hold the SASL password (it only ever sends it, or a proof derived from it).
pub fn describe(error: &KafkaError) -> String {
    if let Some(tls) = tls_error(error) {
        return match source::<rskafka::ConnectionError>(error) {
            Some(rskafka::ConnectionError::Transport { broker, .. }) => {
                format!("{} (broker {broker})", describe_tls(tls))
            }
            _ => describe_tls(tls),
        };
    }
    if let Some(sasl) = source::<rskafka::SaslError>(error) {
        if let Some(line) = describe_sasl(sasl) {
            return line;
        }
    }
    error.to_string()
}

fn describe_tls(error: &rustls::Error) -> String {
    use rustls::Error as E;
    use CertificateError as C;
    match error {
        E::InvalidCertificate(C::UnknownIssuer) => format!(
            "TLS: the broker's certificate is not signed by a trusted CA ({error}): set \
             KAFKA_SSL_CA_LOCATION to the PEM file of the CA that signed it (unset, only public \
             CAs are trusted)"
        ),
        E::InvalidCertificate(e @ (C::NotValidForName | C::NotValidForNameContext { .. })) => {
            format!(
                "TLS: {e}: the broker's certificate does not name the address rowsync connects \
                 to (KAFKA_BOOTSTRAP_SERVERS, or the address the broker advertises); fix the \
                 address or the certificate, or set KAFKA_SSL_ENDPOINT_IDENTIFICATION=none to \
                 skip this check"
            )
        }
        E::InvalidCertificate(
            e @ (C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. }),
        ) => format!(
            "TLS: the broker's certificate is not valid now ({e}): the broker needs a renewed \
             certificate (or this machine's clock is wrong)"
        ),
        E::InvalidCertificate(_) => format!(
            "TLS: the broker's certificate was refused ({error}); check KAFKA_SSL_CA_LOCATION"
        ),
        E::AlertReceived(AlertDescription::CertificateRequired) => format!(
            "TLS: the broker requires a client certificate ({error}): set \
             KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION"
        ),
        E::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied,
        ) => format!(
            "TLS: the broker refused rowsync's client certificate ({error}); check \
             KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION"
        ),
        E::AlertReceived(AlertDescription::HandshakeFailure) => format!(
            "TLS: the broker refused the handshake ({error}): it may require a client \
             certificate (KAFKA_SSL_CERTIFICATE_LOCATION, KAFKA_SSL_KEY_LOCATION)"
        ),
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => {
            format!(
                "TLS: the broker does not answer in TLS ({error}); check \
                 KAFKA_SECURITY_PROTOCOL against the broker's listener"
            )
        }
        _ => format!("TLS: {error}"),
    }
}

fn describe_sasl(error: &rskafka::SaslError) -> Option<String> {
    use rskafka::SaslError as S;
    Some(match error {
        S::AuthenticationFailed {
            mechanism,
            error,
            message,
        } => {
            let why = match message.as_deref().map(str::trim) {
                Some(m) if !m.is_empty() && m != "NONE" => m.to_owned(),
                _ => error.to_string(),
            };
            format!(
                "authentication failed (SASL {mechanism}): {why}; check KAFKA_SASL_USERNAME and \
                 KAFKA_SASL_PASSWORD"
            )
        }
        S::MechanismFailed { mechanism, source } => format!(
            "authentication failed (SASL {mechanism}): {source}; check KAFKA_SASL_USERNAME and \
             KAFKA_SASL_PASSWORD"
        ),
        S::MechanismNotOffered { mechanism, .. } => format!(
            "authentication failed (SASL {mechanism}): {error}; check KAFKA_SASL_MECHANISM \
             and KAFKA_SECURITY_PROTOCOL against the broker's listener"
        ),
        // The connection broke meanwhile: not an authentication failure.
        S::RequestError(_) => return None,
        other => format!("authentication failed (SASL): {other}"),
    })
}

/// The first error of type `T` in `error`'s chain of sources.
fn source<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// The TLS error in `error`'s chain; rustls's errors come wrapped in `std::io::Error`, whose
/// `source` skips the wrapped error itself.
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use rskafka::{ConnectionError, SaslError};

    use super::*;

    #[test]
    fn refused_credentials_and_certificates_read_as_such() {
        let refused = KafkaError::Connection(ConnectionError::SaslFailed(
            SaslError::AuthenticationFailed {
                mechanism: "SCRAM-SHA-512".to_owned(),
                error: rskafka::client::error::ProtocolError::SaslAuthenticationFailed,
                message: Some("Authentication failed: Invalid username or password".to_owned()),
            },
        ));
        assert_eq!(
            describe(&refused),
            "authentication failed (SASL SCRAM-SHA-512): Authentication failed: Invalid \
             username or password; check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        );
        let offered = KafkaError::Connection(ConnectionError::SaslFailed(
            SaslError::MechanismNotOffered {
                mechanism: "SCRAM-SHA-256".to_owned(),
                offered: vec!["PLAIN".to_owned()],
            },
        ));
        assert!(
            describe(&offered).starts_with(
                "authentication failed (SASL SCRAM-SHA-256): the broker does not offer SASL \
                 mechanism SCRAM-SHA-256 (it offers PLAIN); check KAFKA_SASL_MECHANISM"
            ),
            "{}",
            describe(&offered)
        );
        let tls = KafkaError::Request(rskafka::client::error::RequestError::IO(
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            ),
        ));
        assert!(
            describe(&tls).starts_with(
                "TLS: the broker's certificate is not signed by a trusted CA (invalid peer \
                 certificate: UnknownIssuer): set KAFKA_SSL_CA_LOCATION"
            ),
            "{}",
            describe(&tls)
        );
        let other = KafkaError::InvalidResponse("odd".to_owned());
        assert_eq!(describe(&other), other.to_string());
        assert_eq!(
            crate::error::Error::Kafka(refused).to_string(),
            "kafka: authentication failed (SASL SCRAM-SHA-512): Authentication failed: Invalid \
             username or password; check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        );
    }
}
