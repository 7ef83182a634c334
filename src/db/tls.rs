//! TLS to PostgreSQL with rustls (ring), so the static musl binary needs no OpenSSL: libpq's
//! `sslmode` semantics on top of tokio-postgres-rustls, and client certificates.
//!
//! tokio-postgres itself knows only disable, prefer and require; verify-ca and verify-full run as
//! its `Require` with [`Verifier`] doing what libpq does:
//!
//! | mode | certificate check |
//! |---|---|
//! | `prefer`, `require` | none, unless a root certificate is given: then the chain (libpq does so when `root.crt` exists) |
//! | `verify-ca` | the chain, against the given roots or Mozilla's |
//! | `verify-full` | the chain and the host name (DNS or IP address) |
//!
//! What a failed connection means, a failed handshake included, is [`errors`](super::errors)'s
//! (its [`describe`] is re-exported here).

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor, verify_server_name,
    },
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::ParsedCertificate,
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::{
    tls::{MakeTlsConnect, TlsConnect},
    Socket,
};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use super::errors::{describe, describe_pool_error, HandshakeError};
use crate::config::{pem, PgTlsSettings, SslMode};

/// The TLS stream of a PostgreSQL connection.
pub type PgTlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
type InnerConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;

/// What a handshake error needs to say which setting to fix.
#[derive(Debug)]
struct Context {
    mode: SslMode,
    /// Where the trusted roots come from, e.g. `DB_SSLROOTCERT (/etc/ca.pem)`.
    roots: String,
}

/// Makes rowsync's TLS connector for each PostgreSQL connection ([`MakeTlsConnect`]).
#[derive(Clone)]
pub struct MakePgTls {
    inner: MakeRustlsConnect,
    context: Arc<Context>,
}

impl fmt::Debug for MakePgTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakePgTls")
            .field("mode", &self.context.mode)
            .field("roots", &self.context.roots)
            .finish()
    }
}

impl MakePgTls {
    /// Reads the certificate and key files the settings name; an error is one line naming the
    /// setting. With `disable` nothing is read (as libpq).
    pub fn new(settings: &PgTlsSettings) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let (roots, roots_text) = match (&settings.root_cert, settings.mode) {
            (_, SslMode::Disable) => (None, "none".to_owned()),
            (Some(file), _) => (
                Some(Arc::new(pem::roots(&file.path, file.setting)?)),
                format!("{} ({})", file.setting, file.path.display()),
            ),
            (None, SslMode::VerifyCa | SslMode::VerifyFull) => (
                Some(Arc::new(RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                })),
                "Mozilla's built-in roots (DB_SSLROOTCERT unset)".to_owned(),
            ),
            (None, SslMode::Prefer | SslMode::Require) => (None, "none".to_owned()),
        };
        let verifier = Arc::new(Verifier {
            roots,
            check_host: settings.mode == SslMode::VerifyFull,
            algorithms,
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS to PostgreSQL cannot be set up: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (settings.mode, &settings.client_cert, &settings.client_key) {
            (SslMode::Disable, _, _) | (_, None, None) => builder.with_no_client_auth(),
            (_, Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    pem::certificates(&cert.path, cert.setting)?,
                    pem::private_key(&key.path, key.setting)?,
                )
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => format!(
                        "{} and {} do not belong together: the key is not the certificate's",
                        cert.setting, key.setting
                    ),
                    other => format!(
                        "{} and {} cannot be used: {other}",
                        cert.setting, key.setting
                    ),
                })?,
            (_, Some(cert), None) => {
                return Err(format!(
                    "{} is set without DB_SSLKEY: a client certificate needs its private key",
                    cert.setting
                ))
            }
            (_, None, Some(key)) => {
                return Err(format!(
                    "{} is set without DB_SSLCERT: a private key needs its client certificate",
                    key.setting
                ))
            }
        };
        // What libpq 17 offers, so `sslnegotiation=direct` works with PostgreSQL 17; servers
        // before 17 ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Self {
            inner: MakeRustlsConnect::new(config),
            context: Arc::new(Context {
                mode: settings.mode,
                roots: roots_text,
            }),
        })
    }
}

impl MakeTlsConnect<Socket> for MakePgTls {
    type Stream = PgTlsStream;
    type TlsConnect = PgTlsConnect;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, host: &str) -> Result<PgTlsConnect, Self::Error> {
        let inner =
            <MakeRustlsConnect as MakeTlsConnect<Socket>>::make_tls_connect(&mut self.inner, host)?;
        Ok(PgTlsConnect {
            inner,
            host: host.to_owned(),
            context: Arc::clone(&self.context),
        })
    }
}

/// One connection's TLS handshake; its errors say which setting to fix.
pub struct PgTlsConnect {
    inner: InnerConnect,
    host: String,
    context: Arc<Context>,
}

impl TlsConnect<Socket> for PgTlsConnect {
    type Stream = PgTlsStream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<PgTlsStream, HandshakeError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let handshake = self.inner.connect(stream);
        let (host, context) = (self.host, self.context);
        Box::pin(async move {
            handshake
                .await
                .map_err(|error| HandshakeError::new(&error, &host, context.mode, &context.roots))
        })
    }
}

/// Checks the server's certificate as libpq's sslmode asks (see the module's table).
#[derive(Debug)]
struct Verifier {
    /// `None`: the certificate is not checked (prefer and require without a root certificate).
    roots: Option<Arc<RootCertStore>>,
    check_host: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let certificate = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &certificate,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.check_host {
            verify_server_name(&certificate, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    // The handshake's signatures are always checked: they prove the server holds the key of the
    // certificate it presented, whether or not that certificate is trusted.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
