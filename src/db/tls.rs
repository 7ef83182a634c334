//! TLS to PostgreSQL with rustls (ring), so the static musl binary needs no OpenSSL: libpq's
//! `sslmode` semantics on top of tokio-postgres-rustls, client certificates, and errors that
//! name the setting to fix.
//!
//! tokio-postgres itself knows only disable, prefer and require; verify-ca and verify-full run as
//! its `Require` with [`Verifier`] doing what libpq does:
//!
//! | mode | certificate check |
//! |---|---|
//! | `prefer`, `require` | none, unless a root certificate is given: then the chain (libpq does so when `root.crt` exists) |
//! | `verify-ca` | the chain, against the given roots or Mozilla's |
//! | `verify-full` | the chain and the host name (DNS or IP address) |

use std::{fmt, future::Future, io, pin::Pin, sync::Arc};

use deadpool_postgres::PoolError;
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor, verify_server_name,
    },
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::ParsedCertificate,
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use tokio_postgres::{
    error::SqlState,
    tls::{MakeTlsConnect, TlsConnect},
    Socket,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PgTlsSettings, SettingPath, SslMode};

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
                Some(Arc::new(load_roots(file)?)),
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
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
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
                .map_err(|error| HandshakeError::new(&error, &host, &context))
        })
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
    fn new(error: &io::Error, host: &str, context: &Context) -> Self {
        let mode = context.mode;
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
                context.roots,
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

fn read(file: &SettingPath) -> Result<Vec<u8>, String> {
    std::fs::read(&file.path)
        .map_err(|e| format!("{}: cannot read {}: {e}", file.setting, file.path.display()))
}

/// Every certificate of a PEM file (at least one).
fn load_certs(file: &SettingPath) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{}: {} is not a PEM certificate file: {e}",
                file.setting,
                file.path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            file.setting,
            file.path.display()
        ));
    }
    Ok(certs)
}

fn load_roots(file: &SettingPath) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(file)? {
        roots.add(cert).map_err(|e| {
            format!(
                "{}: a certificate in {} cannot serve as a root: {e}",
                file.setting,
                file.path.display()
            )
        })?;
    }
    Ok(roots)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1). Errors never show the key.
fn load_key(file: &SettingPath) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{}: {} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
            file.setting,
            file.path.display()
        ),
        _ => format!(
            "{}: {} is not a PEM private key file",
            file.setting,
            file.path.display()
        ),
    })
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
    let text = one_line(&super::error_chain(error));
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
