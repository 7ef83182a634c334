//! Errors answer in the API's one JSON error shape, those outside the typed handlers too:
//! unknown paths, wrong methods, bodies too large or not JSON, malformed path parameters; and
//! a dependency that is down.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;

use crate::{
    fault_proxy::{Fault, FaultProxy},
    helpers::{database_url, fresh_settings, spawn_app, TestApp},
    openapi::{json_content, operations, served_spec},
};

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

/// A request for operation `method path` of the spec, its path parameters filled in.
fn request(app: &TestApp, method: &str, path: &str) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let path = path.replace("{id}", "1").replace("{name}", "upcreate");
    app.http.request(method, app.url(&path))
}

/// Every operation, whether it takes a body or not, refuses a declared body over 64 KiB before
/// it runs.
#[tokio::test]
async fn an_over_large_body_is_a_json_413_for_every_operation() {
    let app = spawn_app().await;
    let spec = served_spec(&app).await;
    for (id, method, path, _) in operations(&spec) {
        let response = request(&app, &method, &path)
            .header("content-type", "application/json")
            .body(vec![b' '; 64 * 1024 + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "payload_too_large", "{id}: {body}");
    }
    // Far over, too.
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

/// Every operation taking a JSON body answers 415 in the error shape to a valid JSON body sent
/// as another media type, or with no `Content-Type`.
#[tokio::test]
async fn a_body_not_sent_as_json_is_a_json_415_for_every_operation_taking_one() {
    let app = spawn_app().await;
    let spec = served_spec(&app).await;
    let mut taking_json = Vec::new();
    for (id, method, path, operation) in operations(&spec) {
        if operation["requestBody"].is_null() {
            continue;
        }
        assert!(
            json_content(&operation["requestBody"]).is_object(),
            "{id} takes a body that is not JSON"
        );
        taking_json.push(id.clone());
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let mut call = request(&app, &method, &path).body(r#"{"to": "earliest"}"#);
            if let Some(content_type) = content_type {
                call = call.header("content-type", content_type);
            }
            let response = call.send().await.unwrap();
            assert_eq!(response.status(), 415, "{id} with {content_type:?}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                body["error"], "unsupported_media_type",
                "{id} with {content_type:?}: {body}"
            );
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("application/json")),
                "{body}"
            );
            assert!(body.get("field").is_none(), "{body}");
        }
    }
    assert_eq!(taking_json, ["reset_worker_offsets"]);
    app.cleanup().await;
}

/// A path parameter that is not UTF-8 once percent-decoded is a JSON 400 (poem's router refuses
/// it before any operation runs).
#[tokio::test]
async fn a_path_that_is_not_utf8_is_a_json_400() {
    let app = spawn_app().await;
    let calls = [
        app.http.get(app.url("/api/workers/%FF/")),
        app.http
            .post(app.url("/api/workers/%FF/reset_offsets"))
            .json(&serde_json::json!({"to": "earliest"})),
        app.http
            .post(app.url("/api/some_models/%FF/write_to_kafka/")),
    ];
    for call in calls {
        let call = call.build().unwrap();
        let what = format!("{} {}", call.method(), call.url().path());
        let response = app.http.execute(call).await.unwrap();
        assert_eq!(response.status(), 400, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "bad_request", "{what}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("UTF-8")),
            "{what}: {body}"
        );
    }
    app.cleanup().await;
}

/// With PostgreSQL cut off, the listing, each start and stop and a reset answer a JSON 503
/// promptly (`write_to_kafka` and readiness: see the faults tests).
#[tokio::test]
async fn the_listing_and_every_state_change_answer_a_json_503_while_postgresql_is_cut_off() {
    let postgres = FaultProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut settings = fresh_settings();
    let through_proxy = database_url().replace("127.0.0.1:5432", &postgres.addr.to_string());
    settings.database.database_url = Some(SecretString::from(through_proxy));
    settings.database.db_timeout_ms = 2_000;
    let app = TestApp::start(settings).await;
    postgres.set(Fault::Cut);
    let calls = [
        app.http.get(app.url("/api/some_models/?limit=5")),
        app.http.get(app.url("/api/some_models/")),
        app.http
            .post(app.url("/api/some_models/start_upcreate_from_kafka/")),
        app.http
            .post(app.url("/api/some_models/stop_upcreate_from_kafka/")),
        app.http
            .delete(app.url("/api/some_models/start_delete_from_kafka/")),
        app.http
            .post(app.url("/api/some_models/start_delete_from_kafka/")),
        app.http
            .post(app.url("/api/some_models/stop_delete_from_kafka/")),
        app.http
            .post(app.url("/api/workers/upcreate/reset_offsets"))
            .json(&serde_json::json!({"to": "earliest"})),
    ];
    for call in calls {
        let call = call.build().unwrap();
        let what = format!("{} {}", call.method(), call.url().path());
        let started = Instant::now();
        let response = app.http.execute(call).await.unwrap();
        assert_eq!(response.status(), 503, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unavailable", "{what}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what} answered after {:?}",
            started.elapsed()
        );
    }
    postgres.set(Fault::Pass);
    app.cleanup().await;
}
