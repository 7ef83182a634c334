//! TLS and SASL on every connection rowsync opens to Kafka (Kafka's own setting names:
//! `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`).
//!
//! [`client_builder`] checks that the settings fit together, reads the files they name and
//! configures rskafka's client with them; every connection the one shared client opens (the
//! bootstrap, each partition leader, the controller) then uses TLS and SASL alike. rustls's
//! configuration is [`tls`]'s; what Kafka's errors mean ([`describe`]) is `error::kafka`'s.

use std::sync::Arc;

use rskafka::client::{ClientBuilder, Credentials, SaslConfig};
use secrecy::ExposeSecret;

use super::tls;
use crate::config::{EndpointIdentification, KafkaSaslMechanism, KafkaSettings};
pub use crate::error::kafka::describe;

/// A ClientBuilder for the brokers `settings` name, with their TLS and SASL configuration.
///
/// Fails with one line naming the setting to fix when the settings do not fit together (a SASL
/// mechanism without a `SASL_*` protocol, a missing user name, …) or a file they name cannot be
/// used. Logs a warning when host-name checks are off or a PLAIN password would travel in clear.
pub fn client_builder(settings: &KafkaSettings) -> Result<ClientBuilder, String> {
    check(settings)?;
    let mut builder = ClientBuilder::new(settings.bootstrap_servers());
    if settings.kafka_security_protocol.tls() {
        builder = builder.tls_config(Arc::new(tls::client_config(settings)?));
    }
    if let Some(sasl) = sasl_config(settings) {
        builder = builder.sasl_config(sasl);
    }
    Ok(builder)
}

/// Logs how rowsync connects to Kafka, once at start-up, with a warning for what is unsafe.
pub fn log_choices(settings: &KafkaSettings) {
    let protocol = settings.kafka_security_protocol;
    if protocol.tls()
        && settings.kafka_ssl_endpoint_identification == Some(EndpointIdentification::None)
    {
        tracing::warn!(
            "KAFKA_SSL_ENDPOINT_IDENTIFICATION=none: brokers' certificates are not checked \
             against their host names; any certificate a trusted CA signed is accepted"
        );
    }
    if protocol.sasl()
        && !protocol.tls()
        && settings.kafka_sasl_mechanism == Some(KafkaSaslMechanism::Plain)
    {
        tracing::warn!(
            "KAFKA_SASL_MECHANISM=PLAIN over KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends the \
             password to the broker unencrypted; use SASL_SSL"
        );
    }
    tracing::info!(
        security_protocol = protocol.as_str(),
        sasl_mechanism = settings.kafka_sasl_mechanism.map(|m| m.as_str()),
        sasl_username = settings.kafka_sasl_username.as_deref(),
        ca = match (&settings.kafka_ssl_ca_location, protocol.tls()) {
            (_, false) => None,
            (Some(path), true) => Some(path.display().to_string()),
            (None, true) => Some("built-in public roots".to_owned()),
        },
        client_certificate = settings.kafka_ssl_certificate_location.is_some(),
        "kafka connection security"
    );
}

