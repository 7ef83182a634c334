//! Settings: everything rowsync reads from the environment (or a `.env` file) at start-up.
//! The old Django service's variable names keep working; parsing and error messages come from clap.

use std::{net::SocketAddr, time::Duration};

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

impl DatabaseSettings {
    /// The PostgreSQL connection settings; the schema, when set, becomes the search path.
    pub fn pg_config(&self) -> anyhow::Result<tokio_postgres::Config> {
        let mut config = match &self.database_url {
            Some(url) => url
                .expose_secret()
                .parse::<tokio_postgres::Config>()
                // The parser's message never repeats the URL, so no password leaks here.
                .map_err(|e| {
                    anyhow::anyhow!("DATABASE_URL is not a valid connection string: {e}")
                })?,
            None => {
                let mut config = tokio_postgres::Config::new();
                config
                    .host(self.db_host.as_deref().unwrap_or("localhost"))
                    .port(self.db_port)
                    .dbname(self.db_name.as_deref().unwrap_or("postgres"))
                    .user(self.postgres_user.as_deref().unwrap_or("postgres"));
                if let Some(password) = &self.postgres_password {
                    config.password(password.expose_secret());
                }
                config
            }
        };
        if let Some(schema) = &self.db_schema {
            config.options(format!("-c search_path={schema}"));
        }
        config
            .application_name("rowsync")
            .connect_timeout(Duration::from_secs(5));
        Ok(config)
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
}

/// A token must be non-empty: an empty `API_TOKEN=` would otherwise lock nothing while looking set.
fn parse_token(value: &str) -> Result<SecretString, String> {
    if value.trim().is_empty() {
        return Err("must not be empty (unset it to leave the API open)".to_owned());
    }
    parse_secret(value)
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
