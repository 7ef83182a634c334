//! The response log: every response under `/api` is published to `REST_LOG_TOPIC`.

use serde_json::{json, Value};

use crate::helpers::{eventually, pairs, spawn_app, TestApp};

async fn logged(app: &TestApp, count: usize) -> Vec<Value> {
    let topic = app.settings.topics.rest_log_topic.clone();
    eventually(&format!("{count} response-log records"), || async {
        let records = app.read_topic(&topic).await;
        (records.len() >= count).then(|| {
            records
                .iter()
                .map(|(_, r)| serde_json::from_slice(r.record.value.as_deref().unwrap()).unwrap())
                .collect::<Vec<Value>>()
        })
    })
    .await
}

#[tokio::test]
async fn every_api_response_is_published_with_url_method_status_and_body() {
    let app = spawn_app().await;
    app.insert_rows(&[(5, "smth")]).await;
    app.get("/api/some_models/").await;
    app.get("/api/some_models").await;
    app.post("/api/some_models/5/write_to_kafka/").await;
    app.post("/api/some_models/6/write_to_kafka/").await;
    app.post("/api/some_models/abc/write_to_kafka/").await;
    app.post("/api/some_models/stop_delete_from_kafka/").await;
    app.get("/api/no_such_path/").await;
    app.get("/api/some_models/stop_delete_from_kafka/").await;
    // Outside /api: not logged.
    app.get("/openapi.json").await;

    let records = logged(&app, 8).await;
    let expected = [
        json!({"url": "/api/some_models/", "request_method": "GET", "status": 200,
               "data": [{"id": 5, "name": "smth"}]}),
        json!({"url": "/api/some_models", "request_method": "GET", "status": 200,
               "data": [{"id": 5, "name": "smth"}]}),
        json!({"url": "/api/some_models/5/write_to_kafka/", "request_method": "POST", "status": 200,
               "data": {"id": 5, "name": "smth"}}),
        json!({"url": "/api/some_models/6/write_to_kafka/", "request_method": "POST", "status": 404,
               "data": {"error": "not_found", "message": "no row with id 6"}}),
        json!({"url": "/api/some_models/stop_delete_from_kafka/", "request_method": "POST",
               "status": 200, "data": {"worker": "delete", "state": "stopped"}}),
    ];
    for record in &expected {
        assert!(records.contains(record), "missing {record} in {records:#?}");
    }
    let find = |url: &str, method: &str| {
        records
            .iter()
            .find(|r| r["url"] == url && r["request_method"] == method)
            .unwrap_or_else(|| panic!("no record of {method} {url} in {records:#?}"))
    };
    let bad = find("/api/some_models/abc/write_to_kafka/", "POST");
    assert_eq!(bad["status"], 400);
    assert_eq!(bad["data"]["field"], "id");
    let unknown = find("/api/no_such_path/", "GET");
    assert_eq!(unknown["status"], 404);
    assert_eq!(unknown["data"]["error"], "not_found");
    let wrong_method = find("/api/some_models/stop_delete_from_kafka/", "GET");
    assert_eq!(wrong_method["status"], 405);
    assert_eq!(wrong_method["data"]["error"], "method_not_allowed");

    assert_eq!(
        records.len(),
        8,
        "exactly one record per /api response: {records:#?}"
    );
    for record in &records {
        assert!(record.get("truncated").is_none(), "{record}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_burst_of_several_full_batches_is_published_whole() {
    // 2,600 responses from 16 connections: more than two of the publisher's 1,024-record
    // batches pile up while one is sent, and every record still arrives exactly once.
    let app = spawn_app().await;
    let connections: Vec<_> = (0..16)
        .map(|_| {
            let api = app.api.clone();
            tokio::spawn(async move {
                for _ in 0..(2_600 / 16) + 1 {
                    api.rows().await;
                }
            })
        })
        .collect();
    for connection in connections {
        connection.await.unwrap();
    }
    let sent = 16 * ((2_600 / 16) + 1);
    let records = logged(&app, sent).await;
    assert_eq!(records.len(), sent, "one record per response, none twice");
    assert!(records
        .iter()
        .all(|r| r["url"] == "/api/some_models/" && r["data"] == json!([])));
    app.cleanup().await;
}

#[tokio::test]
async fn a_body_too_large_for_a_kafka_message_is_logged_as_truncated_without_data() {
    let app = spawn_app().await;
    // 6,000 rows of 200 characters: about 1.3 MB of JSON, over the 900 KiB limit.
    app.db
        .execute(
            "INSERT INTO some_model SELECT g, repeat('x', 200) FROM generate_series(1, 6000) g",
            &[],
        )
        .await
        .unwrap();
    let rows = app.rows().await;
    assert_eq!(rows.len(), 6000, "the client still gets the whole body");

    let records = logged(&app, 1).await;
    assert_eq!(
        records,
        [
            json!({"url": "/api/some_models/", "request_method": "GET", "status": 200,
                "data": null, "truncated": true})
        ]
    );
    app.cleanup().await;
}

#[tokio::test]
async fn with_the_response_log_off_nothing_is_published_and_the_api_still_answers() {
    let mut settings = crate::helpers::fresh_settings();
    settings.topics.rest_log_enabled = false;
    let app = TestApp::start(settings).await;
    app.insert_rows(&[(5, "smth")]).await;
    assert_eq!(pairs(&app.rows().await), [(5, "smth".to_owned())]);
    let response = app.write_to_kafka(5).await;
    assert_eq!(response.status(), 200);

    let topics = app.kafka.list_topics().await.unwrap();
    assert!(
        !topics
            .iter()
            .any(|t| t.name == app.settings.topics.rest_log_topic),
        "the response-log topic is not even created"
    );
    // The published row proves the request path ran to the end; the log topic stays absent.
    let objects = app
        .read_topic(&app.settings.topics.objects_to_kafka_topic)
        .await;
    assert_eq!(objects.len(), 1);
    app.cleanup().await;
}
