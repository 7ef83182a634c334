//! The delete worker: `{"id"}` messages on `DELETE_TOPIC` delete rows.

use crate::helpers::{eventually, pairs, spawn_app};

#[tokio::test]
async fn the_delete_worker_deletes_named_rows_ignores_missing_ones_and_skips_invalid_messages() {
    let app = spawn_app().await;
    app.insert_rows(&[(1, "a"), (2, "b"), (3, "c"), (4, "d")])
        .await;
    let topic = app.settings.topics.delete_topic.clone();
    app.produce(
        &topic,
        0,
        &[r#"{"id": 1}"#, r#"{"id": 99}"#, "garbage", r#"{"id": 1}"#],
    )
    .await;
    app.produce(&topic, 2, &[r#"{"id": "3"}"#, r#"{"id": 3}"#])
        .await;

    app.start_delete().await;
    eventually("rows 1 and 3 deleted", || async {
        let rows = pairs(&app.rows().await);
        (rows == [(4, "d".to_owned()), (2, "b".to_owned())]).then_some(())
    })
    .await;
    eventually("2 invalid and 4 applied records counted", || async {
        let invalid = app.worker_total("delete", "records_invalid").await;
        let applied = app.worker_total("delete", "records_applied").await;
        (invalid == 2 && applied == 4).then_some(())
    })
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_delete_worker_starts_with_post_too_and_stops_on_request() {
    let app = spawn_app().await;
    app.control(
        "/api/some_models/start_delete_from_kafka",
        "delete",
        "running",
    )
    .await;
    app.control(
        "/api/some_models/start_delete_from_kafka/",
        "delete",
        "running",
    )
    .await;
    app.stop_delete().await;
    app.stop_delete().await;

    app.insert_rows(&[(1, "kept")]).await;
    let topic = app.settings.topics.delete_topic.clone();
    app.produce(&topic, 0, &[r#"{"id": 1}"#]).await;
    assert_eq!(app.worker("delete").await["state"], "stopped");
    assert_eq!(pairs(&app.rows().await), [(1, "kept".to_owned())]);

    app.start_delete().await;
    eventually("row 1 deleted after the restart", || async {
        app.rows().await.is_empty().then_some(())
    })
    .await;
    app.cleanup().await;
}
