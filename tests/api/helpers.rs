//! Shared test harness: `spawn_app` starts the real app against a fresh schema and fresh topics;
//! helpers produce to and read back from Kafka, clean up, and wait with deadlines. Requests to
//! the app go through its [`ApiClient`] (`api_client`), which a [`TestApp`] derefs to.

use std::{fmt::Display, future::Future, ops::Deref, sync::Arc, time::Duration};

use rand::Rng;
use rowsync::{
    app::Application,
    config::{
        AuthSettings, DatabaseSettings, GroupSettings, HttpSettings, KafkaSettings,
        ListingSettings, Settings, TopicSettings,
    },
    kafka::security::client_builder,
    model::Row,
};
use rskafka::{
    client::{
        partition::{Compression, OffsetAt, UnknownTopicHandling},
        Client,
    },
    record::{Record, RecordAndOffset},
};
use secrecy::SecretString;
use tokio::{sync::oneshot, task::JoinHandle};

pub use crate::api_client::ApiClient;

/// Bound on every wait in a test.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Partitions of every test topic.
pub const PARTITIONS: i32 = 3;

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn bootstrap() -> String {
    std::env::var("TEST_KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A running app plus direct clients of its PostgreSQL schema and Kafka topics; derefs to the
/// client of its API.
pub struct TestApp {
    pub api: ApiClient,
    pub settings: Settings,
    /// The shared PostgreSQL (`TEST_DATABASE_URL`), with the app's schema as search path.
    pub db: tokio_postgres::Client,
    /// Built from the app's own Kafka settings, so TLS and SASL apply to the test's records too.
    pub kafka: Arc<Client>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Deref for TestApp {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

/// Settings for a fresh schema and fresh topic names.
pub fn fresh_settings() -> Settings {
    let suffix: String = {
        let mut rng = rand::rng();
        (0..10)
            .map(|_| char::from(b'a' + rng.random_range(0..26)))
            .collect()
    };
    Settings {
        database: DatabaseSettings {
            database_url: Some(SecretString::from(database_url())),
            db_host: None,
            db_port: 5432,
            db_name: None,
            postgres_user: None,
            postgres_password: None,
            postgres_password_file: None,
            db_sslmode: None,
            db_sslrootcert: None,
            db_sslcert: None,
            db_sslkey: None,
            db_schema: Some(format!("test_{suffix}")),
            db_pool_size: 8,
            db_pool_idle_timeout_ms: 5_000,
            // Short, so a hanging PostgreSQL shows as `retrying` well within a test's deadline.
            db_timeout_ms: 5_000,
        },
        kafka: KafkaSettings {
            kafka_bootstrap_servers: vec![bootstrap()],
            kafka_host: None,
            kafka_port: 9092,
            topic_partitions: PARTITIONS,
            topic_replication_factor: 1,
            kafka_request_timeout_ms: 10_000,
            kafka_fetch_max_bytes: 4 * 1024 * 1024,
            kafka_fetch_max_wait_ms: 500,
            kafka_fetch_budget_bytes: 3 * 1024 * 1024,
            kafka_compression: None,
            kafka_security_protocol: Default::default(),
            kafka_sasl_mechanism: None,
            kafka_sasl_username: None,
            kafka_sasl_password: None,
            kafka_sasl_password_file: None,
            kafka_ssl_ca_location: None,
            kafka_ssl_certificate_location: None,
            kafka_ssl_key_location: None,
            kafka_ssl_endpoint_identification: None,
        },
        topics: TopicSettings {
            updates_topic: format!("{suffix}.updates"),
            delete_topic: format!("{suffix}.deletions"),
            objects_to_kafka_topic: format!("{suffix}.some_model_objects"),
            rest_log_topic: format!("{suffix}.django-responses"),
            rest_log_enabled: true,
            dead_letter_enabled: true,
            updates_dlq_topic: None,
            delete_dlq_topic: None,
        },
        // Each test's replicas form groups of their own; short timeouts, so that a replica
        // that dies is replaced well within a test's deadline.
        group: GroupSettings {
            kafka_group_id_prefix: format!("test-{suffix}"),
            kafka_session_timeout_ms: 6_000,
            kafka_heartbeat_interval_ms: 1_000,
            kafka_rebalance_timeout_ms: 40_000,
            kafka_metadata_max_age_ms: 2_000,
            replica_id: format!("replica-{suffix}"),
            kafka_static_membership: false,
        },
        listen_addr: "127.0.0.1:0".parse().expect("a valid address"),
        auth: AuthSettings::default(),
        http: HttpSettings::default(),
        listing: ListingSettings::default(),
    }
}

/// Starts the app on port 0 against a fresh schema and fresh topics.
pub async fn spawn_app() -> TestApp {
    TestApp::start(fresh_settings()).await
}

/// A Kafka client of the test's own with `settings`' security (TLS, SASL) and brokers.
pub async fn kafka_client(settings: &KafkaSettings) -> Client {
    client_builder(settings)
        .expect("valid Kafka settings")
        .build()
        .await
        .expect("the broker is up (run scripts/dev-deps)")
}

impl TestApp {
    /// Starts the app with these settings (a restart passes the previous app's settings);
    /// panics with the cause if it does not start.
    pub async fn start(settings: Settings) -> TestApp {
        init_logs();
        let app = Application::build(settings.clone())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the app did not start: {e:#}\n\
                 Are PostgreSQL and the broker up? Run scripts/dev-deps."
                )
            });
        let api = ApiClient::on_port(app.port());
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = shutdown_rx.await;
        }));

        let mut pg_config: tokio_postgres::Config = database_url().parse().expect("a valid URL");
        pg_config.options(format!("-c search_path={}", settings.database.schema()));
        let (db, connection) = pg_config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL is up (run scripts/dev-deps)");
        tokio::spawn(connection);
        let kafka = kafka_client(&settings.kafka).await;

        TestApp {
            api,
            settings,
            db,
            kafka: Arc::new(kafka),
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
        }
    }

    /// Shuts the app down gracefully and waits until it has stopped.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the app stops within the deadline")
                .expect("the app task did not panic")
                .expect("the app stopped cleanly");
        }
    }

    /// Stops this app and starts a new one on the same schema and topics.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        TestApp::start(self.settings.clone()).await
    }

    /// Stops the app and removes its schema and topics (dead-letter topics included).
    pub async fn cleanup(mut self) {
        self.stop().await;
        let schema = self.settings.database.schema().to_owned();
        self.db
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .expect("dropping the test schema");
        delete_topics(&self.kafka, &self.settings.topics).await;
    }

    /// Inserts rows straight into the table.
    pub async fn insert_rows(&self, rows: &[(i64, &str)]) {
        for (id, name) in rows {
            self.db
                .execute(
                    "INSERT INTO some_model (id, name) VALUES ($1, $2)",
                    &[id, name],
                )
                .await
                .expect("inserting a row");
        }
    }

    /// Produces values, in this order, to one partition of a topic, in one request.
    pub async fn produce(&self, topic: &str, partition: i32, values: &[&str]) {
        produce(&self.kafka, topic, partition, values).await;
    }

    /// Every record of every partition of `topic`, as (partition, record).
    pub async fn read_topic(&self, topic: &str) -> Vec<(i32, RecordAndOffset)> {
        read_topic(&self.kafka, topic).await
    }
}

