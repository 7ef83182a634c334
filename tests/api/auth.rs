//! Bearer-token authorisation with `API_TOKEN` (and `API_TOKEN_FOR_READS`).

use reqwest::Response;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::helpers::{fresh_settings, TestApp};

const TOKEN: &str = "s3cret-token";

async fn app_with_token(for_reads: bool) -> TestApp {
    let mut settings = fresh_settings();
    settings.auth.api_token = Some(SecretString::from(TOKEN.to_owned()));
    settings.auth.api_token_for_reads = for_reads;
    TestApp::start(settings).await
}

/// `method path` as `token` (anonymous when `None`), with a valid body for a reset.
async fn send(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> Response {
    let client = match token {
        Some(token) => app.with_token(token),
        None => app.api.clone(),
    };
    let earliest = json!({"to": "earliest"});
    let body = path.ends_with("reset_offsets").then_some(&earliest);
    client.send(method, path, body).await
}

#[tokio::test]
async fn with_a_token_every_state_change_needs_it_and_reads_stay_open() {
    let app = app_with_token(false).await;
    app.insert_rows(&[(5, "smth")]).await;
    let writes = [
        ("POST", "/api/some_models/start_upcreate_from_kafka/"),
        ("POST", "/api/some_models/stop_upcreate_from_kafka/"),
        ("DELETE", "/api/some_models/start_delete_from_kafka/"),
        ("POST", "/api/some_models/start_delete_from_kafka/"),
        ("POST", "/api/some_models/stop_delete_from_kafka/"),
        ("POST", "/api/workers/upcreate/reset_offsets"),
        ("POST", "/api/some_models/5/write_to_kafka/"),
    ];
    for (method, path) in &writes {
        for token in [None, Some("wrong"), Some("s3cret-token-but-longer")] {
            let response = send(&app, method, path, token).await;
            assert_eq!(response.status(), 401, "{method} {path} with {token:?}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized", "{body}");
            assert!(!body.to_string().contains(TOKEN));
        }
        let response = send(&app, method, path, Some(TOKEN)).await;
        assert_eq!(response.status(), 200, "{method} {path} with the token");
    }
    for path in [
        "/api/some_models/",
        "/api/workers/",
        "/api/workers/upcreate/",
        "/health/ready",
        "/metrics",
    ] {
        assert_eq!(send(&app, "GET", path, None).await.status(), 200, "{path}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn with_api_token_for_reads_reads_need_the_token_too() {
    let app = app_with_token(true).await;
    for path in ["/api/some_models/", "/api/workers/", "/api/workers/delete/"] {
        assert_eq!(send(&app, "GET", path, None).await.status(), 401, "{path}");
        assert_eq!(
            send(&app, "GET", path, Some(TOKEN)).await.status(),
            200,
            "{path}"
        );
    }
    // Orchestrators still probe health without a token.
    assert_eq!(send(&app, "GET", "/health/live", None).await.status(), 200);
    app.cleanup().await;
}

#[test]
fn the_spec_declares_the_bearer_scheme_on_every_protected_operation() {
    let spec: Value = serde_json::from_str(&rowsync::http::openapi_json()).unwrap();
    assert_eq!(
        spec["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    let write = &spec["paths"]["/api/some_models/{id}/write_to_kafka"]["post"];
    let security = write["security"]
        .as_array()
        .expect("write_to_kafka declares security");
    assert!(
        security.iter().any(|s| s.get("bearerAuth").is_some()),
        "{security:?}"
    );
    assert!(write["responses"]["401"].is_object());
}
