//! Listing rows and publishing one row with `write_to_kafka`.

use futures_util::StreamExt;
use rowsync::{kafka::partitioner::partition_for_key, model::Row};
use serde_json::{json, Value};

use crate::helpers::{pairs, spawn_app, TestApp, PARTITIONS};

#[tokio::test]
async fn listing_returns_every_row_highest_id_first_with_or_without_the_trailing_slash() {
    let app = spawn_app().await;
    app.insert_rows(&[(1, "a"), (3, "c"), (2, "b"), (-4, "minus")])
        .await;

    for path in ["/api/some_models/", "/api/some_models"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!([
                {"id": 3, "name": "c"},
                {"id": 2, "name": "b"},
                {"id": 1, "name": "a"},
                {"id": -4, "name": "minus"},
            ]),
            "{path}"
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn listing_an_empty_table_returns_an_empty_array() {
    let app = spawn_app().await;
    assert_eq!(app.rows().await, Vec::<Row>::new());
    app.cleanup().await;
}

#[tokio::test]
async fn start_up_creates_missing_topics_with_the_configured_partitions() {
    let app = spawn_app().await;
    let topics = app.kafka.list_topics().await.unwrap();
    let t = &app.settings.topics;
    for name in [
        &t.updates_topic,
        &t.delete_topic,
        &t.objects_to_kafka_topic,
        &t.rest_log_topic,
    ] {
        let topic = topics.iter().find(|topic| &topic.name == name);
        let topic = topic.unwrap_or_else(|| panic!("topic {name} was not created"));
        assert_eq!(topic.partitions.len(), PARTITIONS as usize, "{name}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn write_to_kafka_publishes_the_row_keyed_by_its_id_on_the_java_clients_partition() {
    let app = spawn_app().await;
    let rows = [(5, "smth"), (12_345, "другое имя"), (-9, "negative")];
    app.insert_rows(&rows).await;

    for (index, (id, name)) in rows.iter().enumerate() {
        // Alternate the two spellings of the path.
        let slash = if index % 2 == 0 { "/" } else { "" };
        let response = app
            .post(&format!("/api/some_models/{id}/write_to_kafka{slash}"))
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"id": id, "name": name}));
    }

    let mut published = app
        .read_topic(&app.settings.topics.objects_to_kafka_topic)
        .await;
    published.sort_by_key(|(_, r)| r.record.timestamp);
    assert_eq!(published.len(), rows.len(), "one record per call");
    for (id, name) in rows {
        let key = id.to_string();
        let (partition, record) = published
            .iter()
            .find(|(_, r)| r.record.key.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("no record keyed {key}"));
        let value: Value = serde_json::from_slice(record.record.value.as_deref().unwrap()).unwrap();
        assert_eq!(value, json!({"id": id, "name": name}));
        assert_eq!(
            *partition,
            partition_for_key(key.as_bytes(), PARTITIONS),
            "record keyed {key} is on the murmur2 partition"
        );
    }
    app.cleanup().await;
}

/// Rows `1..=count` named `row {id}`, inserted; returned as (id, name).
async fn insert_numbered_rows(app: &TestApp, count: i64) -> Vec<(i64, String)> {
    let rows: Vec<(i64, String)> = (1..=count).map(|id| (id, format!("row {id}"))).collect();
    let borrowed: Vec<(i64, &str)> = rows.iter().map(|(id, n)| (*id, n.as_str())).collect();
    app.insert_rows(&borrowed).await;
    rows
}

/// `write_to_kafka` for each id, 32 calls in flight at a time: (id, status, JSON body) of each.
async fn write_to_kafka_32_at_a_time(app: &TestApp, ids: &[i64]) -> Vec<(i64, u16, Value)> {
    let calls = ids.iter().map(|&id| async move {
        let response = app.write_to_kafka(id).await;
        let status = response.status().as_u16();
        (id, status, response.json().await.unwrap())
    });
    futures_util::stream::iter(calls)
        .buffer_unordered(32)
        .collect()
        .await
}

#[tokio::test]
async fn concurrent_write_to_kafka_calls_each_land_once_on_their_partition() {
    // Calls made together share produce requests; each must still get its own record written
    // exactly once, on its key's partition.
    let app = spawn_app().await;
    let rows = insert_numbered_rows(&app, 300).await;
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    for (id, status, body) in write_to_kafka_32_at_a_time(&app, &ids).await {
        assert_eq!(status, 200, "id {id}");
        assert_eq!(body, json!({"id": id, "name": format!("row {id}")}));
    }

    let published = app
        .read_topic(&app.settings.topics.objects_to_kafka_topic)
        .await;
    assert_eq!(published.len(), rows.len(), "one record per call");
    let mut seen = std::collections::HashSet::new();
    for (partition, record) in &published {
        let key = record.record.key.as_deref().expect("keyed");
        let value: Value = serde_json::from_slice(record.record.value.as_deref().unwrap()).unwrap();
        assert_eq!(value["id"].to_string().as_bytes(), key, "value matches key");
        assert_eq!(*partition, partition_for_key(key, PARTITIONS));
        assert!(
            seen.insert(key.to_vec()),
            "record keyed {key:?} written twice"
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn write_to_kafka_calls_made_together_each_read_their_own_row_as_last_committed() {
    // Calls made together share one query for their rows: each must still get its own row (or
    // its own 404), whatever else was asked for in the same query, and see every rename
    // committed before it was sent.
    let app = spawn_app().await;
    insert_numbered_rows(&app, 50).await;
    // Every row twice, and as many missing ids, in one burst.
    let ids: Vec<i64> = (1..=50).chain(1..=50).chain(1001..=1050).collect();
    for (id, status, body) in write_to_kafka_32_at_a_time(&app, &ids).await {
        if id <= 50 {
            assert_eq!(status, 200, "id {id}: {body}");
            assert_eq!(body, json!({"id": id, "name": format!("row {id}")}));
        } else {
            assert_eq!(status, 404, "id {id}: {body}");
            assert!(body["message"].as_str().unwrap().contains(&id.to_string()));
        }
    }

    // Renames committed one after another, each followed by a burst for that row.
    for version in 0..20 {
        let name = format!("version {version}");
        app.db
            .execute("UPDATE some_model SET name = $1 WHERE id = 7", &[&name])
            .await
            .unwrap();
        let calls = (0..16).map(|_| app.write_to_kafka(7));
        for response in futures_util::future::join_all(calls).await {
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                body,
                json!({"id": 7, "name": name}),
                "after rename {version}"
            );
        }
    }
    app.cleanup().await;
}

#[tokio::test]
async fn write_to_kafka_of_a_missing_row_is_a_json_404_and_publishes_nothing() {
    let app = spawn_app().await;
    let response = app.write_to_kafka(77).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert!(body["message"].as_str().unwrap().contains("77"), "{body}");
    assert!(app
        .read_topic(&app.settings.topics.objects_to_kafka_topic)
        .await
        .is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn write_to_kafka_with_an_id_that_is_not_an_int64_is_a_json_400_naming_id() {
    let app = spawn_app().await;
    for id in ["abc", "1.5", "9223372036854775808", "%20"] {
        let response = app.write_to_kafka(id).await;
        assert_eq!(response.status(), 400, "{id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "bad_request", "{id}: {body}");
        assert_eq!(body["field"], "id", "{id}: {body}");
        assert!(body["message"].as_str().unwrap().contains("id"), "{body}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn rows_written_by_sql_are_listed_exactly() {
    let app = spawn_app().await;
    let long_name = "я".repeat(200);
    app.insert_rows(&[(i64::MAX, &long_name), (i64::MIN, "min")])
        .await;
    assert_eq!(
        pairs(&app.rows().await),
        [(i64::MAX, long_name.clone()), (i64::MIN, "min".to_owned())]
    );
    app.cleanup().await;
}

#[tokio::test]
async fn keyset_pages_walk_the_table_highest_id_first_without_gaps_or_repeats() {
    let app = spawn_app().await;
    app.db
        .execute(
            "INSERT INTO some_model SELECT g * 3, 'row ' || g FROM generate_series(1, 25) g",
            &[],
        )
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut path = "/api/some_models/?limit=10".to_owned();
    loop {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        let page: Vec<Row> = response.json().await.unwrap();
        assert!(page.len() <= 10, "{path}: {} rows", page.len());
        let Some(last) = page.last() else { break };
        path = format!("/api/some_models?limit=10&before_id={}", last.id);
        seen.extend(page);
    }
    let expected: Vec<(i64, String)> = (1..=25)
        .rev()
        .map(|g| (g * 3, format!("row {g}")))
        .collect();
    assert_eq!(pairs(&seen), expected);

    // before_id alone: everything below it.
    let below: Vec<Row> = app
        .get("/api/some_models/?before_id=10")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(below.iter().map(|r| r.id).collect::<Vec<_>>(), [9, 6, 3]);
    app.cleanup().await;
}

#[tokio::test]
async fn a_malformed_page_parameter_is_a_json_400_naming_it() {
    let app = spawn_app().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=1000001", "limit"),
        ("limit=ten", "limit"),
        ("before_id=abc", "before_id"),
        ("before_id=9223372036854775808", "before_id"),
    ] {
        let response = app.get(&format!("/api/some_models/?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "bad_request", "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_large_listing_is_streamed_not_built_in_memory_first() {
    let app = spawn_app().await;
    app.db
        .execute(
            "INSERT INTO some_model SELECT g, 'name ' || g FROM generate_series(1, 100000) g",
            &[],
        )
        .await
        .unwrap();
    let response = app.get("/api/some_models/").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.content_length().is_none(),
        "a streamed body has no Content-Length; got {:?}",
        response.content_length()
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let rows: Vec<Row> = response.json().await.unwrap();
    assert_eq!(rows.len(), 100_000);
    assert!(
        rows.windows(2).all(|w| w[0].id > w[1].id),
        "highest id first"
    );
    assert_eq!(
        rows[0],
        Row {
            id: 100_000,
            name: "name 100000".into()
        }
    );
    app.cleanup().await;
}

#[tokio::test]
async fn the_listing_follows_every_committed_change_whoever_makes_it() {
    let app = spawn_app().await;
    app.insert_rows(&[(1, "a"), (2, "b")]).await;
    let listed = |app: &TestApp| {
        let api = app.api.clone();
        async move { pairs(&api.rows().await) }
    };
    let two = vec![(2, "b".to_owned()), (1, "a".to_owned())];
    // Served twice: the second answer may come from memory.
    crate::helpers::eventually("the first listing", || async {
        (listed(&app).await == two).then_some(())
    })
    .await;
    assert_eq!(listed(&app).await, two);

    // Changes made with plain SQL, not through rowsync, each show up in the next listing.
    let changes: [(&str, Vec<(i64, String)>); 4] = [
        (
            "INSERT INTO some_model VALUES (3, 'c')",
            vec![(3, "c".into()), (2, "b".into()), (1, "a".into())],
        ),
        (
            "UPDATE some_model SET name = 'B' WHERE id = 2",
            vec![(3, "c".into()), (2, "B".into()), (1, "a".into())],
        ),
        (
            "DELETE FROM some_model WHERE id = 1",
            vec![(3, "c".into()), (2, "B".into())],
        ),
        ("TRUNCATE some_model", vec![]),
    ];
    for (sql, expected) in changes {
        app.db.batch_execute(sql).await.unwrap();
        // The very next listing shows it (read-your-writes), and no older copy comes back.
        for _ in 0..3 {
            assert_eq!(listed(&app).await, expected, "after {sql}");
        }
    }
    app.cleanup().await;
}

#[tokio::test]
async fn concurrent_listings_each_see_every_commit_made_before_they_were_sent() {
    // Listings arriving together share one round trip to PostgreSQL; one that arrives while a
    // round trip is out must wait for the next, or it could miss a commit made just before it.
    let app = spawn_app().await;
    let stop = tokio_util::sync::CancellationToken::new();
    // Background listings keep round trips in flight all along.
    let background: Vec<_> = (0..4)
        .map(|_| {
            let (api, stop) = (app.api.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    api.rows().await;
                }
            })
        })
        .collect();
    for id in 1..=25i64 {
        app.db
            .execute("INSERT INTO some_model VALUES ($1, 'n')", &[&id])
            .await
            .unwrap();
        let listings = (0..8).map(|_| async { app.rows().await.len() });
        for seen in futures_util::future::join_all(listings).await {
            assert_eq!(
                seen, id as usize,
                "a listing sent after row {id} was committed"
            );
        }
    }
    stop.cancel();
    for task in background {
        task.await.unwrap();
    }
    app.cleanup().await;
}
