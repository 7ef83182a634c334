//! rustls's configuration for Kafka's `SSL` and `SASL_SSL` protocols: the trusted roots
//! (`KAFKA_SSL_CA_LOCATION`, else Mozilla's, built in), the client certificate and key, and
//! host-name checks (`KAFKA_SSL_ENDPOINT_IDENTIFICATION`). Whether TLS is used at all is
//! [`security`](super::security)'s.

use std::sync::Arc;

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    pki_types::{CertificateDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::{pem, EndpointIdentification, KafkaSettings};

/// rustls's client configuration: the trusted roots (`KAFKA_SSL_CA_LOCATION`, else Mozilla's,
/// compiled in so a `FROM scratch` image needs no CA bundle), the client certificate when set,
/// host-name checks unless `KAFKA_SSL_ENDPOINT_IDENTIFICATION=none`. Ring is the only provider.
pub(super) fn client_config(settings: &KafkaSettings) -> Result<ClientConfig, String> {
    let roots = match &settings.kafka_ssl_ca_location {
        Some(path) => pem::roots(path, "KAFKA_SSL_CA_LOCATION")?,
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
            let chain = pem::certificates(certificate, "KAFKA_SSL_CERTIFICATE_LOCATION")?;
            let key = pem::private_key(key, "KAFKA_SSL_KEY_LOCATION")?;
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::kafka::security::{client_builder, tests::parse};

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
        assert!(client_config(&settings).is_ok());
    }
}
