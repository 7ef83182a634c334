//! Replicas share each worker's partitions through Kafka's consumer groups: the coordinator
//! assigns them disjointly, a replica that dies or pauses is replaced without losing or
//! re-applying a record, a stopping one hands over at once, one start/stop reaches every
//! replica, and Kafka's committed offsets mirror PostgreSQL's. Replicas are the test's app
//! (in process) and `rowsync` child processes (for kill -9 and SIGSTOP) on one schema, topics
//! and group.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use rowsync::config::Settings;
use serde_json::Value;

use crate::{
    commit_log::stored_offsets,
    helpers::{eventually, eventually_within, spawn_app, update, ApiClient, TestApp},
    process::RowsyncProcess,
    test_broker::TestBroker,
};

/// A replica of the test's app (same schema, topics and group) as a child process.
async fn replica(settings: &Settings, name: &str) -> RowsyncProcess {
    let mut settings = settings.clone();
    settings.group.replica_id = name.to_owned();
    RowsyncProcess::start_with(&settings, &[], None).await
}

/// What `GET /api/workers/upcreate/` says of the replica's group membership.
async fn group(api: &ApiClient) -> Value {
    api.worker("upcreate").await["group"].clone()
}

/// The partitions the replica holds once it is stable in the group (`None` while joining).
async fn stable_partitions(api: &ApiClient) -> Option<Vec<i64>> {
    let group = group(api).await;
    (group["phase"] == "stable").then(|| {
        group["assigned_partitions"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    })
}

/// Waits until the replicas, all stable in one generation, hold every partition exactly once;
/// returns each replica's partitions.
async fn split_among(replicas: &[&ApiClient], within: Duration) -> Vec<Vec<i64>> {
    eventually_within(within, "the replicas to split the partitions", || async {
        let mut held = Vec::new();
        let mut generations = BTreeSet::new();
        for api in replicas {
            held.push(stable_partitions(api).await?);
            generations.insert(group(api).await["generation"].as_i64());
        }
        let mut all: Vec<i64> = held.iter().flatten().copied().collect();
        all.sort_unstable();
        (generations.len() == 1 && all == [0, 1, 2]).then_some(held)
    })
    .await
}

/// `count` updates with ids `first..`, keyed round the partitions: each partition gets a third.
async fn produce_spread(app: &TestApp, first: i64, count: i64, name: &str) {
    let topic = app.settings.topics.updates_topic.clone();
    for partition in 0..3 {
        let values: Vec<String> = (first..first + count)
            .filter(|id| id % 3 == i64::from(partition))
            .map(|id| update(id, name))
            .collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        app.produce(&topic, partition, &values).await;
    }
}

/// Waits until the table holds ids `0..count`, each named `name`.
async fn wait_for_names(app: &TestApp, count: i64, name: &str, within: Duration) {
    eventually_within(within, &format!("{count} rows named {name}"), || async {
        let row = app
            .db
            .query_one(
                "SELECT count(*) FILTER (WHERE name = $1), count(*) FROM some_model",
                &[&name],
            )
            .await
            .ok()?;
        let (named, all): (i64, i64) = (row.get(0), row.get(1));
        (named == count && all == count).then_some(())
    })
    .await;
}

/// Records applied by the replica's upcreate worker since it started.
async fn applied(api: &ApiClient) -> u64 {
    api.worker_total("upcreate", "records_applied").await
}

/// The upcreate group's committed offsets in Kafka, by partition.
async fn kafka_offsets(app: &TestApp) -> BTreeMap<i32, i64> {
    let group = app.settings.group.group_id("upcreate");
    let topic = app.settings.topics.updates_topic.clone();
    let Ok(client) = app.kafka.consumer_group_client(group).await else {
        return BTreeMap::new();
    };
    client
        .fetch_offsets(&[(topic, vec![0, 1, 2])])
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, partition, offset)| Some((partition, offset?)))
        .collect()
}

