//! The app against a broker that needs TLS or SASL: in-process, a [`TestApp`] (whose own Kafka
//! client is built from the same settings, so test records go through TLS and SASL too) put
//! through [`assert_round_trip`]; and the real binary configured through its environment, run
//! until it exits ([`run_to_exit`]) to see what a user sees when start-up fails.

use std::{process::Stdio, time::Duration};

use rowsync::config::Settings;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::{
    helpers::{drop_schema, eventually, fresh_settings, update, TestApp},
    process::{command, database_url_of, free_port},
};

/// Fresh settings (schema, topics) for a broker at `bootstrap`.
pub fn settings_for(bootstrap: &str) -> Settings {
    let mut settings = fresh_settings();
    settings.kafka.kafka_bootstrap_servers = vec![bootstrap.to_owned()];
    settings
}

/// The whole round trip through the secured broker: the upcreate worker applies records
/// produced to it, `write_to_kafka` publishes a row that the test reads back, and readiness
/// reports Kafka ok.
pub async fn assert_round_trip(app: &TestApp) {
    app.start_upcreate().await;
    let updates = app.settings.topics.updates_topic.clone();
    app.produce(&updates, 1, &[&update(1, "one"), &update(2, "two")])
        .await;
    eventually("the worker applies both records", || async {
        (app.rows().await.len() == 2).then_some(())
    })
    .await;
    let response = app.write_to_kafka(2).await;
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "two", "{body}");
    let objects = app.settings.topics.objects_to_kafka_topic.clone();
    let published = app.read_topic(&objects).await;
    assert_eq!(published.len(), 1, "{published:?}");
    let published: Value =
        serde_json::from_slice(published[0].1.record.value.as_deref().unwrap()).unwrap();
    assert_eq!(published["id"], 2, "{published}");
    let response = app.ready().await;
    let status = response.status();
    let ready: Value = response.json().await.expect("a JSON body");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["kafka"], "ok", "{ready}");
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
    let mut command = command(settings, free_port());
    command
        .env("DATABASE_URL", database_url_of(settings))
        .envs(security_env(settings))
        .envs(extra_env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
