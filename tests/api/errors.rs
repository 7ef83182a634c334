//! Errors answer in the API's one JSON error shape, those outside the typed handlers too:
//! unknown paths, wrong methods, bodies too large or not JSON, malformed path parameters; and
//! a dependency that is down.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{
    fault_proxy::{app_behind_postgres_proxy, Fault},
    helpers::spawn_app,
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

/// The path of an operation of the spec, its path parameters filled in.
fn filled_in(path: &str) -> String {
    path.replace("{id}", "1").replace("{name}", "upcreate")
}

/// Every operation, whether it takes a body or not, refuses a declared body over 64 KiB before
/// it runs.
#[tokio::test]
async fn an_over_large_body_is_a_json_413_for_every_operation() {
    let app = spawn_app().await;
    let spec = served_spec(&app).await;
    for (id, method, path, _) in operations(&spec) {
        let response = app
            .raw(
                &method,
                &filled_in(&path),
                &[("content-type", "application/json")],
                Some(vec![b' '; 64 * 1024 + 1]),
            )
            .await;
        assert_eq!(response.status(), 413, "{id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "payload_too_large", "{id}: {body}");
    }
    // Far over, too.
    let response = app
        .raw(
            "POST",
            "/api/workers/delete/reset_offsets",
            &[("content-type", "application/json")],
            Some(vec![b' '; 1024 * 1024]),
        )
        .await;
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
            let headers: Vec<(&str, &str)> = content_type
                .map(|content_type| ("content-type", content_type))
                .into_iter()
                .collect();
            let body = br#"{"to": "earliest"}"#.to_vec();
            let response = app
                .raw(&method, &filled_in(&path), &headers, Some(body))
                .await;
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
    let earliest = json!({"to": "earliest"});
    let calls = [
        ("GET", "/api/workers/%FF/", None),
        ("POST", "/api/workers/%FF/reset_offsets", Some(&earliest)),
        ("POST", "/api/some_models/%FF/write_to_kafka/", None),
    ];
    for (method, path, body) in calls {
        let what = format!("{method} {path}");
        let response = app.send(method, path, body).await;
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
    let (postgres, app) = app_behind_postgres_proxy(2_000).await;
    postgres.set(Fault::Cut);
    let earliest = json!({"to": "earliest"});
    let calls = [
        ("GET", "/api/some_models/?limit=5", None),
        ("GET", "/api/some_models/", None),
        ("POST", "/api/some_models/start_upcreate_from_kafka/", None),
        ("POST", "/api/some_models/stop_upcreate_from_kafka/", None),
        ("DELETE", "/api/some_models/start_delete_from_kafka/", None),
        ("POST", "/api/some_models/start_delete_from_kafka/", None),
        ("POST", "/api/some_models/stop_delete_from_kafka/", None),
        (
            "POST",
            "/api/workers/upcreate/reset_offsets",
            Some(&earliest),
        ),
    ];
    for (method, path, body) in calls {
        let what = format!("{method} {path}");
        let started = Instant::now();
        let response = app.send(method, path, body).await;
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