#[tokio::test]
async fn replicas_split_the_partitions_apply_every_record_once_and_follow_one_start_and_stop() {
    let app = spawn_app().await;
    let b = replica(&app.settings, "replica-b").await;
    let c = replica(&app.settings, "replica-c").await;

    // Started on one replica, the worker runs on all three.
    b.start_upcreate().await;
    let held = split_among(&[&app.api, &b.api, &c.api], Duration::from_secs(30)).await;
    assert!(
        held.iter().all(|p| p.len() == 1),
        "one partition each: {held:?}"
    );

    produce_spread(&app, 0, 600, "first").await;
    wait_for_names(&app, 600, "first", Duration::from_secs(30)).await;
    let total = applied(&app.api).await + applied(&b.api).await + applied(&c.api).await;
    assert_eq!(
        total, 600,
        "every record applied exactly once across the replicas"
    );
    let owners = app.worker("upcreate").await["partitions"].clone();
    let named: BTreeSet<&str> = owners
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["owner"].as_str())
        .collect();
    assert_eq!(named.len(), 3, "each partition's owner is shown: {owners}");

    // Once idle, Kafka's committed offsets mirror PostgreSQL's next offsets.
    let stored = stored_offsets(&app).await;
    assert_eq!(stored.len(), 3);
    eventually(
        "Kafka's committed offsets to equal PostgreSQL's",
        || async { (kafka_offsets(&app).await == stored).then_some(()) },
    )
    .await;
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("rowsync_group_assigned_partitions{worker=\"upcreate\""),
        "{metrics}"
    );

    // Stopped on another replica, it stops on all three.
    c.stop_upcreate().await;
    for api in [&app.api, &b.api, &c.api] {
        eventually("every replica to stop the worker", || async {
            (api.worker("upcreate").await["state"] == "stopped").then_some(())
        })
        .await;
    }
    drop((b, c));
    app.cleanup().await;
}

#[tokio::test]
async fn a_killed_replica_loses_nothing_and_its_partitions_are_consumed_again() {
    let app = spawn_app().await;
    let b = replica(&app.settings, "replica-b").await;
    let c = replica(&app.settings, "replica-c").await;
    app.start_upcreate().await;
    split_among(&[&app.api, &b.api, &c.api], Duration::from_secs(30)).await;
    produce_spread(&app, 0, 300, "before").await;
    wait_for_names(&app, 300, "before", Duration::from_secs(30)).await;
    let survivors_before = applied(&app.api).await + applied(&b.api).await;

    c.signal("KILL");
    let killed = Instant::now();
    produce_spread(&app, 0, 300, "after").await;
    // The coordinator drops the killed replica after the session timeout; then a rebalance.
    let session = Duration::from_millis(app.settings.group.kafka_session_timeout_ms.into());
    wait_for_names(&app, 300, "after", session + Duration::from_secs(20)).await;
    let took = killed.elapsed();
    split_among(&[&app.api, &b.api], Duration::from_secs(10)).await;
    let survivors_after = applied(&app.api).await + applied(&b.api).await;
    assert_eq!(
        survivors_after - survivors_before,
        300,
        "every record produced after the kill applied once, by the survivors"
    );
    eprintln!("partitions of the killed replica consumed again {took:?} after the kill");
    drop((b, c));
    app.cleanup().await;
}

#[tokio::test]
async fn a_replica_paused_past_its_session_applies_nothing_stale_when_it_wakes() {
    let app = spawn_app().await;
    let c = replica(&app.settings, "replica-c").await;
    app.start_upcreate().await;
    split_among(&[&app.api, &c.api], Duration::from_secs(30)).await;
    produce_spread(&app, 0, 90, "one").await;
    wait_for_names(&app, 90, "one", Duration::from_secs(30)).await;
    let c_before = applied(&c.api).await;

    c.signal("STOP");
    produce_spread(&app, 0, 90, "two").await;
    produce_spread(&app, 0, 90, "three").await;
    // The survivor takes every partition once the paused replica's session has expired.
    eventually_within(
        Duration::from_secs(40),
        "the survivor to hold every partition",
        || async { (stable_partitions(&app.api).await? == [0, 1, 2]).then_some(()) },
    )
    .await;
    wait_for_names(&app, 90, "three", Duration::from_secs(30)).await;
    let app_applied = applied(&app.api).await;

    c.signal("CONT");
    split_among(&[&app.api, &c.api], Duration::from_secs(40)).await;
    produce_spread(&app, 0, 90, "four").await;
    wait_for_names(&app, 90, "four", Duration::from_secs(30)).await;
    let total = applied(&app.api).await + applied(&c.api).await;
    assert_eq!(
        total,
        4 * 90,
        "no record applied twice: the woken replica applied nothing it had fetched before \
         ({} by the survivor while it slept, {} by it before)",
        app_applied,
        c_before
    );
    drop(c);
    app.cleanup().await;
}

