//! Liveness and readiness.

use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app};

#[tokio::test]
async fn liveness_and_readiness_are_ok_when_every_dependency_answers() {
    let app = spawn_app().await;
    for path in ["/health/live", "/health/live/"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"status": "ok"})
        );
    }
    let response = app.ready().await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok", "checks": {"postgres": "ok", "migrations": "ok", "kafka": "ok", "workers": "ok"}})
    );
    // Health checks are not API responses: once a later API call is logged, it is the only record.
    app.rows().await;
    let topic = app.settings.topics.rest_log_topic.clone();
    let records = eventually("the API call's record", || async {
        let records = app.read_topic(&topic).await;
        (!records.is_empty()).then_some(records)
    })
    .await;
    assert_eq!(records.len(), 1);
    let record: Value =
        serde_json::from_slice(records[0].1.record.value.as_deref().unwrap()).unwrap();
    assert_eq!(record["url"], "/api/some_models/");
    app.cleanup().await;
}
