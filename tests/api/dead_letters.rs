//! Dead letters: records a worker cannot apply go to its dead-letter topic, with their origin
//! and reason, and the worker goes on.

use std::collections::BTreeMap;

use crate::helpers::{eventually, pairs, spawn_app, update, TestApp};

/// Dead letters of `topic` as (value, headers), sorted by source offset.
async fn dead_letters(
    app: &TestApp,
    topic: &str,
    count: usize,
) -> Vec<(String, BTreeMap<String, String>)> {
    let dlq = format!("{topic}.dlq");
    let mut letters = eventually(&format!("{count} dead letters"), || async {
        let records = app.read_topic(&dlq).await;
        (records.len() >= count).then_some(records)
    })
    .await
    .into_iter()
    .map(|(_, r)| {
        let value = String::from_utf8(r.record.value.clone().unwrap_or_default()).unwrap();
        let headers = r
            .record
            .headers
            .iter()
            .map(|(k, v)| {
                let v = v.clone().expect("these dead letters' headers have values");
                (k.clone(), String::from_utf8(v).unwrap())
            })
            .collect::<BTreeMap<_, _>>();
        (value, headers)
    })
    .collect::<Vec<_>>();
    letters.sort_by_key(|(_, h)| h["rowsync.dlq.source.offset"].parse::<i64>().unwrap());
    assert_eq!(letters.len(), count, "{letters:#?}");
    letters
}

#[tokio::test]
async fn invalid_messages_go_to_the_dead_letter_topic_with_their_origin_and_reason() {
    let app = spawn_app().await;
    let topic = app.settings.topics.updates_topic.clone();
    app.produce(
        &topic,
        1,
        &[
            &update(1, "ok"),
            "not json",
            r#"{"id": 2}"#,
            &update(3, "ok too"),
        ],
    )
    .await;

    app.start_upcreate().await;
    eventually("valid rows applied", || async {
        (pairs(&app.rows().await).len() == 2).then_some(())
    })
    .await;
    let letters = dead_letters(&app, &topic, 2).await;
    assert_eq!(letters[0].0, "not json");
    assert_eq!(letters[1].0, r#"{"id": 2}"#);
    for ((_, headers), offset) in letters.iter().zip(["1", "2"]) {
        assert_eq!(headers["rowsync.dlq.source.topic"], topic);
        assert_eq!(headers["rowsync.dlq.source.partition"], "1");
        assert_eq!(headers["rowsync.dlq.source.offset"], offset);
        assert_eq!(headers["rowsync.dlq.worker"], "upcreate");
    }
    assert!(
        letters[0].1["rowsync.dlq.reason"].contains("not a valid message"),
        "{letters:?}"
    );
    assert!(
        letters[1].1["rowsync.dlq.reason"].contains("missing field `name`"),
        "{letters:?}"
    );
    eventually("2 dead letters counted", || async {
        (app.worker_total("upcreate", "records_dead_lettered").await == 2).then_some(())
    })
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_row_postgresql_refuses_is_dead_lettered_and_the_rest_of_its_batch_applied() {
    let app = spawn_app().await;
    app.db
        .batch_execute(
            "ALTER TABLE some_model ADD CONSTRAINT no_forbidden CHECK (name <> 'forbidden')",
        )
        .await
        .unwrap();
    let topic = app.settings.topics.updates_topic.clone();
    // One batch: id 5's last update is refused, so its previous one stands, as applying the
    // records one by one would have left it.
    app.produce(
        &topic,
        0,
        &[
            &update(1, "one"),
            &update(5, "five"),
            &update(2, "forbidden"),
            &update(3, "three"),
            &update(5, "forbidden"),
            &update(4, "four"),
        ],
    )
    .await;

    app.start_upcreate().await;
    eventually("accepted rows applied", || async {
        let expected: Vec<(i64, String)> = [(5, "five"), (4, "four"), (3, "three"), (1, "one")]
            .iter()
            .map(|(i, n)| (*i, n.to_string()))
            .collect();
        (pairs(&app.rows().await) == expected).then_some(())
    })
    .await;
    let letters = dead_letters(&app, &topic, 2).await;
    assert_eq!(letters[0].0, update(2, "forbidden"));
    assert_eq!(letters[0].1["rowsync.dlq.source.offset"], "2");
    assert_eq!(letters[1].0, update(5, "forbidden"));
    assert_eq!(letters[1].1["rowsync.dlq.source.offset"], "4");
    assert!(
        letters[0].1["rowsync.dlq.reason"].contains("no_forbidden"),
        "{letters:?}"
    );
    eventually("counters add up", || async {
        let applied = app.worker_total("upcreate", "records_applied").await;
        let invalid = app.worker_total("upcreate", "records_invalid").await;
        (applied == 4 && invalid == 2).then_some(())
    })
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_delete_postgresql_refuses_is_dead_lettered_and_the_others_applied() {
    let app = spawn_app().await;
    app.insert_rows(&[(1, "a"), (2, "referenced"), (3, "c")])
        .await;
    app.db
        .batch_execute(
            "CREATE TABLE child (parent bigint REFERENCES some_model (id)); INSERT INTO child VALUES (2);",
        )
        .await
        .unwrap();
    let topic = app.settings.topics.delete_topic.clone();
    app.produce(&topic, 2, &[r#"{"id": 1}"#, r#"{"id": 2}"#, r#"{"id": 3}"#])
        .await;

    app.start_delete().await;
    eventually("unreferenced rows deleted", || async {
        (pairs(&app.rows().await) == [(2, "referenced".to_owned())]).then_some(())
    })
    .await;
    let letters = dead_letters(&app, &topic, 1).await;
    assert_eq!(letters[0].0, r#"{"id": 2}"#);
    assert_eq!(letters[0].1["rowsync.dlq.worker"], "delete");
    app.cleanup().await;
}

#[tokio::test]
async fn with_dead_lettering_off_invalid_messages_are_only_counted() {
    let mut settings = crate::helpers::fresh_settings();
    settings.topics.dead_letter_enabled = false;
    let app = TestApp::start(settings).await;
    let topic = app.settings.topics.updates_topic.clone();
    app.produce(&topic, 0, &["bad", &update(1, "good")]).await;
    app.start_upcreate().await;
    eventually("the valid row", || async {
        (app.rows().await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(app.worker_total("upcreate", "records_invalid").await, 1);
    assert_eq!(
        app.worker_total("upcreate", "records_dead_lettered").await,
        0
    );
    let topics = app.kafka.list_topics().await.unwrap();
    assert!(
        !topics.iter().any(|t| t.name == format!("{topic}.dlq")),
        "no dead-letter topic is created when dead-lettering is off"
    );
    app.cleanup().await;
}
