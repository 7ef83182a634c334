//! Client errors outside the typed handlers still answer in the API's one JSON error shape.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let app = spawn_app().await;
    for path in ["/api/nothing_here/", "/nothing_here"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let app = spawn_app().await;
    let response = app.get("/api/some_models/start_upcreate_from_kafka/").await;
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    app.cleanup().await;
}

#[tokio::test]
async fn an_unknown_worker_is_a_json_404() {
    let app = spawn_app().await;
    let response = app.get("/api/workers/nobody/").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    app.cleanup().await;
}

#[tokio::test]
async fn an_over_large_body_is_a_json_413() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/api/workers/delete/reset_offsets"))
        .header("content-type", "application/json")
        .body(vec![b' '; 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");
    app.cleanup().await;
}
