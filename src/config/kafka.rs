//! Where the Kafka brokers are and how rowsync talks to them: addresses, fetch and produce
//! tuning, and the security settings Kafka's own clients name (`security.protocol`, SASL, TLS).
//! Using them is `kafka`'s.

use std::{path::PathBuf, time::Duration};

use secrecy::SecretString;

use super::secrets::{parse_secret, parse_secret_file};

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
    /// Most record bytes (keys, values, headers) one worker may hold, fetched and not yet
    /// applied, over all its partitions (as librdkafka's `queued.max.messages.kbytes` bounds a
    /// consumer's queue). A partition fetches only when the bytes it expects (its last answer,
    /// or the worker's) fit under what the others hold, in turn; brokers answer with whole
    /// record batches, so an answer larger than asked for is counted as it is and the next
    /// fetches wait until enough is applied. Each of the N partitions a replica holds asks for
    /// at most a (2 N)th of it at once (never less than 16 KiB, never more than
    /// `KAFKA_FETCH_MAX_BYTES`). Bounds the memory a backlog can take whatever the number of
    /// partitions and the producer's batch size: decoded, records take several times their
    /// bytes, so the default (3 MiB) keeps a draining replica near 60 MB.
    #[arg(long, env = "KAFKA_FETCH_BUDGET_BYTES", default_value_t = 3 * 1024 * 1024, value_parser = clap::value_parser!(i64).range(65_536..))]
    pub kafka_fetch_budget_bytes: i64,
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
