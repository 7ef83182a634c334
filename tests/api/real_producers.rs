//! Records from a real client library, as other services write them: librdkafka (the PyPI
//! package confluent-kafka, pinned in scripts/lib/requirements.txt) produces them through
//! scripts/lib/produce_real.py, a subprocess that prints what the broker acknowledged (partition,
//! offset, key, value, headers, codec, transaction) as JSON. Every compression codec, header
//! values that are null or empty, records without a key, an idempotent producer, and
//! transactions committed and aborted, whose control records (markers) sit in the log between
//! the data. The workers must apply each valid record exactly once in partition order, never
//! see a marker as a record (nothing counted invalid or dead-lettered), move every stored offset
//! to the partition's high watermark (past the last marker), and keep running without an error.
//!
//! The Python virtualenv is made on first use by scripts/lib/common.sh's `tools_venv` (remade
//! when the requirements change), never skipped.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
};

use serde::Deserialize;
use serde_json::Value;

use crate::{
    helpers::{eventually, pairs, spawn_app, TestApp, DEADLINE, PARTITIONS},
    implied_table::{last_upserts, rows_differ},
};

/// One record the driver produced, as the broker acknowledged it, or one it read back.
#[derive(Debug, Clone, Deserialize)]
struct Produced {
    partition: i32,
    offset: i64,
    key: Option<String>,
    /// `None`: a null value (a tombstone).
    value: Option<String>,
    /// In order; a `None` value is a header without a value (null), distinct from `Some("")`.
    headers: Vec<(String, Option<String>)>,
    #[serde(default)]
    codec: Option<String>,
    /// `committed` or `aborted` for a transactional producer's records, else `None`.
    #[serde(default)]
    transaction: Option<String>,
}

impl Produced {
    fn header(&self, name: &str) -> Option<&Option<String>> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// What librdkafka sent for one codec (its statistics).
#[derive(Debug, Deserialize)]
struct CodecStats {
    records: usize,
    value_bytes: u64,
    bytes_sent: u64,
    batches: u64,
    max_records_per_batch: u64,
}

/// Whether a read_committed librdkafka consumer saw aborted records: it does when the broker
/// answers fetches without the aborted-transactions list (tansu does).
#[derive(Debug, Deserialize)]
struct ReadCommitted {
    aborted_visible: usize,
}

/// The driver's summary of one run.
#[derive(Debug, Deserialize)]
struct Summary {
    records: Vec<Produced>,
    /// Per partition, as a fetch reports it once everything was produced.
    high_watermarks: Vec<i64>,
    #[serde(default)]
    codecs: BTreeMap<String, CodecStats>,
    #[serde(default)]
    read_committed: Option<ReadCommitted>,
}

/// The Python of the tools virtualenv (with confluent-kafka), installed or brought up to date
/// once per test process by scripts/lib/common.sh's `tools_venv`.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let output = std::process::Command::new("bash")
                .arg("-c")
                .arg("set -euo pipefail; . scripts/lib/common.sh; tools_venv")
                .arg("real_producers")
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .expect("running bash");
            assert!(
                output.status.success(),
                "installing the Python tools (scripts/lib/common.sh: tools_venv) failed"
            );
            let venv = String::from_utf8(output.stdout).expect("a UTF-8 path");
            Path::new(venv.trim()).join("bin/python")
        })
        .clone()
}

/// Runs scripts/lib/produce_real.py against the app's broker and returns its summary.
async fn driver(app: &TestApp, topic: &str, scenario: &str, extra: &[&str]) -> Summary {
    let python = tokio::task::spawn_blocking(python)
        .await
        .expect("the Python tools are installed");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/produce_real.py");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .args([
            "--bootstrap",
            &app.settings.kafka.bootstrap_servers().join(","),
        ])
        .args(["--topic", topic, "--scenario", scenario])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE * 2, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "produce_real.py --scenario {scenario} took over {:?}",
                DEADLINE * 2
            )
        })
        .expect("running produce_real.py");
    assert!(
        output.status.success(),
        "produce_real.py --scenario {scenario} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "produce_real.py printed no summary ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Every record of `topic` read back with librdkafka, at least `count` of them.
async fn read_back(app: &TestApp, topic: &str, count: usize) -> Vec<Produced> {
    driver(
        app,
        topic,
        "consume",
        &["--min-records", &count.to_string()],
    )
    .await
    .records
}

/// The rows `records` leave when applied as upserts: per id, its last record in partition order.
/// Every record must be a valid upsert.
fn expected_rows(records: &[&Produced]) -> BTreeMap<i64, String> {
    let (rows, invalid) = last_upserts(
        records
            .iter()
            .map(|r| (r.partition, r.offset, r.value.as_deref().map(str::as_bytes))),
    );
    assert_eq!(
        invalid, 0,
        "the driver produced invalid upserts: {records:?}"
    );
    rows
}

/// Sum of one per-partition counter of a worker's status.
fn total(worker: &Value, counter: &str) -> u64 {
    worker["partitions"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p[counter].as_u64()).sum())
        .unwrap_or(0)
}

