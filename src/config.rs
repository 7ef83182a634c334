//! Settings: everything rowsync reads from the environment (or a `.env` file) at start-up.
//! The old Django service's variable names keep working; parsing and error messages come from clap.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};

/// All settings of one rowsync process.
///
/// Built once at start-up by [`Cli`](crate::cli::Cli) from environment variables, then shared
/// read-only. Tests build it directly.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub topics: TopicSettings,
    /// Address the REST API listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    pub listen_addr: SocketAddr,
    #[command(flatten)]
    pub auth: AuthSettings,
}

/// Who may call the API.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthSettings {
    /// Bearer token required by every request that changes state (start, stop, reset,
    /// write_to_kafka); unset, the API is open (a warning is logged at start-up). Never logged.
    #[arg(long, env = "API_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub api_token: Option<SecretString>,
    /// File holding the token (Docker and Kubernetes secrets), one trailing newline trimmed;
    /// instead of `API_TOKEN`, never with it.
    #[arg(long, env = "API_TOKEN_FILE", value_parser = parse_token_file, conflicts_with = "api_token")]
    pub api_token_file: Option<SecretString>,
    /// Require the token for reads too (listing rows and workers).
    #[arg(long, env = "API_TOKEN_FOR_READS", default_value_t = false, action = clap::ArgAction::Set)]
    pub api_token_for_reads: bool,
}

/// Where PostgreSQL is and how rowsync uses it.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseSettings {
    /// Full connection string (`postgres://user:password@host:port/db`); overrides the `DB_*` parts.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Option<SecretString>,
    /// PostgreSQL host.
    #[arg(long, env = "DB_HOST", required_unless_present = "database_url")]
    pub db_host: Option<String>,
    /// PostgreSQL port.
    #[arg(long, env = "DB_PORT", default_value_t = 5432)]
    pub db_port: u16,
    /// Database name.
    #[arg(long, env = "DB_NAME", required_unless_present = "database_url")]
    pub db_name: Option<String>,
    /// PostgreSQL user.
    #[arg(long, env = "POSTGRES_USER", required_unless_present = "database_url")]
    pub postgres_user: Option<String>,
    /// PostgreSQL password (never logged).
    #[arg(long, env = "POSTGRES_PASSWORD", hide_env_values = true, value_parser = parse_secret)]
    pub postgres_password: Option<SecretString>,
    /// File holding the PostgreSQL password (Docker and Kubernetes secrets), one trailing newline
    /// trimmed; instead of `POSTGRES_PASSWORD`, never with it.
    #[arg(
        long,
        env = "POSTGRES_PASSWORD_FILE",
        value_parser = parse_secret_file,
        conflicts_with = "postgres_password"
    )]
    pub postgres_password_file: Option<SecretString>,
    /// TLS to PostgreSQL, as libpq's `sslmode`: `disable`, `prefer` (TLS when the server offers
    /// it, the default), `require` (TLS; the certificate is checked only against an explicit
    /// `DB_SSLROOTCERT`), `verify-ca` (the chain) or `verify-full` (the chain and the host name).
    /// An `sslmode` in `DATABASE_URL` wins.
    #[arg(long, env = "DB_SSLMODE", value_enum)]
    pub db_sslmode: Option<SslMode>,
    /// PEM file of the certificate authorities trusted for the server's certificate (default:
    /// Mozilla's roots, built in). An `sslrootcert` in `DATABASE_URL` wins.
    #[arg(long, env = "DB_SSLROOTCERT")]
    pub db_sslrootcert: Option<PathBuf>,
    /// PEM file of the client certificate (with its chain) to present; needs `DB_SSLKEY`.
    /// An `sslcert` in `DATABASE_URL` wins.
    #[arg(long, env = "DB_SSLCERT")]
    pub db_sslcert: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1). An `sslkey`
    /// in `DATABASE_URL` wins.
    #[arg(long, env = "DB_SSLKEY")]
    pub db_sslkey: Option<PathBuf>,
    /// Schema holding rowsync's tables (created if missing); PostgreSQL's search path when unset.
    #[arg(long, env = "DB_SCHEMA", value_parser = parse_identifier)]
    pub db_schema: Option<String>,
    /// Upper bound, in milliseconds, on any single PostgreSQL operation (a query, applying a batch).
    #[arg(long, env = "DB_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub db_timeout_ms: u64,
    /// Most connections the pool opens.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_pool_size: u32,
}

