//! Shared test harness: `spawn_app` starts the real app against a fresh schema and fresh topics;
//! helpers produce to and read back from Kafka, call each endpoint, and wait with deadlines.

use std::{future::Future, sync::Arc, time::Duration};

use rand::Rng;
use rowsync::{
    app::Application,
    config::{AuthSettings, DatabaseSettings, KafkaSettings, Settings, TopicSettings},
    model::Row,
};
use rskafka::{
    client::{
        partition::{Compression, OffsetAt, UnknownTopicHandling},
        Client, ClientBuilder,
    },
    record::{Record, RecordAndOffset},
};
use secrecy::SecretString;
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

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

/// A running app plus direct clients of its PostgreSQL schema and Kafka topics.
pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    pub http: reqwest::Client,
    pub db: tokio_postgres::Client,
    pub kafka: Arc<Client>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
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
        listen_addr: "127.0.0.1:0".parse().expect("a valid address"),
        auth: AuthSettings::default(),
    }
}

/// Starts the app on port 0 against a fresh schema and fresh topics.
pub async fn spawn_app() -> TestApp {
    TestApp::start(fresh_settings()).await
}

impl TestApp {
    /// Starts the app with these settings (a restart passes the previous app's settings).
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
        let address = format!("http://127.0.0.1:{}", app.port());
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
        let kafka = ClientBuilder::new(settings.kafka.bootstrap_servers())
            .build()
            .await
            .expect("the broker is up (run scripts/dev-deps)");

        TestApp {
            address,
            settings,
            http: reqwest::Client::new(),
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

    /// Stops the app and removes its schema and topics.
    pub async fn cleanup(mut self) {
        self.stop().await;
        let schema = self.settings.database.schema().to_owned();
        self.db
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .expect("dropping the test schema");
        let controller = self.kafka.controller_client().expect("controller client");
        let topics = &self.settings.topics;
        for topic in [
            &topics.updates_topic,
            &topics.delete_topic,
            &topics.objects_to_kafka_topic,
            &topics.rest_log_topic,
        ] {
            let _ = controller.delete_topic(topic.as_str(), 5_000).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET sent")
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .send()
            .await
            .expect("POST sent")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE sent")
    }

    /// `GET /api/some_models/`, asserting 200.
    pub async fn rows(&self) -> Vec<Row> {
        let response = self.get("/api/some_models/").await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("an array of rows")
    }

    /// POSTs to a start/stop path and checks the answer names the worker and its state.
    pub async fn control(&self, path: &str, worker: &str, state: &str) {
        let response = self.post(path).await;
        assert_eq!(response.status(), 200, "POST {path}");
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["worker"], worker, "{body}");
        assert_eq!(body["state"], state, "{body}");
    }

    pub async fn start_upcreate(&self) {
        self.control(
            "/api/some_models/start_upcreate_from_kafka/",
            "upcreate",
            "running",
        )
        .await;
    }

    pub async fn stop_upcreate(&self) {
        self.control(
            "/api/some_models/stop_upcreate_from_kafka/",
            "upcreate",
            "stopped",
        )
        .await;
    }

    pub async fn start_delete(&self) {
        let response = self
            .delete("/api/some_models/start_delete_from_kafka/")
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["worker"], "delete");
        assert_eq!(body["state"], "running");
    }

    pub async fn stop_delete(&self) {
        self.control(
            "/api/some_models/stop_delete_from_kafka/",
            "delete",
            "stopped",
        )
        .await;
    }

    /// `GET /api/workers/{name}/` as JSON.
    pub async fn worker(&self, name: &str) -> Value {
        let response = self.get(&format!("/api/workers/{name}/")).await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON body")
    }

    /// Sum of one per-partition counter of a worker.
    pub async fn worker_total(&self, name: &str, counter: &str) -> u64 {
        let worker = self.worker(name).await;
        worker["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| p[counter].as_u64().expect("a counter"))
            .sum()
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
        let client = self
            .kafka
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

    /// Every record of every partition of `topic`, as (partition, record).
    pub async fn read_topic(&self, topic: &str) -> Vec<(i32, RecordAndOffset)> {
        let mut all = Vec::new();
        for partition in 0..PARTITIONS {
            let client = self
                .kafka
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

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
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