/// Why the worker's stored offsets are not yet at the high watermarks, if they are not: every
/// partition's `next_offset` must equal the driver's high watermark (an empty partition may have
/// none yet), and the worker's own `high_watermark` must agree.
fn offsets_behind(worker: &Value, high_watermarks: &[i64]) -> Option<String> {
    let partitions = worker["partitions"].as_array().cloned().unwrap_or_default();
    for (partition, &high) in high_watermarks.iter().enumerate() {
        let status = partitions
            .iter()
            .find(|p| p["partition"] == partition as i64);
        let next = status.and_then(|p| p["next_offset"].as_i64());
        let at_end = match next {
            Some(next) => next == high,
            None => high == 0,
        };
        if !at_end {
            return Some(format!(
                "partition {partition}: next_offset {next:?}, high watermark {high}"
            ));
        }
        if let Some(theirs) = status.and_then(|p| p["high_watermark"].as_i64()) {
            if theirs != high {
                return Some(format!(
                    "partition {partition}: the worker's high_watermark {theirs}, the broker's {high}"
                ));
            }
        }
    }
    None
}

/// Waits until the table holds `expected` (exactly, or only among ids `keep` selects), `worker`
/// counts `applied` records and its stored offsets reached the high watermarks; returns its status.
async fn wait_applied(
    app: &TestApp,
    worker: &str,
    summary: &Summary,
    expected: &BTreeMap<i64, String>,
    keep: impl Fn(i64) -> bool,
    applied: u64,
) -> Value {
    eventually(
        &format!(
            "{worker}: {} rows as expected, {applied} records applied, offsets at {:?}",
            expected.len(),
            summary.high_watermarks
        ),
        || async {
            let status = app.worker(worker).await;
            let rows: BTreeMap<i64, String> = pairs(&app.rows().await)
                .into_iter()
                .filter(|(id, _)| keep(*id))
                .collect();
            if let Some(difference) = rows_differ(&rows, expected) {
                return Err(format!("{difference}; worker {status}"));
            }
            let counted = total(&status, "records_applied");
            if counted != applied {
                return Err(format!("{counted} records applied; worker {status}"));
            }
            if let Some(behind) = offsets_behind(&status, &summary.high_watermarks) {
                return Err(format!("{behind}; worker {status}"));
            }
            Ok(status)
        },
    )
    .await
}

/// The worker runs and reports no error, on itself or any partition.
fn assert_healthy(worker: &Value) {
    assert_eq!(worker["state"], "running", "{worker}");
    assert!(worker.get("last_error").is_none(), "{worker}");
    for partition in worker["partitions"].as_array().expect("partitions") {
        assert!(partition.get("last_error").is_none(), "{worker}");
    }
}

/// Valid data only: nothing counted invalid, and the dead-letter topic stays empty.
async fn assert_nothing_invalid(app: &TestApp, worker: &Value, topic: &str) {
    assert_eq!(total(worker, "records_invalid"), 0, "{worker}");
    assert_eq!(total(worker, "records_dead_lettered"), 0, "{worker}");
    let letters = read_back(app, &format!("{topic}.dlq"), 0).await;
    assert!(letters.is_empty(), "dead letters: {letters:#?}");
}

/// Upcreate worker, valid data: every record applied once, the rows its last records per id
/// leave, offsets at the high watermarks, nothing invalid.
async fn assert_all_upserts_applied(app: &TestApp, topic: &str, summary: &Summary) {
    let records: Vec<&Produced> = summary.records.iter().collect();
    let expected = expected_rows(&records);
    app.start_upcreate().await;
    let worker = wait_applied(
        app,
        "upcreate",
        summary,
        &expected,
        |_| true,
        records.len() as u64,
    )
    .await;
    assert_healthy(&worker);
    assert_nothing_invalid(app, &worker, topic).await;
}

