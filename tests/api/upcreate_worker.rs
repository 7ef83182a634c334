//! The upcreate worker: `{"id", "name"}` messages on `UPDATES_TOPIC` become rows.

use crate::helpers::{eventually, pairs, spawn_app, update, TestApp};

async fn wait_for_rows(app: &TestApp, expected: &[(i64, &str)]) {
    let expected: Vec<(i64, String)> = expected.iter().map(|(i, n)| (*i, n.to_string())).collect();
    eventually(&format!("rows {expected:?}"), || async {
        let rows = pairs(&app.rows().await);
        (rows == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_upcreate_worker_inserts_new_ids_and_renames_existing_ones() {
    let app = spawn_app().await;
    app.insert_rows(&[(1, "old"), (3, "untouched")]).await;
    let topic = app.settings.topics.updates_topic.clone();
    app.produce(&topic, 0, &[&update(1, "new"), &update(2, "two")])
        .await;

    app.start_upcreate().await;
    wait_for_rows(&app, &[(3, "untouched"), (2, "two"), (1, "new")]).await;
    app.cleanup().await;
}

#[tokio::test]
async fn several_updates_to_one_id_in_one_batch_leave_the_last_one() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    // One produce request before the worker starts: the worker fetches them as one batch.
    app.produce(
        &topic,
        0,
        &[
            &update(7, "a"),
            &update(7, "b"),
            &update(8, "x"),
            &update(7, "c"),
            &update(8, "y"),
        ],
    )
    .await;

    app.start_upcreate().await;
    wait_for_rows(&app, &[(8, "y"), (7, "c")]).await;
    assert_eq!(app.worker_total("upcreate", "records_applied").await, 5);
    app.cleanup().await;
}

#[tokio::test]
async fn messages_on_every_partition_are_applied() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    app.produce(&topic, 0, &[&update(10, "p0")]).await;
    app.produce(&topic, 1, &[&update(11, "p1"), &update(12, "p1 too")])
        .await;
    app.produce(&topic, 2, &[&update(13, "p2")]).await;

    app.start_upcreate().await;
    wait_for_rows(&app, &[(13, "p2"), (12, "p1 too"), (11, "p1"), (10, "p0")]).await;
    let worker = app.worker("upcreate").await;
    let partitions = worker["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3, "{worker}");
    for p in partitions {
        assert_eq!(p["lag"], 0, "{worker}");
        assert_eq!(p["next_offset"], p["high_watermark"], "{worker}");
        // Nothing failed: the error fields are left out, never null (the spec types
        // `last_error_at` as a date-time; generated clients reject a null there).
        let fields = p.as_object().unwrap();
        assert!(!fields.contains_key("last_error"), "{worker}");
        assert!(!fields.contains_key("last_error_at"), "{worker}");
        assert!(fields.values().all(|v| !v.is_null()), "{worker}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn invalid_messages_are_skipped_and_counted_without_blocking_the_messages_after_them() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    let too_long = update(4, &"x".repeat(201));
    app.produce(
        &topic,
        0,
        &[
            &update(1, "first"),
            "not json at all",
            r#"{"id": "2", "name": "id is a string"}"#,
            &too_long,
            r#"{"id": 9223372036854775808, "name": "id beyond int64"}"#,
            r#"{"id": 5, "name": null}"#,
            &update(2, "after the bad ones"),
        ],
    )
    .await;
    app.produce(
        &topic,
        1,
        &[r#"{"name": "no id"}"#, &update(3, "other partition")],
    )
    .await;

    app.start_upcreate().await;
    wait_for_rows(
        &app,
        &[
            (3, "other partition"),
            (2, "after the bad ones"),
            (1, "first"),
        ],
    )
    .await;
    eventually("6 invalid and 3 applied records counted", || async {
        let invalid = app.worker_total("upcreate", "records_invalid").await;
        let applied = app.worker_total("upcreate", "records_applied").await;
        (invalid == 6 && applied == 3).then_some(())
    })
    .await;
    let worker = app.worker("upcreate").await;
    assert_eq!(worker["state"], "running", "{worker}");
    app.cleanup().await;
}

#[tokio::test]
async fn stopping_the_upcreate_worker_leaves_later_messages_unapplied_until_it_starts_again() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    app.start_upcreate().await;
    app.produce(&topic, 0, &[&update(1, "before stop")]).await;
    wait_for_rows(&app, &[(1, "before stop")]).await;

    app.stop_upcreate().await;
    assert_eq!(app.worker("upcreate").await["state"], "stopped");
    app.produce(&topic, 0, &[&update(2, "while stopped")]).await;
    app.produce(&topic, 1, &[&update(3, "while stopped")]).await;
    // The stop answered only once the worker had stopped: nothing can apply these now.
    assert_eq!(pairs(&app.rows().await), [(1, "before stop".to_owned())]);

    // A re-applied first message would overwrite this.
    app.db
        .execute(
            "UPDATE some_model SET name = 'edited by hand' WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    app.start_upcreate().await;
    wait_for_rows(
        &app,
        &[
            (3, "while stopped"),
            (2, "while stopped"),
            (1, "edited by hand"),
        ],
    )
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_restarted_service_resumes_after_the_last_applied_message() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    app.produce(&topic, 0, &[&update(1, "one")]).await;
    app.produce(&topic, 2, &[&update(2, "two")]).await;
    app.start_upcreate().await;
    wait_for_rows(&app, &[(2, "two"), (1, "one")]).await;

    let app = app.restart().await;
    app.db
        .execute("UPDATE some_model SET name = 'edited by hand'", &[])
        .await
        .unwrap();
    app.produce(&topic, 0, &[&update(3, "after restart")]).await;
    app.start_upcreate().await;
    wait_for_rows(
        &app,
        &[
            (3, "after restart"),
            (2, "edited by hand"),
            (1, "edited by hand"),
        ],
    )
    .await;
    assert_eq!(app.worker_total("upcreate", "records_applied").await, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn starting_a_running_worker_keeps_its_one_loop_and_stopping_a_stopped_one_is_a_no_op() {
    let app = spawn_app().await;
    app.stop_upcreate().await; // never started: a no-op
    app.start_upcreate().await;
    let since = app.worker("upcreate").await["since"].clone();
    app.start_upcreate().await;
    app.start_upcreate().await;
    assert_eq!(
        app.worker("upcreate").await["since"],
        since,
        "a second start restarted the worker"
    );

    let topic = app.settings.topics.updates_topic.clone();
    app.produce(&topic, 1, &[&update(1, "once")]).await;
    wait_for_rows(&app, &[(1, "once")]).await;
    assert_eq!(app.worker_total("upcreate", "records_applied").await, 1);

    app.stop_upcreate().await;
    app.stop_upcreate().await;
    app.produce(&topic, 1, &[&update(1, "after stop")]).await;
    assert_eq!(app.worker("upcreate").await["state"], "stopped");
    assert_eq!(pairs(&app.rows().await), [(1, "once".to_owned())]);
    app.cleanup().await;
}

#[tokio::test]
async fn a_stored_offset_beyond_the_end_of_the_partition_restarts_from_the_earliest_offset() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    // As if the topic had been recreated after the worker consumed 1,000 records of it.
    app.db
        .execute(
            "INSERT INTO kafka_offsets (worker, topic, partition, next_offset) VALUES ('upcreate', $1, 0, 1000)",
            &[&topic],
        )
        .await
        .unwrap();
    app.produce(&topic, 0, &[&update(1, "in the new topic")])
        .await;

    app.start_upcreate().await;
    wait_for_rows(&app, &[(1, "in the new topic")]).await;
    let stored: i64 = app
        .db
        .query_one(
            "SELECT next_offset FROM kafka_offsets WHERE worker = 'upcreate' AND topic = $1 AND partition = 0",
            &[&topic],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn records_without_a_key_on_a_topic_of_several_partitions_are_applied_and_counted() {
    use rskafka::{
        client::partition::{Compression, UnknownTopicHandling},
        record::Record,
    };
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    app.produce(
        &topic,
        0,
        &[&update(1, "a"), &update(2, "b"), &update(1, "c")],
    )
    .await;
    let keyed = app
        .kafka
        .partition_client(&topic, 1, UnknownTopicHandling::Retry)
        .await
        .unwrap();
    keyed
        .produce(
            vec![Record {
                key: Some(b"3".to_vec()),
                value: Some(update(3, "keyed").into_bytes()),
                headers: Default::default(),
                timestamp: chrono::Utc::now(),
            }],
            Compression::NoCompression,
        )
        .await
        .unwrap();

    app.start_upcreate().await;
    wait_for_rows(&app, &[(3, "keyed"), (2, "b"), (1, "c")]).await;
    let worker = app.worker("upcreate").await;
    let unkeyed = |partition: i64| {
        worker["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["partition"] == partition)
            .map(|p| p["records_unkeyed"].as_u64().unwrap())
    };
    assert_eq!(unkeyed(0), Some(3), "{worker}");
    assert_eq!(unkeyed(1), Some(0), "{worker}");
    let metrics = app.metrics().await;
    let line = format!(
        "rowsync_records_unkeyed_total{{worker=\"upcreate\",topic=\"{topic}\",partition=\"0\"}} 3"
    );
    assert!(metrics.contains(&line), "{metrics}");
    app.cleanup().await;
}