/// Where the Kafka brokers are and how rowsync talks to them.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list; overrides `KAFKA_HOST`/`KAFKA_PORT`.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", value_delimiter = ',')]
    pub kafka_bootstrap_servers: Vec<String>,
    /// Kafka broker host.
    #[arg(
        long,
        env = "KAFKA_HOST",
        required_unless_present = "kafka_bootstrap_servers"
    )]
    pub kafka_host: Option<String>,
    /// Kafka broker port.
    #[arg(long, env = "KAFKA_PORT", default_value_t = 9092)]
    pub kafka_port: u16,
    /// Partitions of each topic rowsync creates at start-up when it is missing.
    #[arg(long, env = "TOPIC_PARTITIONS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    pub topic_partitions: i32,
    /// Replication factor of each topic rowsync creates.
    #[arg(long, env = "TOPIC_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i16).range(1..))]
    pub topic_replication_factor: i16,
    /// Most bytes a worker fetches from one partition at once: the upper bound of a batch.
    #[arg(long, env = "KAFKA_FETCH_MAX_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(i32).range(1024..))]
    pub kafka_fetch_max_bytes: i32,
    /// Longest, in milliseconds, the broker may hold a worker's fetch open waiting for new
    /// records. Kafka answers as soon as records arrive; a broker that does not (tansu) adds up
    /// to this much latency.
    #[arg(long, env = "KAFKA_FETCH_MAX_WAIT_MS", default_value_t = 500, value_parser = clap::value_parser!(i32).range(1..=30_000))]
    pub kafka_fetch_max_wait_ms: i32,
    /// Upper bound, in milliseconds, on any single call to Kafka.
    #[arg(long, env = "KAFKA_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub kafka_request_timeout_ms: u64,
    /// Codec of the record batches rowsync writes (objects, response log, dead letters): `none`,
    /// `gzip`, `snappy`, `lz4` or `zstd`. Unset: none, except snappy for response-log batches of
    /// 256 KiB or more. Reading accepts every codec whatever this says.
    #[arg(long, env = "KAFKA_COMPRESSION", value_enum)]
    pub kafka_compression: Option<KafkaCompression>,
    /// How every connection to Kafka is made, as Kafka's `security.protocol` names it:
    /// `PLAINTEXT` (the default), `SSL` (TLS), `SASL_PLAINTEXT` (SASL authentication without
    /// TLS) or `SASL_SSL` (SASL authentication over TLS, what managed Kafka services expect).
    #[arg(
        long,
        env = "KAFKA_SECURITY_PROTOCOL",
        value_enum,
        ignore_case = true,
        default_value = "PLAINTEXT"
    )]
    pub kafka_security_protocol: KafkaSecurityProtocol,
    /// SASL mechanism (`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`); required with the `SASL_*`
    /// protocols, refused with the others.
    #[arg(long, env = "KAFKA_SASL_MECHANISM", value_enum, ignore_case = true)]
    pub kafka_sasl_mechanism: Option<KafkaSaslMechanism>,
    /// SASL user name; required with the `SASL_*` protocols.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// SASL password (never logged); or `KAFKA_SASL_PASSWORD_FILE`.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true, value_parser = parse_secret)]
    pub kafka_sasl_password: Option<SecretString>,
    /// File holding the SASL password (Docker and Kubernetes secrets), one trailing newline
    /// trimmed; instead of `KAFKA_SASL_PASSWORD`, never with it.
    #[arg(
        long,
        env = "KAFKA_SASL_PASSWORD_FILE",
        value_parser = parse_secret_file,
        conflicts_with = "kafka_sasl_password"
    )]
    pub kafka_sasl_password_file: Option<SecretString>,
    /// PEM file of the certificate authorities trusted to sign the brokers' certificates
    /// (instead of Mozilla's public roots, which are built in and the default).
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<PathBuf>,
    /// PEM file of rowsync's client certificate (and its chain), for brokers that require
    /// mutual TLS; needs `KAFKA_SSL_KEY_LOCATION`.
    #[arg(long, env = "KAFKA_SSL_CERTIFICATE_LOCATION")]
    pub kafka_ssl_certificate_location: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[arg(long, env = "KAFKA_SSL_KEY_LOCATION")]
    pub kafka_ssl_key_location: Option<PathBuf>,
    /// `https` (the default): a broker's certificate must name the host rowsync connects to;
    /// `none`: any certificate signed by a trusted CA is accepted (a warning is logged).
    #[arg(
        long,
        env = "KAFKA_SSL_ENDPOINT_IDENTIFICATION",
        value_enum,
        ignore_case = true
    )]
    pub kafka_ssl_endpoint_identification: Option<EndpointIdentification>,
}

