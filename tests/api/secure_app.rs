//! The app against a broker that needs TLS or SASL: in-process ([`SecureApp`], whose own Kafka
//! client is built from the same settings, so test records go through TLS and SASL too), and
//! the real binary configured through its environment, run until it exits ([`run_to_exit`]) to
//! see what a user sees when start-up fails.

use std::{process::Stdio, sync::Arc, time::Duration};

use rowsync::{app::Application, config::Settings, kafka::security::client_builder};
use rskafka::{
    client::{
        partition::{Compression, OffsetAt, UnknownTopicHandling},
        Client,
    },
    record::Record,
};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::{process::Command, sync::oneshot, task::JoinHandle};

use crate::{
    helpers::{database_url, eventually, fresh_settings, DEADLINE, PARTITIONS},
    test_broker::free_port,
};

/// Fresh settings (schema, topics) for a broker at `bootstrap`.
pub fn settings_for(bootstrap: &str) -> Settings {
    let mut settings = fresh_settings();
    settings.kafka.kafka_bootstrap_servers = vec![bootstrap.to_owned()];
    settings
}

/// A Kafka client of the test's own, with the app's TLS and SASL settings.
pub async fn test_client(settings: &Settings) -> Client {
    client_builder(&settings.kafka)
        .expect("valid Kafka settings")
        .build()
        .await
        .expect("the test client connects")
}

/// The app running in this process against a secured broker.
pub struct SecureApp {
    pub address: String,
    pub settings: Settings,
    pub http: reqwest::Client,
    pub kafka: Arc<Client>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl SecureApp {
    /// Builds and serves the app on port 0; panics with the cause if it does not start.
    pub async fn start(settings: Settings) -> Self {
        let app = Application::build(settings.clone())
            .await
            .unwrap_or_else(|e| panic!("the app did not start: {e:#}"));
        let address = format!("http://127.0.0.1:{}", app.port());
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = shutdown_rx.await;
        }));
        let kafka = Arc::new(test_client(&settings).await);
        Self {
            address,
            settings,
            http: reqwest::Client::new(),
            kafka,
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
        }
    }

    /// Stops the app and drops its schema (its topics go with the test's broker).
    pub async fn cleanup(mut self) {
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
        drop_schema(self.settings.database.schema()).await;
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    pub async fn post_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.address))
            .send()
            .await
            .expect("POST sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    /// Produces `values` to one partition, through the test's own (secured) client.
    pub async fn produce(&self, topic: &str, partition: i32, values: &[String]) {
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

    /// Every record value of every partition of `topic`.
    pub async fn read_values(&self, topic: &str) -> Vec<String> {
        let mut values = Vec::new();
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
                    if let Some(value) = record.record.value {
                        values.push(String::from_utf8_lossy(&value).into_owned());
                    }
                }
            }
        }
        values
    }

    /// The whole round trip through the secured broker: the upcreate worker applies records
    /// produced to it, `write_to_kafka` publishes a row that the test reads back, and readiness
    /// reports Kafka ok.
    pub async fn assert_round_trip(&self) {
        let (status, body) = self
            .post_json("/api/some_models/start_upcreate_from_kafka/")
            .await;
        assert_eq!(status, 200, "{body}");
        let updates = self.settings.topics.updates_topic.clone();
        self.produce(
            &updates,
            1,
            &[
                crate::helpers::update(1, "one"),
                crate::helpers::update(2, "two"),
            ],
        )
        .await;
        eventually("the worker applies both records", || async {
            let (_, rows) = self.get_json("/api/some_models/").await;
            (rows.as_array()?.len() == 2).then_some(())
        })
        .await;
        let (status, body) = self.post_json("/api/some_models/2/write_to_kafka/").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["name"], "two", "{body}");
        let objects = self.settings.topics.objects_to_kafka_topic.clone();
        let published = self.read_values(&objects).await;
        assert_eq!(published.len(), 1, "{published:?}");
        let published: Value = serde_json::from_str(&published[0]).unwrap();
        assert_eq!(published["id"], 2, "{published}");
        let (status, ready) = self.get_json("/health/ready").await;
        assert_eq!(status, 200, "{ready}");
        assert_eq!(ready["checks"]["kafka"], "ok", "{ready}");
    }
}

