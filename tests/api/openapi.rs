//! The committed spec `openapi/openapi.json` is exactly what the code serves.
//! Regenerate it with `UPDATE_OPENAPI=1 cargo test openapi`.

use crate::helpers::spawn_app;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");

#[test]
fn the_committed_spec_matches_the_code() {
    let generated = rowsync::http::openapi_json() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).expect("writing openapi/openapi.json");
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale; regenerate it with `UPDATE_OPENAPI=1 cargo test openapi`"
    );
}

#[test]
fn the_spec_documents_every_operation() {
    let spec: serde_json::Value = serde_json::from_str(&rowsync::http::openapi_json()).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/some_models", "get"),
        ("/api/some_models/start_upcreate_from_kafka", "post"),
        ("/api/some_models/stop_upcreate_from_kafka", "post"),
        ("/api/some_models/start_delete_from_kafka", "delete"),
        ("/api/some_models/start_delete_from_kafka", "post"),
        ("/api/some_models/stop_delete_from_kafka", "post"),
        ("/api/some_models/{id}/write_to_kafka", "post"),
        ("/api/workers", "get"),
        ("/api/workers/{name}", "get"),
        ("/api/workers/{name}/reset_offsets", "post"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/metrics", "get"),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is missing");
        assert!(
            operation["summary"].is_string(),
            "{method} {path} has no summary"
        );
        assert!(
            operation["operationId"].is_string(),
            "{method} {path} has no operationId"
        );
    }
    let write = &paths["/api/some_models/{id}/write_to_kafka"]["post"];
    assert_eq!(write["parameters"][0]["name"], "id");
    assert_eq!(write["parameters"][0]["schema"]["format"], "int64");
    for status in ["200", "400", "404", "503"] {
        assert!(
            write["responses"][status].is_object(),
            "write_to_kafka lacks {status}"
        );
    }
}

#[tokio::test]
async fn the_service_serves_the_spec_and_swagger_ui() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let served: serde_json::Value = response.json().await.unwrap();
    let code: serde_json::Value = serde_json::from_str(&rowsync::http::openapi_json()).unwrap();
    assert_eq!(served, code);

    let response = app.get("/docs").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.text().await.unwrap().contains("swagger"),
        "Swagger UI page"
    );
    app.cleanup().await;
}

/// Every operation of the spec (its operation id, method and path) and exactly the statuses it
/// documents, which are exactly the statuses it can answer. 400: a malformed parameter or body;
/// 401: `API_TOKEN` is set (for reads, with `API_TOKEN_FOR_READS=true`); 413: a declared body
/// over 64 KiB, refused before any operation runs; 415: a JSON body sent as something else;
/// 503: PostgreSQL or Kafka unavailable. A wrong method (405) or an unknown path (404) reaches
/// no operation, so no operation lists them.
pub const DOCUMENTED_STATUSES: &[(&str, &str, &str, &[u16])] = &[
    (
        "list_some_models",
        "get",
        "/api/some_models",
        &[200, 400, 401, 413, 503],
    ),
    (
        "start_upcreate_from_kafka",
        "post",
        "/api/some_models/start_upcreate_from_kafka",
        &[200, 401, 413, 503],
    ),
    (
        "stop_upcreate_from_kafka",
        "post",
        "/api/some_models/stop_upcreate_from_kafka",
        &[200, 401, 413, 503],
    ),
    (
        "start_delete_from_kafka",
        "delete",
        "/api/some_models/start_delete_from_kafka",
        &[200, 401, 413, 503],
    ),
    (
        "start_delete_from_kafka_post",
        "post",
        "/api/some_models/start_delete_from_kafka",
        &[200, 401, 413, 503],
    ),
    (
        "stop_delete_from_kafka",
        "post",
        "/api/some_models/stop_delete_from_kafka",
        &[200, 401, 413, 503],
    ),
    (
        "write_to_kafka",
        "post",
        "/api/some_models/{id}/write_to_kafka",
        &[200, 400, 401, 404, 413, 503],
    ),
    ("list_workers", "get", "/api/workers", &[200, 401, 413]),
    (
        "get_worker",
        "get",
        "/api/workers/{name}",
        &[200, 400, 401, 404, 413],
    ),
    (
        "reset_worker_offsets",
        "post",
        "/api/workers/{name}/reset_offsets",
        &[200, 400, 401, 404, 409, 413, 415, 503],
    ),
    ("health_live", "get", "/health/live", &[200, 413]),
    ("health_ready", "get", "/health/ready", &[200, 413, 503]),
    ("metrics", "get", "/metrics", &[200, 413]),
];

/// The JSON media type of a request body or response (poem-openapi names it
/// `application/json; charset=utf-8`), or null.
pub fn json_content(body: &serde_json::Value) -> &serde_json::Value {
    body["content"]
        .as_object()
        .and_then(|content| {
            content
                .iter()
                .find(|(media_type, _)| media_type.starts_with("application/json"))
        })
        .map_or(&serde_json::Value::Null, |(_, media)| media)
}

/// The spec the app serves at `/openapi.json`.
pub async fn served_spec(app: &crate::helpers::TestApp) -> serde_json::Value {
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Every operation of a spec as (operation id, method, path, operation).
pub fn operations(spec: &serde_json::Value) -> Vec<(String, String, String, serde_json::Value)> {
    let mut all = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap().to_owned();
            all.push((id, method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

#[tokio::test]
async fn each_operation_documents_exactly_the_statuses_it_can_answer() {
    let app = spawn_app().await;
    let spec = served_spec(&app).await;
    app.cleanup().await;
    let served = operations(&spec);
    let mut served_ids: Vec<&str> = served.iter().map(|(id, ..)| id.as_str()).collect();
    let mut table_ids: Vec<&str> = DOCUMENTED_STATUSES.iter().map(|(id, ..)| *id).collect();
    served_ids.sort_unstable();
    table_ids.sort_unstable();
    assert_eq!(served_ids, table_ids, "operations served vs. in the table");

    for (id, method, path, expected) in DOCUMENTED_STATUSES {
        let operation = &spec["paths"][path][method];
        assert_eq!(operation["operationId"], *id, "{method} {path}");
        let responses = operation["responses"].as_object().unwrap();
        let documented: Vec<u16> = responses.keys().map(|s| s.parse().unwrap()).collect();
        let mut documented = documented;
        documented.sort_unstable();
        assert_eq!(documented, *expected, "{id}: documented statuses");
        for (status, response) in responses {
            let error = status.starts_with('4') || status.starts_with('5');
            // Readiness answers its 503 with the checks; every other error has the one shape.
            if error && !(*id == "health_ready" && status == "503") {
                assert_eq!(
                    json_content(response)["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{id}: {status} {response}"
                );
            }
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{id}: {status} has no description"
            );
        }
    }
    let error_codes = spec["components"]["schemas"]["ErrorBody"]["properties"]["error"]
        ["description"]
        .as_str()
        .unwrap();
    assert!(
        error_codes.contains("unsupported_media_type"),
        "{error_codes}"
    );
}