/// A codec for the record batches rowsync writes, as Kafka's `compression.type` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaCompression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl KafkaCompression {
    /// The codec as rskafka names it.
    pub fn codec(self) -> rskafka::client::partition::Compression {
        use rskafka::client::partition::Compression;
        match self {
            KafkaCompression::None => Compression::NoCompression,
            KafkaCompression::Gzip => Compression::Gzip,
            KafkaCompression::Snappy => Compression::Snappy,
            KafkaCompression::Lz4 => Compression::Lz4,
            KafkaCompression::Zstd => Compression::Zstd,
        }
    }
}

/// How rowsync's connections to Kafka are made, as Kafka's `security.protocol` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KafkaSecurityProtocol {
    /// Neither TLS nor authentication.
    #[default]
    #[value(name = "PLAINTEXT")]
    Plaintext,
    /// TLS.
    #[value(name = "SSL")]
    Ssl,
    /// SASL authentication without TLS.
    #[value(name = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// SASL authentication over TLS.
    #[value(name = "SASL_SSL")]
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// The name Kafka gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections use TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// A SASL mechanism, as Kafka's `sasl.mechanism` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaSaslMechanism {
    /// The password itself goes to the broker: use it over TLS only.
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl KafkaSaslMechanism {
    /// The name Kafka gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Whether a broker's certificate must name the host connected to (Kafka's
/// `ssl.endpoint.identification.algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EndpointIdentification {
    /// The certificate must name the host (or IP address) rowsync connects to.
    #[default]
    Https,
    /// Any certificate signed by a trusted CA is accepted, whatever it names.
    None,
}

/// The topics rowsync reads and writes.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicSettings {
    /// Topic the upsert worker reads: `{"id": 5, "name": "smth"}`.
    #[arg(long, env = "UPDATES_TOPIC", default_value = "updates")]
    pub updates_topic: String,
    /// Topic the delete worker reads: `{"id": 1}`.
    #[arg(long, env = "DELETE_TOPIC", default_value = "deletions")]
    pub delete_topic: String,
    /// Topic `write_to_kafka` publishes rows to.
    #[arg(
        long,
        env = "OBJECTS_TO_KAFKA_TOPIC",
        default_value = "some_model_objects"
    )]
    pub objects_to_kafka_topic: String,
    /// Topic every REST response under `/api` is logged to.
    #[arg(long, env = "REST_LOG_TOPIC", default_value = "django-responses")]
    pub rest_log_topic: String,
    /// Whether responses under `/api` are published to `REST_LOG_TOPIC` (`false`: not logged,
    /// and the topic is not created).
    #[arg(long, env = "REST_LOG_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub rest_log_enabled: bool,
    /// Whether records a worker cannot apply go to a dead-letter topic (`false`: logged,
    /// counted and skipped).
    #[arg(long, env = "DEAD_LETTER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub dead_letter_enabled: bool,
    /// Dead-letter topic of the upsert worker (default `<UPDATES_TOPIC>.dlq`).
    #[arg(long, env = "UPDATES_DLQ_TOPIC")]
    pub updates_dlq_topic: Option<String>,
    /// Dead-letter topic of the delete worker (default `<DELETE_TOPIC>.dlq`).
    #[arg(long, env = "DELETE_DLQ_TOPIC")]
    pub delete_dlq_topic: Option<String>,
}