/// Produces unkeyed `values`, in this order, to one partition of `topic`, in one request.
pub async fn produce(kafka: &Client, topic: &str, partition: i32, values: &[&str]) {
    let client = kafka
        .partition_client(topic, partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let records = values
        .iter()
        .map(|v| Record {
            key: None,
            value: Some(v.as_bytes().to_vec()),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        })
        .collect();
    client
        .produce(records, Compression::NoCompression)
        .await
        .expect("producing test records");
}

/// Every record of every partition of `topic`, as (partition, record), in partition order.
pub async fn read_topic(kafka: &Client, topic: &str) -> Vec<(i32, RecordAndOffset)> {
    let mut all = Vec::new();
    for partition in 0..PARTITIONS {
        let client = kafka
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let end = client
            .get_offset(OffsetAt::Latest)
            .await
            .expect("latest offset");
        let mut offset = 0;
        while offset < end {
            let (records, _) = client
                .fetch_records(offset, 1..1_000_000, 100)
                .await
                .expect("fetching records");
            for record in records {
                offset = offset.max(record.offset + 1);
                all.push((partition, record));
            }
        }
    }
    all
}

/// Every topic the app may create for `topics`: the four it is given and both workers'
/// dead-letter topics.
pub fn all_topics(topics: &TopicSettings) -> Vec<String> {
    let dead_letters = |configured: &Option<String>, source: &str| {
        configured
            .clone()
            .unwrap_or_else(|| format!("{source}.dlq"))
    };
    vec![
        topics.updates_topic.clone(),
        topics.delete_topic.clone(),
        topics.objects_to_kafka_topic.clone(),
        topics.rest_log_topic.clone(),
        dead_letters(&topics.updates_dlq_topic, &topics.updates_topic),
        dead_letters(&topics.delete_dlq_topic, &topics.delete_topic),
    ]
}

/// Deletes every topic the app may have created for `topics` (one that is not there is no
/// error).
pub async fn delete_topics(kafka: &Client, topics: &TopicSettings) {
    let controller = kafka.controller_client().expect("controller client");
    for topic in all_topics(topics) {
        let _ = controller.delete_topic(topic, 5_000).await;
    }
}

/// Drops a test schema from the shared PostgreSQL, through a connection of its own.
pub async fn drop_schema(schema: &str) {
    let (db, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is up (run scripts/dev-deps)");
    tokio::spawn(connection);
    db.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .expect("dropping the test schema");
}

/// Removes what an app run with `settings` outside this process made: its topics on the
/// settings' broker, and its schema in the shared PostgreSQL.
pub async fn cleanup_settings(settings: &Settings) {
    delete_topics(&kafka_client(&settings.kafka).await, &settings.topics).await;
    drop_schema(settings.database.schema()).await;
}

/// With `RUST_LOG` set, the app's logs go to the test output (shown for failing tests).
fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("RUST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// What a check given to [`eventually`] returns: `Some`/`Ok` when done, with the value to
/// return; `None` when not yet, or `Err` saying what it saw instead (for the failure message).
pub trait Attempt {
    type Value;
    fn outcome(self) -> Result<Self::Value, Option<String>>;
}

impl<T> Attempt for Option<T> {
    type Value = T;

    fn outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Display> Attempt for Result<T, E> {
    type Value = T;

    fn outcome(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// Polls `check` until it is done, failing the test after [`DEADLINE`] (with what it last saw,
/// when it says).
pub async fn eventually<A, F, Fut>(what: &str, check: F) -> A::Value
where
    A: Attempt,
    F: FnMut() -> Fut,
    Fut: Future<Output = A>,
{
    eventually_within(DEADLINE, what, check).await
}

/// [`eventually`] with a deadline of its own.
pub async fn eventually_within<A, F, Fut>(within: Duration, what: &str, mut check: F) -> A::Value
where
    A: Attempt,
    F: FnMut() -> Fut,
    Fut: Future<Output = A>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = match check().await.outcome() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            match seen {
                Some(seen) => {
                    panic!("timed out after {within:?} waiting for {what}; last seen: {seen}")
                }
                None => panic!("timed out after {within:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An upsert message, `{"id": …, "name": …}`.
pub fn update(id: i64, name: &str) -> String {
    serde_json::json!({"id": id, "name": name}).to_string()
}

/// Rows as (id, name) pairs, for compact assertions.
pub fn pairs(rows: &[Row]) -> Vec<(i64, String)> {
    rows.iter().map(|r| (r.id, r.name.clone())).collect()
}