#[tokio::test]
async fn librdkafka_batches_of_every_codec_are_applied_once_in_partition_order() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    let summary = driver(&app, &topic, "codecs", &[]).await;

    // The driver really sent each codec's records in batches, compressed.
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let stats = &summary.codecs[codec];
        assert!(stats.records >= 20, "{codec}: {stats:?}");
        assert!(stats.batches >= 1, "{codec}: {stats:?}");
        assert!(
            stats.max_records_per_batch >= 5,
            "{codec}: several records per batch: {stats:?}"
        );
        if codec == "none" {
            assert!(stats.bytes_sent > stats.value_bytes, "{codec}: {stats:?}");
        } else {
            assert!(
                stats.bytes_sent * 2 < stats.value_bytes,
                "{codec}: compressed to under half: {stats:?}"
            );
        }
        assert!(
            summary
                .records
                .iter()
                .any(|r| r.codec.as_deref() == Some(codec)),
            "{codec}"
        );
    }
    assert_all_upserts_applied(&app, &topic, &summary).await;
    app.cleanup().await;
}

#[tokio::test]
async fn records_with_null_and_empty_header_values_and_records_without_a_key_are_applied() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    let summary = driver(&app, &topic, "headers", &[]).await;
    let records = &summary.records;
    assert!(
        records.iter().any(|r| r.key.is_none()),
        "records without a key"
    );
    assert!(
        records
            .iter()
            .any(|r| r.key.is_some() && r.header("h") == Some(&None)),
        "keyed records with a null header value"
    );
    assert!(
        records
            .iter()
            .any(|r| r.header("e") == Some(&Some(String::new()))),
        "records with an empty header value"
    );
    assert!(
        records.iter().any(|r| r.headers.is_empty()),
        "records without headers"
    );
    assert_all_upserts_applied(&app, &topic, &summary).await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_idempotent_producers_records_are_applied_once() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    let summary = driver(&app, &topic, "idempotent", &[]).await;
    assert_all_upserts_applied(&app, &topic, &summary).await;
    app.cleanup().await;
}

/// A transactional producer commits and aborts transactions in turn over the three partitions,
/// so commit and abort markers (control records) sit between the data in every partition and
/// end each of them. Every committed record is applied, in partition order; no marker is seen
/// as a record (nothing invalid or dead-lettered); every stored offset reaches the high
/// watermark, i.e. moves past the last marker; the worker keeps running without an error.
///
/// Aborted records upsert ids of their own (from 1000), disjoint from the committed ones, so
/// the committed rows are asserted the same either way. That none of them is applied is
/// asserted only where the broker filters aborted transactions, which the driver tells by
/// reading the topic back with a read_committed librdkafka consumer: Apache Kafka does (the
/// fetch response lists aborted transactions), and then the table must hold exactly the
/// committed rows. tansu does not (it answers every fetch with an empty aborted-transactions
/// list), so there aborted records reach every consumer, rowsync's too, and are applied like
/// any other; aborted-transaction filtering is covered at the protocol level instead.
#[tokio::test]
async fn committed_transactions_are_applied_and_offsets_move_past_every_marker() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    let summary = driver(&app, &topic, "transactional", &[]).await;
    let committed: Vec<&Produced> = summary
        .records
        .iter()
        .filter(|r| r.transaction.as_deref() == Some("committed"))
        .collect();
    let aborted: Vec<&Produced> = summary
        .records
        .iter()
        .filter(|r| r.transaction.as_deref() == Some("aborted"))
        .collect();
    assert_eq!(committed.len() + aborted.len(), summary.records.len());
    assert!(!committed.is_empty() && !aborted.is_empty());
    for partition in 0..PARTITIONS {
        let data = summary
            .records
            .iter()
            .filter(|r| r.partition == partition)
            .count() as i64;
        assert!(
            summary.high_watermarks[partition as usize] > data,
            "partition {partition} holds markers besides its {data} records: {:?}",
            summary.high_watermarks
        );
    }
    let committed_ids = |id: i64| id < 1000;
    assert!(aborted.iter().all(|r| {
        let value: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        !committed_ids(value["id"].as_i64().unwrap())
    }));
    let expected = expected_rows(&committed);
    let broker_filters_aborted = summary
        .read_committed
        .as_ref()
        .expect("the driver read the topic back")
        .aborted_visible
        == 0;

    app.start_upcreate().await;
    let worker = if broker_filters_aborted {
        // Strict: the table holds exactly the committed rows, and nothing else was applied.
        wait_applied(
            &app,
            "upcreate",
            &summary,
            &expected,
            |_| true,
            committed.len() as u64,
        )
        .await
    } else {
        // This broker shows aborted records to every consumer: they are applied too.
        wait_applied(
            &app,
            "upcreate",
            &summary,
            &expected,
            committed_ids,
            (committed.len() + aborted.len()) as u64,
        )
        .await
    };
    assert_healthy(&worker);
    assert_nothing_invalid(&app, &worker, &topic).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_tombstone_on_the_updates_topic_is_dead_lettered_and_the_worker_goes_on() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    let summary = driver(&app, &topic, "tombstone", &[]).await;
    let valid: Vec<&Produced> = summary
        .records
        .iter()
        .filter(|r| r.value.is_some())
        .collect();
    assert_eq!(valid.len(), summary.records.len() - 1, "one tombstone");

    app.start_upcreate().await;
    let worker = wait_applied(
        &app,
        "upcreate",
        &summary,
        &expected_rows(&valid),
        |_| true,
        valid.len() as u64,
    )
    .await;
    let letters = read_back(&app, &format!("{topic}.dlq"), 1).await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter.value, None, "the tombstone's null value is kept");
    assert_eq!(letter.key.as_deref(), Some("2"), "{letter:?}");
    assert_eq!(
        letter.header("rowsync.dlq.source.offset"),
        Some(&Some("1".to_owned())),
        "{letter:?}"
    );
    assert!(
        matches!(letter.header("rowsync.dlq.reason"), Some(Some(reason)) if reason.contains("no value")),
        "{letter:?}"
    );
    let worker = eventually(
        "the tombstone counted invalid and dead-lettered",
        || async {
            let status = app.worker("upcreate").await;
            if total(&status, "records_invalid") == 1
                && total(&status, "records_dead_lettered") == 1
            {
                Ok(status)
            } else {
                Err(format!("{status} (after {worker})"))
            }
        },
    )
    .await;
    assert_healthy(&worker);
    app.cleanup().await;
}

