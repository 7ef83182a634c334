//! TLS and SASL on every connection rowsync opens to Kafka (Kafka's own setting names:
//! `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`).
//!
//! [`client_builder`] checks that the settings fit together, reads the files they name and
//! configures rskafka's client with them; every connection the one shared client opens (the
//! bootstrap, each partition leader, the controller) then uses TLS and SASL alike. [`describe`]
//! turns rskafka's errors into lines that say what failed and which setting to look at, never
//! repeating a secret.

use std::{path::Path, sync::Arc};

use rskafka::client::{error::Error as KafkaError, ClientBuilder, Credentials, SaslConfig};
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use secrecy::ExposeSecret;

use crate::config::{EndpointIdentification, KafkaSaslMechanism, KafkaSettings};

/// A ClientBuilder for the brokers `settings` name, with their TLS and SASL configuration.
///
/// Fails with one line naming the setting to fix when the settings do not fit together (a SASL
/// mechanism without a `SASL_*` protocol, a missing user name, …) or a file they name cannot be
/// used. Logs a warning when host-name checks are off or a PLAIN password would travel in clear.
pub fn client_builder(settings: &KafkaSettings) -> Result<ClientBuilder, String> {
    check(settings)?;
    let mut builder = ClientBuilder::new(settings.bootstrap_servers());
    if settings.kafka_security_protocol.tls() {
        builder = builder.tls_config(Arc::new(tls_config(settings)?));
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

/// rustls's client configuration: the trusted roots (`KAFKA_SSL_CA_LOCATION`, else Mozilla's,
/// compiled in so a `FROM scratch` image needs no CA bundle), the client certificate when set,
/// host-name checks unless `KAFKA_SSL_ENDPOINT_IDENTIFICATION=none`. Ring is the only provider.
fn tls_config(settings: &KafkaSettings) -> Result<ClientConfig, String> {
    let roots = match &settings.kafka_ssl_ca_location {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path, "KAFKA_SSL_CA_LOCATION")? {
                roots.add(certificate).map_err(|e| {
                    format!(
                        "KAFKA_SSL_CA_LOCATION: {} holds a certificate that cannot be a trusted \
                         root: {e}",
                        path.display()
                    )
                })?;
            }
            roots
        }
        None => RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("KAFKA_SECURITY_PROTOCOL: TLS is unavailable: {e}"))?;
    let builder = match settings
        .kafka_ssl_endpoint_identification
        .unwrap_or_default()
    {
        EndpointIdentification::Https => builder.with_root_certificates(roots),
        EndpointIdentification::None => {
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("KAFKA_SSL_CA_LOCATION: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyHostName(verifier)))
        }
    };
    match (
        &settings.kafka_ssl_certificate_location,
        &settings.kafka_ssl_key_location,
    ) {
        (Some(certificate), Some(key)) => {
            let chain = certificates(certificate, "KAFKA_SSL_CERTIFICATE_LOCATION")?;
            let key = private_key(key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "KAFKA_SSL_KEY_LOCATION does not fit KAFKA_SSL_CERTIFICATE_LOCATION \
                     (the key must be the certificate's own): {e}"
                )
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Every certificate in the PEM file `path`, or a line naming `setting` and the file.
fn certificates(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, setting)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{setting}: {} is not valid PEM: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{setting}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates)
}

/// The private key in the PEM file `path` (`KAFKA_SSL_KEY_LOCATION`).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let setting = "KAFKA_SSL_KEY_LOCATION";
    let pem = read(path, setting)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{setting}: {} holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1; \
             encrypted keys are not supported)",
            path.display()
        ),
        e => format!("{setting}: {} is not valid PEM: {e}", path.display()),
    })
}

/// The contents of a file a setting names; an error names both, never the contents.
fn read(path: &Path, setting: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{setting}: cannot read {}: {e}", path.display()))
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

/// `KAFKA_SSL_ENDPOINT_IDENTIFICATION=none`: the chain, dates and signatures are checked as
/// usual; only a certificate that names another host is let through.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // webpki checks the name last, once the chain and dates have passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

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
    use std::path::PathBuf;

    use rskafka::{client::error::Error as KafkaError, ConnectionError, SaslError};

    use super::*;
    use crate::cli::{Cli, CliError};

    /// Kafka settings as the command line makes them from `args`.
    fn parse(args: &[&str]) -> Result<KafkaSettings, String> {
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

    #[test]
    fn unusable_files_are_named_with_their_setting() {
        let dir = std::env::temp_dir().join(format!("rowsync-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let mut settings = parse(&["--kafka-security-protocol", "SSL"]).unwrap();
        settings.kafka_ssl_ca_location = Some(empty.clone());
        let error = client_builder(&settings).unwrap_err();
        assert!(
            error.starts_with("KAFKA_SSL_CA_LOCATION: ") && error.contains("holds no PEM"),
            "{error}"
        );
        settings.kafka_ssl_ca_location = Some(PathBuf::from("/nonexistent/ca.pem"));
        let error = client_builder(&settings).unwrap_err();
        assert!(
            error.starts_with("KAFKA_SSL_CA_LOCATION: cannot read /nonexistent/ca.pem"),
            "{error}"
        );
        settings.kafka_ssl_ca_location = None;
        settings.kafka_ssl_certificate_location = Some(empty.clone());
        settings.kafka_ssl_key_location = Some(empty);
        let error = client_builder(&settings).unwrap_err();
        assert!(
            error.starts_with("KAFKA_SSL_CERTIFICATE_LOCATION: "),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_public_roots_are_compiled_in() {
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
        let settings = parse(&["--kafka-security-protocol", "SSL"]).unwrap();
        assert!(tls_config(&settings).is_ok());
    }

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