impl TopicSettings {
    /// The dead-letter topic for records of `source`, unless dead-lettering is off.
    pub fn dead_letter_topic(&self, source: &str) -> Option<String> {
        if !self.dead_letter_enabled {
            return None;
        }
        let configured = if source == self.updates_topic {
            self.updates_dlq_topic.clone()
        } else if source == self.delete_topic {
            self.delete_dlq_topic.clone()
        } else {
            None
        };
        Some(configured.unwrap_or_else(|| format!("{source}.dlq")))
    }
}

/// TLS to PostgreSQL, as libpq's `sslmode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, plaintext otherwise (libpq's default).
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is checked only against an explicit root certificate.
    Require,
    /// TLS, and the server's certificate chains to a trusted root (any host name).
    VerifyCa,
    /// TLS, the chain is trusted and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The name libpq gives this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn from_libpq(value: &str) -> Option<Self> {
        [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ]
        .into_iter()
        .find(|mode| mode.as_str() == value)
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file named by a setting, with the setting's name for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingPath {
    pub path: PathBuf,
    /// `DB_SSLROOTCERT`, or `sslrootcert in DATABASE_URL`, …
    pub setting: &'static str,
}

/// How rowsync secures its PostgreSQL connections: the mode and the files it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTlsSettings {
    pub mode: SslMode,
    /// Trusted roots; `None`: Mozilla's (for verify-*) or no check (prefer, require).
    pub root_cert: Option<SettingPath>,
    pub client_cert: Option<SettingPath>,
    pub client_key: Option<SettingPath>,
}

/// Everything needed to open a PostgreSQL connection.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// For tokio-postgres: the TLS parameters it does not know are taken out, and verify-* is
    /// `Require` (the verifier does the rest).
    pub config: tokio_postgres::Config,
    pub tls: PgTlsSettings,
}

impl DatabaseSettings {
    /// The PostgreSQL connection settings; the schema, when set, becomes the search path.
    ///
    /// `DATABASE_URL`'s own parameters win; `DB_SSL*` and `POSTGRES_PASSWORD(_FILE)` fill in
    /// what it does not say. Errors never repeat the URL (it may hold a password).
    pub fn pg_config(&self) -> anyhow::Result<PgSettings> {
        let (mut config, from_url) = match &self.database_url {
            Some(url) => {
                let (rest, params) = split_tls_params(url.expose_secret()).map_err(|e| {
                    anyhow::anyhow!("DATABASE_URL is not a valid connection string: {e}")
                })?;
                let config = rest
                    .parse::<tokio_postgres::Config>()
                    // The parser's message never repeats the URL, so no password leaks here.
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "DATABASE_URL is not a valid connection string: {}",
                            crate::db::error_chain(&e)
                        )
                    })?;
                (config, params)
            }
            None => {
                let mut config = tokio_postgres::Config::new();
                config
                    .host(self.db_host.as_deref().unwrap_or("localhost"))
                    .port(self.db_port)
                    .dbname(self.db_name.as_deref().unwrap_or("postgres"))
                    .user(self.postgres_user.as_deref().unwrap_or("postgres"));
                (config, TlsParams::default())
            }
        };
        if config.get_password().is_none() {
            if let Some(password) = self.password() {
                config.password(password.expose_secret());
            }
        }
        if let Some(schema) = &self.db_schema {
            config.options(format!("-c search_path={schema}"));
        }
        if config.get_application_name().is_none() {
            config.application_name("rowsync");
        }
        config.connect_timeout(Duration::from_secs(5));

        let mode = match &from_url.sslmode {
            Some(value) => SslMode::from_libpq(value).ok_or_else(|| {
                anyhow::anyhow!(
                    "DATABASE_URL's sslmode must be disable, prefer, require, verify-ca or verify-full"
                )
            })?,
            None => self.db_sslmode.unwrap_or_default(),
        };
        let pick = |url: Option<String>,
                    url_setting: &'static str,
                    own: &Option<PathBuf>,
                    setting: &'static str| {
            url.map(|path| SettingPath {
                path: path.into(),
                setting: url_setting,
            })
            .or_else(|| own.clone().map(|path| SettingPath { path, setting }))
        };
        let tls = PgTlsSettings {
            mode,
            root_cert: pick(
                from_url.sslrootcert,
                "sslrootcert in DATABASE_URL",
                &self.db_sslrootcert,
                "DB_SSLROOTCERT",
            ),
            client_cert: pick(
                from_url.sslcert,
                "sslcert in DATABASE_URL",
                &self.db_sslcert,
                "DB_SSLCERT",
            ),
            client_key: pick(
                from_url.sslkey,
                "sslkey in DATABASE_URL",
                &self.db_sslkey,
                "DB_SSLKEY",
            ),
        };
        // PostgreSQL offers no TLS over Unix-domain sockets; libpq ignores sslmode there.
        #[cfg(unix)]
        let only_sockets = config.get_hostaddrs().is_empty()
            && !config.get_hosts().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)));
        #[cfg(not(unix))]
        let only_sockets = false;
        config.ssl_mode(match tls.mode {
            _ if only_sockets => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        Ok(PgSettings { config, tls })
    }

    /// The password from `POSTGRES_PASSWORD` or `POSTGRES_PASSWORD_FILE` (never both).
    pub fn password(&self) -> Option<&SecretString> {
        self.postgres_password
            .as_ref()
            .or(self.postgres_password_file.as_ref())
    }

    /// Upper bound on any single PostgreSQL operation.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }

    /// The schema rowsync's tables live in.
    pub fn schema(&self) -> &str {
        self.db_schema.as_deref().unwrap_or("public")
    }
}

