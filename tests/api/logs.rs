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
    process.with_token("token-secret").start_upcreate().await;
    observer
        .produce(&settings.topics.updates_topic, 2, &["not json"])
        .await;
    eventually("the invalid record counted", || async {
        (process.worker_total("upcreate", "records_invalid").await == 1).then_some(())
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
