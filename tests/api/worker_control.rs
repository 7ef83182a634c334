//! Steering workers: desired state that outlives restarts, and resetting offsets.

use serde_json::{json, Value};

use crate::helpers::{eventually, pairs, spawn_app, update, TestApp};

async fn wait_for_rows(app: &TestApp, count: usize) {
    eventually(&format!("{count} rows"), || async {
        (app.rows().await.len() == count).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_started_worker_runs_again_after_a_restart_and_a_stopped_one_stays_stopped() {
    let app = spawn_app().await;
    app.start_upcreate().await;
    app.start_delete().await;
    app.stop_delete().await;

    let app = app.restart().await;
    assert_eq!(app.worker("upcreate").await["state"], "running");
    assert_eq!(app.worker("delete").await["state"], "stopped");
    let topic = app.settings.topics.updates_topic.clone();
    app.produce(&topic, 0, &[&update(1, "applied without a new start")])
        .await;
    wait_for_rows(&app, 1).await;

    app.stop_upcreate().await;
    let app = app.restart().await;
    assert_eq!(app.worker("upcreate").await["state"], "stopped");
    app.cleanup().await;
}

#[tokio::test]
async fn resetting_offsets_to_earliest_applies_everything_again() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    app.produce(&topic, 0, &[&update(1, "from kafka")]).await;
    app.produce(&topic, 1, &[&update(2, "from kafka")]).await;
    app.start_upcreate().await;
    wait_for_rows(&app, 2).await;
    app.stop_upcreate().await;
    app.db.execute("DELETE FROM some_model", &[]).await.unwrap();

    let response = app
        .reset_offsets("upcreate", &json!({"to": "earliest"}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"worker": "upcreate", "offsets": [
            {"partition": 0, "next_offset": 0},
            {"partition": 1, "next_offset": 0},
            {"partition": 2, "next_offset": 0},
        ]})
    );
    app.start_upcreate().await;
    wait_for_rows(&app, 2).await;
    app.cleanup().await;
}

#[tokio::test]
async fn resetting_offsets_to_latest_or_to_given_offsets_skips_what_lies_before() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    app.produce(&topic, 0, &[&update(1, "skipped"), &update(2, "skipped")])
        .await;
    app.produce(&topic, 1, &[&update(3, "skipped"), &update(4, "applied")])
        .await;

    let response = app
        .reset_offsets("upcreate", &json!({"to": "latest"}))
        .await;
    assert_eq!(response.status(), 200);
    let response = app
        .reset_offsets("upcreate", &json!({"to": {"1": 1}}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["offsets"], json!([{"partition": 1, "next_offset": 1}]));

    app.start_upcreate().await;
    app.produce(&topic, 2, &[&update(5, "applied")]).await;
    eventually("rows 4 and 5", || async {
        let expected = [(5, "applied".to_owned()), (4, "applied".to_owned())];
        (pairs(&app.rows().await) == expected).then_some(())
    })
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn resetting_offsets_is_refused_while_running_and_checked_for_shape() {
    let app = spawn_app().await;
    app.start_upcreate().await;
    let response = app
        .reset_offsets("upcreate", &json!({"to": "earliest"}))
        .await;
    assert_eq!(response.status(), 409);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "conflict");

    for (body, field) in [
        (json!({"to": {"7": 1}}), "to"),
        (json!({"to": {"x": 1}}), "to"),
        (json!({"to": {"0": -1}}), "to"),
        (json!({"to": "middle"}), "body"),
        (json!({"from": "earliest"}), "body"),
    ] {
        let response = app.reset_offsets("delete", &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "bad_request", "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let response = app
        .reset_offsets("nobody", &json!({"to": "earliest"}))
        .await;
    assert_eq!(response.status(), 404);
    let response = app
        .raw(
            "POST",
            "/api/workers/delete/reset_offsets",
            &[("content-type", "application/json")],
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_eq!(response.status(), 400);
    app.cleanup().await;
}

#[tokio::test]
async fn resuming_from_inside_a_record_batch_skips_nothing() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    // Two produce requests: record batches [0, 1, 2] and [3, 4].
    app.produce(
        &topic,
        0,
        &[&update(0, "before"), &update(1, "x"), &update(2, "x")],
    )
    .await;
    app.produce(&topic, 0, &[&update(3, "x"), &update(4, "x")])
        .await;

    let response = app
        .reset_offsets("upcreate", &json!({"to": {"0": 1}}))
        .await;
    assert_eq!(response.status(), 200);
    app.start_upcreate().await;
    wait_for_rows(&app, 4).await;
    let ids: Vec<i64> = app.rows().await.iter().map(|r| r.id).collect();
    assert_eq!(ids, [4, 3, 2, 1]);
    assert_eq!(app.worker_total("upcreate", "records_applied").await, 4);
    app.cleanup().await;
}