impl AuthSettings {
    /// The token from `API_TOKEN` or `API_TOKEN_FILE` (never both).
    pub fn token(&self) -> Option<&SecretString> {
        self.api_token.as_ref().or(self.api_token_file.as_ref())
    }
}

/// The TLS parameters of a connection string, which tokio-postgres does not know (it knows
/// only `sslmode` disable/prefer/require).
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
}

impl TlsParams {
    /// Takes `value` when `key` is a TLS parameter; `false` for any other key.
    fn take(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// Splits the TLS parameters off a connection string, in either of libpq's forms (URL or
/// `key=value` pairs); the rest goes to tokio-postgres. Errors never quote the string.
fn split_tls_params(connection: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let url_rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|prefix| connection.strip_prefix(prefix));
    let Some(rest) = url_rest else {
        return split_key_value_tls_params(connection);
    };
    // Where tokio-postgres's URL parser finds the query: after the credentials (up to the
    // first '@'), at the first '?'.
    let after_credentials = rest.find('@').map_or(0, |at| at + 1);
    let Some(query_at) = rest[after_credentials..]
        .find('?')
        .map(|q| connection.len() - rest.len() + after_credentials + q)
    else {
        return Ok((connection.to_owned(), params));
    };
    let mut kept = Vec::new();
    for pair in connection[query_at + 1..].split('&') {
        let taken = match pair.split_once('=') {
            Some((key, value)) => params.take(&percent_decode(key)?, percent_decode(value)?),
            None => false,
        };
        if !taken {
            kept.push(pair);
        }
    }
    let mut rest = connection[..query_at].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, params))
}

/// [`split_tls_params`] for `host=… sslmode=…` strings, read as tokio-postgres reads them.
fn split_key_value_tls_params(connection: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let mut kept = Vec::new();
    let mut chars = connection.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err("a keyword without `=`".to_owned());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err("an unterminated quoted value".to_owned()),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if !params.take(&key, value.clone()) {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), params))
}

/// `%XX` escapes decoded, as in a URL's query.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a malformed %-escape in a parameter")?;
            decoded.push(hex);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "a parameter that is not UTF-8".to_owned())
}

impl KafkaSettings {
    /// Bootstrap brokers: `KAFKA_BOOTSTRAP_SERVERS` if set, else `KAFKA_HOST:KAFKA_PORT`.
    pub fn bootstrap_servers(&self) -> Vec<String> {
        if self.kafka_bootstrap_servers.is_empty() {
            let host = self.kafka_host.as_deref().unwrap_or("localhost");
            vec![format!("{host}:{}", self.kafka_port)]
        } else {
            self.kafka_bootstrap_servers.clone()
        }
    }