/// Drops a test schema.
pub async fn drop_schema(schema: &str) {
    let (db, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is up (run scripts/dev-deps)");
    tokio::spawn(connection);
    db.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .expect("dropping the test schema");
}

/// The Kafka security settings as the binary reads them from its environment.
pub fn security_env(settings: &Settings) -> Vec<(&'static str, String)> {
    let kafka = &settings.kafka;
    let mut env = vec![(
        "KAFKA_SECURITY_PROTOCOL",
        kafka.kafka_security_protocol.as_str().to_owned(),
    )];
    let mut add = |name, value: Option<String>| {
        if let Some(value) = value {
            env.push((name, value));
        }
    };
    add(
        "KAFKA_SASL_MECHANISM",
        kafka.kafka_sasl_mechanism.map(|m| m.as_str().to_owned()),
    );
    add("KAFKA_SASL_USERNAME", kafka.kafka_sasl_username.clone());
    add(
        "KAFKA_SASL_PASSWORD",
        kafka
            .kafka_sasl_password
            .as_ref()
            .map(|p| p.expose_secret().to_owned()),
    );
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    add("KAFKA_SSL_CA_LOCATION", path(&kafka.kafka_ssl_ca_location));
    add(
        "KAFKA_SSL_CERTIFICATE_LOCATION",
        path(&kafka.kafka_ssl_certificate_location),
    );
    add(
        "KAFKA_SSL_KEY_LOCATION",
        path(&kafka.kafka_ssl_key_location),
    );
    add(
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION",
        kafka.kafka_ssl_endpoint_identification.map(|e| {
            match e {
                rowsync::config::EndpointIdentification::Https => "https",
                rowsync::config::EndpointIdentification::None => "none",
            }
            .to_owned()
        }),
    );
    env
}

/// How the binary ended: its exit code and everything it wrote (stdout, then stderr).
#[derive(Debug)]
pub struct Exit {
    pub code: Option<i32>,
    pub output: String,
}

impl Exit {
    /// Asserts a failed start-up with exactly one error line, which contains each of `needles`;
    /// returns that line.
    pub fn one_error_line(&self, needles: &[&str]) -> String {
        assert_ne!(self.code, Some(0), "rowsync exited 0:\n{}", self.output);
        assert!(self.code.is_some(), "rowsync was killed:\n{}", self.output);
        let errors: Vec<&str> = self
            .output
            .lines()
            .filter(|line| line.contains(" ERROR ") || line.starts_with("error:"))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "expected exactly one error line:\n{}",
            self.output
        );
        for needle in needles {
            assert!(
                errors[0].contains(needle),
                "the error line lacks {needle:?}:\n{}",
                errors[0]
            );
        }
        eprintln!("error line: {}", errors[0]);
        errors[0].to_owned()
    }
}

/// Runs the binary with `settings` (as environment variables, like a deployment: the Kafka
/// security settings too) plus `extra_env`, with the default log filter, until it exits
/// (bounded). The schema it may have migrated is dropped.
pub async fn run_to_exit(settings: &Settings, extra_env: &[(&str, &str)]) -> Exit {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rowsync"));
    command
        .env_clear()
        .current_dir(std::env::temp_dir())
        .env(
            "DATABASE_URL",
            settings
                .database
                .database_url
                .as_ref()
                .expect("tests use a URL")
                .expose_secret(),
        )
        .env("DB_SCHEMA", settings.database.schema())
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            settings.kafka.bootstrap_servers().join(","),
        )
        .env("UPDATES_TOPIC", &settings.topics.updates_topic)
        .env("DELETE_TOPIC", &settings.topics.delete_topic)
        .env(
            "OBJECTS_TO_KAFKA_TOPIC",
            &settings.topics.objects_to_kafka_topic,
        )
        .env("REST_LOG_TOPIC", &settings.topics.rest_log_topic)
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .envs(security_env(settings))
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("starting rowsync");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("rowsync exits within 60 s")
        .expect("waiting for rowsync");
    drop_schema(settings.database.schema()).await;
    Exit {
        code: output.status.code(),
        output: strip_ansi(&format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// `text` without terminal colour codes (`ESC [ … m`), which text logs carry.
pub fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
