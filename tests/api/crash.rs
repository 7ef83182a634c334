//! Crash safety: kill -9 in the middle of a large stream, start again, and the table ends
//! exactly as the topics say, with no batch half-applied.

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;

use crate::{
    helpers::{eventually, fresh_settings, TestApp, PARTITIONS},
    implied_table::ImpliedTable,
    process::RowsyncProcess,
};

const UPDATES: i64 = 150_000;
const IDS: i64 = 5_000;

#[tokio::test]
async fn killing_the_process_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let mut settings = fresh_settings();
    // Small batches (about 1,500 records), so the stream takes many of them.
    settings.kafka.kafka_fetch_max_bytes = 64 * 1024;
    let mut observer = TestApp::start(settings.clone()).await;
    observer.stop().await;
    let topics = settings.topics.clone();

    // Updates keyed by id (all writes of an id on one partition, so "last write wins" is defined),
    // and deletes of rows that exist before the stream and are never updated.
    let mut expected: BTreeMap<i64, String> = BTreeMap::new();
    let mut by_partition: Vec<Vec<String>> = vec![Vec::new(); PARTITIONS as usize];
    for seq in 0..UPDATES {
        let id = (seq * 7919) % IDS;
        let name = format!("v{seq}");
        by_partition[(id % PARTITIONS as i64) as usize]
            .push(json!({"id": id, "name": name}).to_string());
        expected.insert(id, name);
    }
    observer
        .db
        .execute(
            "INSERT INTO some_model SELECT g, 'doomed' FROM generate_series(1000000, 1000099) g",
            &[],
        )
        .await
        .unwrap();
    let doomed: BTreeMap<i64, String> = (1_000_000..1_000_100)
        .map(|id| (id, "doomed".to_owned()))
        .collect();
    expected.extend(doomed.range(1_000_050..).map(|(id, n)| (*id, n.clone())));
    let deletes: Vec<String> = (1_000_000..1_000_050)
        .map(|id| json!({"id": id}).to_string())
        .collect();
    for (partition, values) in by_partition.iter().enumerate() {
        for chunk in values.chunks(10_000) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            observer
                .produce(&topics.updates_topic, partition as i32, &chunk)
                .await;
        }
    }
    observer
        .produce(
            &topics.delete_topic,
            1,
            &deletes.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;

    let mut process = RowsyncProcess::start(&settings).await;
    process.start_upcreate().await;
    process.start_delete().await;
    let stored = || async {
        observer
            .db
            .query_one(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM kafka_offsets WHERE worker = 'upcreate'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    eventually("the first batches applied", || async {
        (stored().await > 0).then_some(())
    })
    .await;
    process.signal("KILL");
    assert_eq!(
        process.wait(Duration::from_secs(10)).await,
        None,
        "killed by a signal"
    );
    let at_kill = stored().await;
    assert!(
        at_kill < UPDATES,
        "killed in the middle of the stream ({at_kill} of {UPDATES} applied)"
    );

    // The workers wanted to run, so the new process resumes them from the stored offsets.
    let _process = RowsyncProcess::start(&settings).await;
    eventually("every update applied", || async {
        (stored().await == UPDATES).then_some(())
    })
    .await;
    eventually("every delete applied", || async {
        let row = observer
            .db
            .query_one("SELECT count(*) FROM some_model WHERE id >= 1000000", &[])
            .await
            .unwrap();
        (row.get::<_, i64>(0) == 50).then_some(())
    })
    .await;
    let implied = ImpliedTable::read(&observer, doomed).await;
    assert_eq!(implied.rows, expected, "the topics hold what was produced");
    implied.assert_table_matches(&observer).await;
    drop(_process);
    observer.cleanup().await;
}