    /// Upper bound on any single call to Kafka.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_request_timeout_ms)
    }

    /// The SASL password, from `KAFKA_SASL_PASSWORD` or `KAFKA_SASL_PASSWORD_FILE`.
    pub fn sasl_password(&self) -> Option<&SecretString> {
        self.kafka_sasl_password
            .as_ref()
            .or(self.kafka_sasl_password_file.as_ref())
    }
}

/// A token must be non-empty: an empty `API_TOKEN=` would otherwise lock nothing while looking set.
fn parse_token(value: &str) -> Result<SecretString, String> {
    if value.trim().is_empty() {
        return Err("must not be empty (unset it to leave the API open)".to_owned());
    }
    parse_secret(value)
}

/// `API_TOKEN_FILE`: [`parse_secret_file`], and like `API_TOKEN` never blank.
fn parse_token_file(path: &str) -> Result<SecretString, String> {
    let token = parse_secret_file(path)?;
    if token.expose_secret().trim().is_empty() {
        return Err(format!("{path} holds only whitespace"));
    }
    Ok(token)
}

fn parse_secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_owned()))
}

/// A secret read from a file (the Docker and Kubernetes secrets convention, `*_FILE`): its
/// contents with one trailing newline trimmed. Errors name the file, never its contents.
pub fn parse_secret_file(path: &str) -> Result<SecretString, String> {
    let contents = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let secret = contents
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&contents);
    if secret.is_empty() {
        return Err(format!("{path} is empty"));
    }
    Ok(SecretString::from(secret.to_owned()))
}