/// Refuses settings that do not fit together, with one line naming the setting to fix.
fn check(settings: &KafkaSettings) -> Result<(), String> {
    let protocol = settings.kafka_security_protocol;
    let name = protocol.as_str();
    if protocol.sasl() {
        if settings.kafka_sasl_mechanism.is_none() {
            return Err(format!(
                "KAFKA_SASL_MECHANISM is required with KAFKA_SECURITY_PROTOCOL={name}: \
                 PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            ));
        }
        if settings
            .kafka_sasl_username
            .as_deref()
            .is_none_or(|u| u.is_empty())
        {
            return Err(format!(
                "KAFKA_SASL_USERNAME is required with KAFKA_SECURITY_PROTOCOL={name}"
            ));
        }
        if settings
            .sasl_password()
            .is_none_or(|p| p.expose_secret().is_empty())
        {
            return Err(format!(
                "KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE) is required with \
                 KAFKA_SECURITY_PROTOCOL={name}"
            ));
        }
    } else {
        let set = [
            (
                "KAFKA_SASL_MECHANISM",
                settings.kafka_sasl_mechanism.is_some(),
            ),
            (
                "KAFKA_SASL_USERNAME",
                settings.kafka_sasl_username.is_some(),
            ),
            (
                "KAFKA_SASL_PASSWORD",
                settings.kafka_sasl_password.is_some(),
            ),
            (
                "KAFKA_SASL_PASSWORD_FILE",
                settings.kafka_sasl_password_file.is_some(),
            ),
        ];
        if let Some((setting, _)) = set.iter().find(|(_, set)| *set) {
            let with_tls = if protocol.tls() {
                "SASL_SSL"
            } else {
                "SASL_SSL or SASL_PLAINTEXT"
            };
            return Err(format!(
                "{setting} is set, but KAFKA_SECURITY_PROTOCOL={name} does not authenticate \
                 with SASL: set KAFKA_SECURITY_PROTOCOL={with_tls}, or unset {setting}"
            ));
        }
    }
    if !protocol.tls() {
        let set = [
            (
                "KAFKA_SSL_CA_LOCATION",
                settings.kafka_ssl_ca_location.is_some(),
            ),
            (
                "KAFKA_SSL_CERTIFICATE_LOCATION",
                settings.kafka_ssl_certificate_location.is_some(),
            ),
            (
                "KAFKA_SSL_KEY_LOCATION",
                settings.kafka_ssl_key_location.is_some(),
            ),
            (
                "KAFKA_SSL_ENDPOINT_IDENTIFICATION",
                settings.kafka_ssl_endpoint_identification.is_some(),
            ),
        ];
        if let Some((setting, _)) = set.iter().find(|(_, set)| *set) {
            let with_tls = if protocol.sasl() {
                "SASL_SSL"
            } else {
                "SSL or SASL_SSL"
            };
            return Err(format!(
                "{setting} is set, but KAFKA_SECURITY_PROTOCOL={name} does not use TLS: set \
                 KAFKA_SECURITY_PROTOCOL={with_tls}, or unset {setting}"
            ));
        }
    }
    match (
        &settings.kafka_ssl_certificate_location,
        &settings.kafka_ssl_key_location,
    ) {
        (Some(_), None) => Err(
            "KAFKA_SSL_CERTIFICATE_LOCATION needs KAFKA_SSL_KEY_LOCATION \
                                (the PEM file of the certificate's private key)"
                .to_owned(),
        ),
        (None, Some(_)) => Err(
            "KAFKA_SSL_KEY_LOCATION needs KAFKA_SSL_CERTIFICATE_LOCATION \
                                (the PEM file of the client certificate)"
                .to_owned(),
        ),
        _ => Ok(()),
    }
}

/// rskafka's SASL configuration, when the protocol authenticates (checked beforehand).
fn sasl_config(settings: &KafkaSettings) -> Option<SaslConfig> {
    if !settings.kafka_security_protocol.sasl() {
        return None;
    }
    let credentials = Credentials::new(
        settings.kafka_sasl_username.clone()?,
        settings.sasl_password()?.expose_secret().to_owned(),
    );
    Some(match settings.kafka_sasl_mechanism? {
        KafkaSaslMechanism::Plain => SaslConfig::Plain(credentials),
        KafkaSaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
        KafkaSaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cli::{Cli, CliError};

    /// Kafka settings as the command line makes them from `args` (also for `tls`'s tests).
    pub(in crate::kafka) fn parse(args: &[&str]) -> Result<KafkaSettings, String> {
        let base = [
            "rowsync",
            "--database-url",
            "postgres://u@db/x",
            "--kafka-host",
            "k",
        ];
        match Cli::try_parse_args(base.iter().chain(args)) {
            Ok(cli) => Ok(cli.settings.kafka),
            Err(CliError::Invalid(line)) => Err(line),
            Err(other) => panic!("{other:?}"),
        }
    }

    fn checked(args: &[&str]) -> Result<(), String> {
        check(&parse(args)?)
    }

    #[test]
    fn plaintext_is_the_default_and_needs_nothing_else() {
        let settings = parse(&[]).unwrap();
        assert_eq!(
            settings.kafka_security_protocol,
            crate::config::KafkaSecurityProtocol::Plaintext
        );
        assert!(client_builder(&settings).is_ok());
        assert!(sasl_config(&settings).is_none());
    }

    #[test]
    fn combinations_that_do_not_fit_are_refused_naming_the_setting() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--kafka-security-protocol", "SASL_SSL"],
                "KAFKA_SASL_MECHANISM is required with KAFKA_SECURITY_PROTOCOL=SASL_SSL",
            ),
            (
                &[
                    "--kafka-security-protocol",
                    "SASL_PLAINTEXT",
                    "--kafka-sasl-mechanism",
                    "PLAIN",
                ],
                "KAFKA_SASL_USERNAME is required",
            ),
            (
                &[
                    "--kafka-security-protocol",
                    "SASL_SSL",
                    "--kafka-sasl-mechanism",
                    "SCRAM-SHA-512",
                    "--kafka-sasl-username",
                    "u",
                    "--kafka-sasl-password",
                    "",
                ],
                "KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE) is required",
            ),
            (
                &["--kafka-sasl-username", "u"],
                "KAFKA_SASL_USERNAME is set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not \
                 authenticate with SASL: set KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT",
            ),
            (
                &[
                    "--kafka-security-protocol",
                    "SSL",
                    "--kafka-sasl-mechanism",
                    "PLAIN",
                ],
                "set KAFKA_SECURITY_PROTOCOL=SASL_SSL, or unset KAFKA_SASL_MECHANISM",
            ),
            (
                &["--kafka-ssl-endpoint-identification", "none"],
                "KAFKA_SSL_ENDPOINT_IDENTIFICATION is set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT \
                 does not use TLS",
            ),
            (
                &[
                    "--kafka-security-protocol",
                    "SASL_PLAINTEXT",
                    "--kafka-sasl-mechanism",
                    "PLAIN",
                    "--kafka-sasl-username",
                    "u",
                    "--kafka-sasl-password",
                    "p",
                    "--kafka-ssl-ca-location",
                    "/ca.pem",
                ],
                "set KAFKA_SECURITY_PROTOCOL=SASL_SSL, or unset KAFKA_SSL_CA_LOCATION",
            ),
            (
                &[
                    "--kafka-security-protocol",
                    "SSL",
                    "--kafka-ssl-key-location",
                    "/k.pem",
                ],
                "KAFKA_SSL_KEY_LOCATION needs KAFKA_SSL_CERTIFICATE_LOCATION",
            ),
        ];
        for (args, expected) in cases {
            let error = checked(args).unwrap_err();
            assert!(error.contains(expected), "{args:?}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn names_are_kafkas_and_case_does_not_matter() {
        let settings = parse(&[
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "scram-sha-256",
            "--kafka-sasl-username",
            "u",
            "--kafka-sasl-password",
            "p",
            "--kafka-ssl-endpoint-identification",
            "NONE",
        ])
        .unwrap();
        assert_eq!(settings.kafka_security_protocol.as_str(), "SASL_SSL");
        assert_eq!(
            settings.kafka_sasl_mechanism,
            Some(KafkaSaslMechanism::ScramSha256)
        );
        assert_eq!(
            settings.kafka_ssl_endpoint_identification,
            Some(EndpointIdentification::None)
        );
        assert!(matches!(
            sasl_config(&settings),
            Some(SaslConfig::ScramSha256(_))
        ));
        assert!(client_builder(&settings).is_ok());
        let error = parse(&["--kafka-security-protocol", "TLS"]).unwrap_err();
        assert!(
            error.contains("KAFKA_SECURITY_PROTOCOL") && error.contains("SASL_SSL"),
            "{error}"
        );
    }

    #[test]
    fn the_password_and_its_file_never_go_together_and_the_file_loses_one_newline() {
        let dir = std::env::temp_dir().join(format!("rowsync-sasl-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "file-secret\n\n").unwrap();
        let file = file.to_str().unwrap();
        let error = parse(&[
            "--kafka-sasl-password",
            "env-secret",
            "--kafka-sasl-password-file",
            file,
        ])
        .unwrap_err();
        assert!(
            error.contains("KAFKA_SASL_PASSWORD>") && error.contains("KAFKA_SASL_PASSWORD_FILE"),
            "{error}"
        );
        assert!(!error.contains("secret"), "{error}");
        let settings = parse(&[
            "--kafka-security-protocol",
            "SASL_PLAINTEXT",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-sasl-username",
            "u",
            "--kafka-sasl-password-file",
            file,
        ])
        .unwrap();
        assert_eq!(
            settings.sasl_password().unwrap().expose_secret(),
            "file-secret\n"
        );
        let debug = format!("{settings:?} {:?}", sasl_config(&settings));
        assert!(!debug.contains("file-secret"), "{debug}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
