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