#[tokio::test]
async fn an_invalid_record_with_a_null_header_value_is_dead_lettered_with_that_header_kept_null() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    let summary = driver(&app, &topic, "invalid-null-header", &[]).await;
    let valid: Vec<&Produced> = summary
        .records
        .iter()
        .filter(|r| r.value.as_deref() != Some("not json"))
        .collect();
    assert_eq!(valid.len(), 2);

    app.start_upcreate().await;
    let worker = wait_applied(
        &app,
        "upcreate",
        &summary,
        &expected_rows(&valid),
        |_| true,
        2,
    )
    .await;
    let letters = read_back(&app, &format!("{topic}.dlq"), 1).await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter.value.as_deref(), Some("not json"));
    assert_eq!(letter.key.as_deref(), Some("bad"));
    assert_eq!(
        letter.header("h"),
        Some(&None),
        "null stays null: {letter:?}"
    );
    assert_eq!(
        letter.header("e"),
        Some(&Some(String::new())),
        "empty stays empty: {letter:?}"
    );
    assert_eq!(
        letter.header("rowsync.dlq.source.offset"),
        Some(&Some("1".to_owned())),
        "{letter:?}"
    );
    let worker = eventually("the record counted invalid and dead-lettered", || async {
        let status = app.worker("upcreate").await;
        if total(&status, "records_invalid") == 1 && total(&status, "records_dead_lettered") == 1 {
            Ok(status)
        } else {
            Err(format!("{status} (after {worker})"))
        }
    })
    .await;
    assert_healthy(&worker);
    app.cleanup().await;
}

#[tokio::test]
async fn the_delete_worker_applies_lz4_and_zstd_batches_from_librdkafka() {
    let app = spawn_app().await;
    let topic = app.settings.topics.delete_topic.clone();
    let summary = driver(&app, &topic, "delete-codecs", &[]).await;
    for codec in ["lz4", "zstd"] {
        let stats = &summary.codecs[codec];
        assert!(stats.max_records_per_batch >= 5, "{codec}: {stats:?}");
        assert!(
            stats.bytes_sent * 2 < stats.value_bytes,
            "{codec}: {stats:?}"
        );
    }
    let mut ids: Vec<i64> = summary
        .records
        .iter()
        .map(|r| {
            let value: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            value["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert!(!ids.contains(&1) && !ids.contains(&2));
    let names: Vec<String> = ids.iter().map(|id| format!("row {id}")).collect();
    let mut rows: Vec<(i64, &str)> = vec![(1, "kept"), (2, "kept too")];
    rows.extend(ids.iter().zip(&names).map(|(id, n)| (*id, n.as_str())));
    app.insert_rows(&rows).await;

    app.start_delete().await;
    let expected = BTreeMap::from([(1, "kept".to_owned()), (2, "kept too".to_owned())]);
    let worker = wait_applied(
        &app,
        "delete",
        &summary,
        &expected,
        |_| true,
        summary.records.len() as u64,
    )
    .await;
    assert_healthy(&worker);
    assert_nothing_invalid(&app, &worker, &topic).await;
    app.cleanup().await;
}
