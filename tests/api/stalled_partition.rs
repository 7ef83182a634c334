//! A partition that cannot make progress: a record batch no codec can read stalls its partition
//! (and only it) with the reason in the worker's status, readiness and metrics, retried with a
//! backoff capped at a minute and a few log lines, until `reset_offsets` moves past it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{
    helpers::{eventually, fresh_settings, pairs, update, TestApp},
    process::RowsyncProcess,
    raw_kafka::produce_undecodable_batch,
};

/// How long the test watches a stalled partition.
const HOLD: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_undecodable_batch_stalls_its_partition_visibly_with_capped_backoff_until_reset() {
    let settings = fresh_settings();
    let topic = settings.topics.updates_topic.clone();
    let mut app = TestApp::start(settings.clone()).await;
    app.produce(&topic, 0, &[&update(1, "before")]).await;
    let bad = produce_undecodable_batch(&settings.kafka.bootstrap_servers()[0], &topic, 0).await;
    app.produce(&topic, 0, &[&update(2, "after")]).await;
    app.produce(&topic, 1, &[&update(3, "other partition")])
        .await;
    app.stop().await;

    let logs =
        std::env::temp_dir().join(format!("rowsync-stall-{}.json", settings.database.schema()));
    let mut process = RowsyncProcess::start_with(
        &settings,
        &[("LOG_FORMAT", "json"), ("RUST_LOG", "info")],
        Some(&logs),
    )
    .await;
    process.start_upcreate().await;

    // Everything before the bad batch, and every other partition, is applied; partition 0
    // stalls at the bad batch.
    let stalled_at = Instant::now();
    let status = eventually("partition 0 stalled at the bad batch", || async {
        let status = process.worker("upcreate").await;
        let partition = status["partitions"]
            .as_array()?
            .iter()
            .find(|p| p["partition"] == 0)?
            .clone();
        (partition["stalled_at_offset"] == bad).then_some(status)
    })
    .await;
    assert_eq!(status["state"], "stalled", "{status}");
    let rows = pairs(&process.rows().await);
    assert!(rows.contains(&(1, "before".to_owned())), "{rows:?}");
    assert!(
        rows.contains(&(3, "other partition".to_owned())),
        "{rows:?}"
    );
    assert!(!rows.iter().any(|(id, _)| *id == 2), "{rows:?}");

    // Held for a minute: a handful of attempts, never a flood.
    tokio::time::sleep(HOLD.saturating_sub(stalled_at.elapsed())).await;
    let status = process.worker("upcreate").await;
    let partition = status["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["partition"] == 0)
        .unwrap()
        .clone();
    let attempts = partition["failed_attempts"].as_u64().unwrap();
    assert!((3..=8).contains(&attempts), "{partition}");
    assert_eq!(partition["stalled_at_offset"], bad, "{partition}");
    assert!(
        partition["last_error"].as_str().unwrap().contains("gzip")
            || partition["last_error"].as_str().unwrap().contains("decod"),
        "{partition}"
    );
    assert!(
        partition["failing_since"].as_str().unwrap() < partition["last_error_at"].as_str().unwrap(),
        "{partition}"
    );
    assert_eq!(partition["records_applied"], 1, "{partition}");

    // Readiness names the worker and the partition (and stays 200: the API that fixes it
    // must stay reachable); the metric says stalled.
    let ready = process.ready().await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    let workers = ready["checks"]["workers"].as_str().unwrap();
    assert!(
        workers.contains("upcreate")
            && workers.contains("partition 0")
            && workers.contains(&format!("offset {bad}")),
        "{ready}"
    );
    assert_eq!(ready["status"], "degraded", "{ready}");
    let metrics = process.metrics().await;
    let stalled_line = format!(
        "rowsync_partition_stalled{{worker=\"upcreate\",topic=\"{topic}\",partition=\"0\"}} 1"
    );
    assert!(metrics.contains(&stalled_line), "{metrics}");

    // The way out: stop, reset past the batch, start.
    process.stop_upcreate().await;
    let reset = process
        .reset_offsets("upcreate", &json!({"to": {"0": bad + 1}}))
        .await;
    assert_eq!(reset.status(), 200, "{}", reset.text().await.unwrap());
    process.start_upcreate().await;
    eventually("the record after the bad batch applied", || async {
        pairs(&process.rows().await)
            .contains(&(2, "after".to_owned()))
            .then_some(())
    })
    .await;
    let status = process.worker("upcreate").await;
    assert_eq!(status["state"], "running", "{status}");
    let ready: Value = process.ready().await.json().await.unwrap();
    assert_eq!(ready["checks"]["workers"], "ok", "{ready}");

    process.signal("TERM");
    assert_eq!(process.wait(Duration::from_secs(20)).await, Some(0));
    let text = std::fs::read_to_string(&logs).unwrap();
    let _ = std::fs::remove_file(&logs);
    let about_partition_0: Vec<&str> = text
        .lines()
        .filter(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            let level = line["level"].as_str().unwrap_or_default();
            let partition = line
                .get("partition")
                .or_else(|| line["span"].get("partition"));
            matches!(level, "WARN" | "ERROR") && partition == Some(&json!(0))
        })
        .collect();
    // The first line, at most one a minute after it, and none per attempt.
    assert!(
        (1..=3).contains(&about_partition_0.len()),
        "{} warning lines about partition 0 in {HOLD:?}:\n{}",
        about_partition_0.len(),
        about_partition_0.join("\n")
    );
    app.cleanup().await;
}