#[tokio::test]
async fn a_stopping_replica_hands_its_partitions_over_at_once() {
    let app = spawn_app().await;
    let mut b = replica(&app.settings, "replica-b").await;
    app.start_upcreate().await;
    split_among(&[&app.api, &b.api], Duration::from_secs(30)).await;

    b.signal("TERM");
    let stopping = Instant::now();
    assert_eq!(b.wait(Duration::from_secs(30)).await, Some(0));
    eventually_within(
        Duration::from_secs(20),
        "the other replica to take every partition",
        || async { (stable_partitions(&app.api).await? == [0, 1, 2]).then_some(()) },
    )
    .await;
    eprintln!(
        "partitions handed over {:?} after SIGTERM",
        stopping.elapsed()
    );
    produce_spread(&app, 0, 30, "after").await;
    wait_for_names(&app, 30, "after", Duration::from_secs(30)).await;
    app.cleanup().await;
}

#[tokio::test]
async fn after_the_broker_restarts_the_replicas_rejoin_and_continue_from_postgresql() {
    let mut broker = TestBroker::start().await;
    let mut settings = crate::helpers::fresh_settings();
    settings.kafka.kafka_bootstrap_servers = vec![broker.bootstrap()];
    let app = TestApp::start(settings).await;
    let b = replica(&app.settings, "replica-b").await;
    app.start_upcreate().await;
    split_among(&[&app.api, &b.api], Duration::from_secs(30)).await;
    produce_spread(&app, 0, 60, "before").await;
    wait_for_names(&app, 60, "before", Duration::from_secs(30)).await;

    // Memory storage: the restarted broker has lost the topics, the records and the group.
    broker.restart().await;
    eventually_within(
        Duration::from_secs(60),
        "the replicas to rejoin",
        || async {
            let held = [
                stable_partitions(&app.api).await?,
                stable_partitions(&b.api).await?,
            ];
            (held.iter().flatten().count() == 3).then_some(())
        },
    )
    .await;
    let stored = stored_offsets(&app).await;
    produce_spread(&app, 0, 60, "after").await;
    wait_for_names(&app, 60, "after", Duration::from_secs(40)).await;
    let total = applied(&app.api).await + applied(&b.api).await;
    assert_eq!(
        total, 120,
        "nothing lost or applied twice across the restart (stored before: {stored:?})"
    );
    drop(b);
    app.cleanup().await;
}

#[tokio::test]
async fn partitions_added_to_the_topic_at_runtime_are_consumed() {
    // tansu has no CreatePartitions (KIP-195): the topic is recreated with more partitions
    // instead (the app recreates a vanished topic with TOPIC_PARTITIONS), and the group's leader
    // sees the new count the same way.
    let mut settings = crate::helpers::fresh_settings();
    settings.kafka.topic_partitions = 5;
    let topic = settings.topics.updates_topic.clone();
    let kafka = crate::helpers::kafka_client(&settings.kafka).await;
    let controller = kafka.controller_client().unwrap();
    controller.create_topic(&topic, 3, 1, 5_000).await.unwrap();
    let app = TestApp::start(settings).await;
    app.start_upcreate().await;
    eventually("the replica to hold the topic's 3 partitions", || async {
        (stable_partitions(&app.api).await? == [0, 1, 2]).then_some(())
    })
    .await;

    controller.delete_topic(&topic, 5_000).await.unwrap();
    eventually_within(
        Duration::from_secs(60),
        "the replica to hold 5 partitions",
        || async { (stable_partitions(&app.api).await? == [0, 1, 2, 3, 4]).then_some(()) },
    )
    .await;
    // A client of its own: the app's test client cached the old topic's metadata.
    let fresh = crate::helpers::kafka_client(&app.settings.kafka).await;
    for partition in 0..5 {
        let value = update(i64::from(partition), "new");
        crate::helpers::produce(&fresh, &topic, partition, &[&value]).await;
    }
    wait_for_names(&app, 5, "new", Duration::from_secs(30)).await;
    app.cleanup().await;
}