/// A schema name must be a plain lowercase identifier: it is spliced into SQL and options.
fn parse_identifier(value: &str) -> Result<String, String> {
    let mut chars = value.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if valid_start
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && value.len() <= 63
    {
        Ok(value.to_owned())
    } else {
        Err("must be a lowercase identifier ([a-z_][a-z0-9_]*, at most 63 bytes)".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, CliError};

    /// A file under the temp dir holding `contents`, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("rowsync-config-test-{}-{n}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, CliError> {
        let base = ["rowsync", "--kafka-host", "k"];
        Cli::try_parse_args(base.iter().chain(args))
    }

    fn database(args: &[&str]) -> DatabaseSettings {
        parse(args).expect("valid arguments").settings.database
    }

    fn invalid(args: &[&str]) -> String {
        match parse(args) {
            Err(CliError::Invalid(line)) => line,
            Err(other) => panic!("expected an invalid-setting error, got {other:?}"),
            Ok(_) => panic!("expected an invalid-setting error, got valid settings"),
        }
    }

    const URL: &str = "--database-url";

    #[test]
    fn a_secret_file_loses_exactly_one_trailing_newline() {
        for (contents, secret) in [
            ("hunter2\n", "hunter2"),
            ("hunter2\r\n", "hunter2"),
            ("hunter2", "hunter2"),
            ("hunter2\n\n", "hunter2\n"),
            (" hunter2 \n", " hunter2 "),
        ] {
            let file = TempFile::new(contents);
            assert_eq!(
                parse_secret_file(file.path()).unwrap().expose_secret(),
                secret,
                "{contents:?}"
            );
        }
        let empty = TempFile::new("\n");
        assert!(parse_secret_file(empty.path()).is_err());
    }

    #[test]
    fn postgres_password_file_supplies_the_password() {
        let file = TempFile::new("s3cret-pw\n");
        let args = [
            "--db-host",
            "db",
            "--db-name",
            "x",
            "--postgres-user",
            "u",
            "--postgres-password-file",
            file.path(),
        ];
        let settings = database(&args);
        assert_eq!(settings.password().unwrap().expose_secret(), "s3cret-pw");
        let pg = settings.pg_config().unwrap();
        assert_eq!(pg.config.get_password(), Some(&b"s3cret-pw"[..]));
        assert!(!format!("{settings:?}").contains("s3cret-pw"));
    }

    #[test]
    fn a_password_file_fills_in_a_url_without_password_but_never_overrides_one() {
        let file = TempFile::new("from-file\n");
        let without = database(&[
            URL,
            "postgres://u@db/x",
            "--postgres-password-file",
            file.path(),
        ]);
        let pg = without.pg_config().unwrap();
        assert_eq!(pg.config.get_password(), Some(&b"from-file"[..]));
        let with = database(&[
            URL,
            "postgres://u:in-url@db/x",
            "--postgres-password-file",
            file.path(),
        ]);
        let pg = with.pg_config().unwrap();
        assert_eq!(pg.config.get_password(), Some(&b"in-url"[..]));
    }

    #[test]
    fn a_password_and_its_file_together_are_one_line_naming_both() {
        let file = TempFile::new("pw\n");
        let line = invalid(&[
            URL,
            "postgres://u@db/x",
            "--postgres-password",
            "hunter2",
            "--postgres-password-file",
            file.path(),
        ]);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("POSTGRES_PASSWORD_FILE"), "{line}");
        assert!(
            line.replace("POSTGRES_PASSWORD_FILE", "")
                .contains("POSTGRES_PASSWORD"),
            "{line}"
        );
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[test]
    fn api_token_file_is_the_token_and_conflicts_with_api_token() {
        let file = TempFile::new("token-from-file\n");
        let cli = parse(&[URL, "postgres://u@db/x", "--api-token-file", file.path()]).unwrap();
        assert_eq!(
            cli.settings.auth.token().unwrap().expose_secret(),
            "token-from-file"
        );
        let line = invalid(&[
            URL,
            "postgres://u@db/x",
            "--api-token",
            "t",
            "--api-token-file",
            file.path(),
        ]);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("API_TOKEN_FILE"), "{line}");
        assert!(
            line.replace("API_TOKEN_FILE", "").contains("API_TOKEN"),
            "{line}"
        );
    }

    #[test]
    fn a_blank_token_file_or_a_missing_one_is_one_line_naming_it() {
        let blank = TempFile::new("  \n");
        let line = invalid(&[URL, "postgres://u@db/x", "--api-token-file", blank.path()]);
        assert!(line.contains("API_TOKEN_FILE"), "{line}");
        let line = invalid(&[
            URL,
            "postgres://u@db/x",
            "--postgres-password-file",
            "/nonexistent/rowsync-pw",
        ]);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("POSTGRES_PASSWORD_FILE"), "{line}");
        assert!(line.contains("/nonexistent/rowsync-pw"), "{line}");
    }

    #[test]
    fn sslmode_defaults_to_prefer_and_verify_modes_run_as_require() {
        use tokio_postgres::config::SslMode as Pg;
        let pg = database(&[URL, "postgres://u@db/x"]).pg_config().unwrap();
        assert_eq!(pg.tls.mode, SslMode::Prefer);
        assert_eq!(pg.config.get_ssl_mode(), Pg::Prefer);
        for (mode, expected, pg_mode) in [
            ("disable", SslMode::Disable, Pg::Disable),
            ("prefer", SslMode::Prefer, Pg::Prefer),
            ("require", SslMode::Require, Pg::Require),
            ("verify-ca", SslMode::VerifyCa, Pg::Require),
            ("verify-full", SslMode::VerifyFull, Pg::Require),
        ] {
            let from_env = database(&[URL, "postgres://u@db/x", "--db-sslmode", mode])
                .pg_config()
                .unwrap();
            assert_eq!(from_env.tls.mode, expected, "{mode}");
            assert_eq!(from_env.config.get_ssl_mode(), pg_mode, "{mode}");
            let url = format!("postgres://u@db/x?sslmode={mode}");
            let from_url = database(&[URL, &url]).pg_config().unwrap();
            assert_eq!(from_url.tls.mode, expected, "{mode}");
            assert_eq!(from_url.config.get_ssl_mode(), pg_mode, "{mode}");
        }
    }

    #[test]
    fn the_url_tls_parameters_win_over_the_db_ssl_settings() {
        let url = "postgres://u:pw@db:6432/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem\
                   &application_name=mine&sslcert=/c.pem&sslkey=/k.pem";
        let settings = database(&[
            URL,
            url,
            "--db-sslmode",
            "disable",
            "--db-sslrootcert",
            "/other/ca.pem",
            "--db-sslcert",
            "/other/c.pem",
            "--db-sslkey",
            "/other/k.pem",
        ]);
        let pg = settings.pg_config().unwrap();
        assert_eq!(pg.tls.mode, SslMode::VerifyFull);
        let root = pg.tls.root_cert.unwrap();
        assert_eq!(root.path, PathBuf::from("/etc/ca.pem"));
        assert_eq!(root.setting, "sslrootcert in DATABASE_URL");
        assert_eq!(pg.tls.client_cert.unwrap().path, PathBuf::from("/c.pem"));
        assert_eq!(pg.tls.client_key.unwrap().path, PathBuf::from("/k.pem"));
        // The rest still reaches tokio-postgres; the URL's application name is kept.
        assert_eq!(pg.config.get_application_name(), Some("mine"));
        assert_eq!(pg.config.get_ports(), [6432]);
        assert_eq!(pg.config.get_password(), Some(&b"pw"[..]));

        let settings = database(&[
            URL,
            "postgres://u@db/x",
            "--db-sslmode",
            "verify-ca",
            "--db-sslrootcert",
            "/other/ca.pem",
        ]);
        let pg = settings.pg_config().unwrap();
        assert_eq!(pg.tls.mode, SslMode::VerifyCa);
        let root = pg.tls.root_cert.unwrap();
        assert_eq!(root.path, PathBuf::from("/other/ca.pem"));
        assert_eq!(root.setting, "DB_SSLROOTCERT");
        assert_eq!(pg.config.get_application_name(), Some("rowsync"));
    }

    #[test]
    fn tls_parameters_come_out_of_key_value_connection_strings_too() {
        let settings = database(&[
            URL,
            r"host=db user=u password='a b\'c\\' sslmode=verify-ca sslrootcert='/a b/ca.pem' dbname=x",
        ]);
        let pg = settings.pg_config().unwrap();
        assert_eq!(pg.tls.mode, SslMode::VerifyCa);
        assert_eq!(pg.tls.root_cert.unwrap().path, PathBuf::from("/a b/ca.pem"));
        assert_eq!(pg.config.get_password(), Some(&br"a b'c\"[..]));
        assert_eq!(pg.config.get_dbname(), Some("x"));
    }

    #[test]
    fn a_bad_sslmode_in_the_url_names_it_without_echoing_the_url() {
        let settings = database(&[URL, "postgres://u:hunter2@db/x?sslmode=verify-everything"]);
        let error = format!("{:#}", settings.pg_config().unwrap_err());
        assert!(error.contains("sslmode"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let settings = database(&[URL, "postgres://u:hunter2@db/x?sslcrl=/x"]);
        let error = format!("{:#}", settings.pg_config().unwrap_err());
        assert!(error.contains("DATABASE_URL"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let line = invalid(&[URL, "postgres://u@db/x", "--db-sslmode", "verify"]);
        assert!(line.contains("DB_SSLMODE"), "{line}");
        assert!(line.contains("verify-full"), "{line}");
    }

    #[test]
    fn a_question_mark_in_the_password_does_not_start_the_query() {
        let (rest, params) =
            split_tls_params("postgres://u:p?w@db/x?sslmode=require&connect_timeout=3").unwrap();
        assert_eq!(rest, "postgres://u:p?w@db/x?connect_timeout=3");
        assert_eq!(params.sslmode.as_deref(), Some("require"));
        let (rest, params) = split_tls_params("postgresql://db/x?sslmode=disable").unwrap();
        assert_eq!(rest, "postgresql://db/x");
        assert_eq!(params.sslmode.as_deref(), Some("disable"));
    }

    #[test]
    fn unix_socket_hosts_never_use_tls_as_in_libpq() {
        let pg = database(&[
            URL,
            "host=/var/run/postgresql user=u dbname=x sslmode=require",
        ])
        .pg_config()
        .unwrap();
        assert_eq!(
            pg.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }
}
