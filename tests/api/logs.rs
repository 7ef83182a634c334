//! Logs: JSON lines with `LOG_FORMAT=json`; a worker's lines carry worker, topic and partition;
//! secrets never appear.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::{
    helpers::{eventually, fresh_settings, TestApp},
    process::RowsyncProcess,
};

#[tokio::test]
async fn json_logs_name_the_worker_topic_and_partition_and_never_the_password() {
    let mut settings = fresh_settings();
    let mut observer = TestApp::start(settings.clone()).await;
    observer.stop().await;
    // Trust authentication ignores the password, so it can be any secret.
    let url = settings
        .database
        .database_url
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    let with_password = url.replace("postgres@", "postgres:hunter2-secret@");
    settings.database.database_url = Some(SecretString::from(with_password));
    let logs =
        std::env::temp_dir().join(format!("rowsync-logs-{}.json", settings.database.schema()));
    let mut process = RowsyncProcess::start_with(
        &settings,
        &[
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("API_TOKEN", "token-secret"),
        ],
        Some(&logs),
    )
    .await;
    let http = reqwest::Client::new();
    let started = http
        .post(format!(
            "{}/api/some_models/start_upcreate_from_kafka",
            process.address
        ))
        .bearer_auth("token-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    observer
        .produce(&settings.topics.updates_topic, 2, &["not json"])
        .await;
    eventually("the invalid record counted", || async {
        let status: Value = http
            .get(format!("{}/api/workers/upcreate", process.address))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let invalid: u64 = status["partitions"]
            .as_array()?
            .iter()
            .filter_map(|p| p["records_invalid"].as_u64())
            .sum();
        (invalid == 1).then_some(())
    })
    .await;
    process.signal("TERM");
    assert_eq!(process.wait(Duration::from_secs(20)).await, Some(0));

    let text = std::fs::read_to_string(&logs).unwrap();
    let _ = std::fs::remove_file(&logs);
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let skipped = lines
        .iter()
        .find(|l| l["message"] == "skipping invalid record")
        .unwrap_or_else(|| panic!("no 'skipping invalid record' line in\n{text}"));
    let span = &skipped["span"];
    assert_eq!(span["worker"], "upcreate", "{skipped}");
    assert_eq!(
        span["topic"],
        settings.topics.updates_topic.as_str(),
        "{skipped}"
    );
    assert_eq!(span["partition"], 2, "{skipped}");
    assert!(lines.iter().any(|l| l["message"] == "serving"), "{text}");
    assert!(
        !text.contains("hunter2-secret"),
        "the database password leaked:\n{text}"
    );
    assert!(
        !text.contains("token-secret"),
        "the API token leaked:\n{text}"
    );
    observer.cleanup().await;
}
