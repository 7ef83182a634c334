//! Scale soak (`SOAK_SCALE=1 scripts/soak`): a backlog of `SOAK_RECORDS` (default 10,000,000)
//! upserts over 12 partitions drained into a table that already holds `SOAK_ROWS` (default
//! 10,000,000) rows. No faults: the point is size. The worker runs in a `rowsync` child process,
//! so its peak resident memory (`VmHWM`) is its own, not the test's.
//!
//! 1. The app, in process, creates the schema and the 12-partition topics, then stops; a trigger
//!    logs every committed batch (as in [`soak_replicas`](crate::soak_replicas)).
//! 2. Fill: rows `0..SOAK_ROWS`, named `filled-<id>`, by one `INSERT … SELECT generate_series`,
//!    then `ANALYZE`.
//! 3. Produce: record `seq` has id `SOAK_ROWS - span / 2 + (seq × 7919) mod span`, with
//!    `span = SOAK_RECORDS / 2`: each id gets two records, half the ids are filled rows (updates),
//!    half are not (inserts); 1 % of the records are invalid (`"name": 42`), as in the soak's
//!    stream. Twelve partition clients produce in parallel, 10,000 records per request.
//! 4. Drain: a `rowsync` child starts the upcreate worker; done when PostgreSQL's next offsets
//!    equal every partition's end as the produce acknowledgements gave it (timed from the start
//!    request, so the group join is included).
//!
//! Exact checks, as the replicas soak's, read back partition by partition without holding the
//! topic: the committed batches tile every partition (so applied + invalid = records); the
//! worker's counters equal what the batches hold; the dead letters' distinct source offsets are
//! exactly the invalid records; the table, streamed in id order, equals the filled rows
//! overwritten by each id's last valid upsert, with the topic's new ids added.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use futures_util::{future::join_all, TryStreamExt};
use rowsync::{
    kafka::codec::decode_upsert,
    workers::{
        dead_letter::{HEADER_OFFSET, HEADER_PARTITION},
        WorkerKind,
    },
};
use rskafka::{
    client::{
        partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling},
        Client,
    },
    record::{Record, RecordAndOffset},
};
use serde_json::json;

use crate::{
    commit_log::{assert_tiled, committed_batches, log_commits, stored_offsets, Commit},
    fault_proxy::proxy_kafka,
    helpers::{eventually_within, fresh_settings, TestApp},
    process::{memory_kib, RowsyncProcess},
    soak::env_or,
    test_broker::TestBroker,
};

const PARTITIONS: i32 = 12;
/// Records per produce request.
const BATCH: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale soak (many minutes): run it with SOAK_SCALE=1 scripts/soak"]
async fn ten_million_records_over_12_partitions_into_10_million_rows_apply_exactly_once() {
    let scale = Scale::from_env();
    let broker = TestBroker::start().await;
    let mut settings = fresh_settings();
    proxy_kafka(&mut settings, &broker);
    settings.kafka.topic_partitions = PARTITIONS;
    // rowsync's defaults (the tests' is 4 MiB).
    settings.kafka.kafka_fetch_max_bytes = 1024 * 1024;
    let mut app = TestApp::start(settings.clone()).await;
    app.stop().await;
    log_commits(&app).await;
    let topic = settings.topics.updates_topic.clone();

    let clock = Instant::now();
    scale.fill(&app).await;
    let filled_in = clock.elapsed();

    let clock = Instant::now();
    let clients = partition_clients(&app.kafka, &topic).await;
    let ends = scale.produce(&clients).await;
    let produced_in = clock.elapsed();

    let partitions = PARTITIONS.to_string();
    let env = [("TOPIC_PARTITIONS", partitions.as_str())];
    let child = RowsyncProcess::start_with(&settings, &env, None).await;
    let pid = child.child.id().expect("running");
    let clock = Instant::now();
    child.start_upcreate().await;
    eventually_within(
        Duration::from_secs(3_600),
        "the worker to drain",
        || async {
            let stored = stored_offsets(&app).await;
            (stored == ends)
                .then_some(())
                .ok_or(format!("stored {stored:?}, ends {ends:?}"))
        },
    )
    .await;
    let drained_in = clock.elapsed();
    let child_peak = memory_kib(pid, "VmHWM:").unwrap_or_default();
    let applied = child.worker_total("upcreate", "records_applied").await;
    let invalid = child.worker_total("upcreate", "records_invalid").await;
    let dead_lettered = child
        .worker_total("upcreate", "records_dead_lettered")
        .await;

    // Checks: the topic and the dead letters read back, the commit log, the table.
    let clock = Instant::now();
    let log = TopicLog::read(&app.kafka, &topic, &ends).await;
    let commits = committed_batches(&app).await;
    assert_tiled(&log.ends(), &commits);
    let (committed_valid, committed_invalid) = commits.iter().fold((0, 0), |(v, i), commit| {
        let (records, invalid) = log.count(commit);
        (v + records - invalid, i + invalid)
    });
    let dlq = settings.topics.dead_letter_topic(WorkerKind::Upcreate);
    let (letters, lettered) = dead_letter_sources(&app.kafka, &dlq.expect("on")).await;
    let differences = table_differences(&app, scale.rows, &log.upserted).await;
    let checked_in = clock.elapsed();
    let child_idle = memory_kib(pid, "VmRSS:").unwrap_or_default();
    let test_peak = memory_kib(std::process::id(), "VmHWM:").unwrap_or_default();
    let rows = app
        .db
        .query_one("SELECT count(*) FROM some_model", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);

    println!(
        "soak-scale: {} rows filled in {filled_in:.1?}; {} records over {PARTITIONS} \
         partitions produced in {produced_in:.1?} ({} in the topic, {} ids touched); drained \
         in {drained_in:.1?} ({:.0} records/s); committed {} batches: applied \
         {committed_valid}, invalid {committed_invalid}; counters: applied {applied}, invalid \
         {invalid}, dead-lettered {dead_lettered}; {letters} dead letters ({} distinct); \
         {rows} rows; checked in {checked_in:.1?}; rowsync peak RSS {} MiB ({} MiB after the \
         checks); test process peak RSS {} MiB",
        scale.rows,
        scale.records,
        log.records,
        log.upserted.len(),
        log.records as f64 / drained_in.as_secs_f64(),
        commits.len(),
        lettered.len(),
        child_peak / 1024,
        child_idle / 1024,
        test_peak / 1024,
    );

    assert_eq!(log.records, scale.records, "every record produced once");
    assert_eq!(
        committed_valid + committed_invalid,
        log.records,
        "applied + invalid = records"
    );
    assert_eq!(committed_invalid, log.invalid.len() as u64);
    assert_eq!(
        (applied, invalid, dead_lettered),
        (committed_valid, committed_invalid, committed_invalid),
        "the worker's counters (applied, invalid, dead-lettered) = the committed batches'"
    );
    assert!(
        lettered == log.invalid,
        "the dead letters name {} records, the topic holds {} invalid ones",
        lettered.len(),
        log.invalid.len()
    );
    assert!(
        differences.is_empty(),
        "the table is not what the topic implies: {differences:?}"
    );
    drop(child);
    app.cleanup().await;
}

/// The sizes: `SOAK_ROWS` filled rows, `SOAK_RECORDS` records.
struct Scale {
    rows: i64,
    records: u64,
}

impl Scale {
    fn from_env() -> Self {
        Self {
            rows: env_or("SOAK_ROWS", 10_000_000) as i64,
            records: env_or("SOAK_RECORDS", 10_000_000),
        }
    }

    /// Fills the table with rows `0..rows`, each named [`filled_name`], and analyzes it.
    async fn fill(&self, app: &TestApp) {
        let sql = "INSERT INTO some_model (id, name) \
                   SELECT g, 'filled-' || g FROM generate_series(0, $1::bigint - 1) AS g";
        app.db.execute(sql, &[&self.rows]).await.expect("filling");
        app.db.batch_execute("ANALYZE some_model").await.unwrap();
    }

    /// Record `seq`'s id: each id of the `records / 2` from `rows - records / 4` on gets two
    /// records, so half are filled rows, half new ones.
    fn id(&self, seq: u64) -> i64 {
        let span = (self.records / 2).max(1);
        self.rows - (span / 2) as i64 + ((seq * 7919) % span) as i64
    }

    /// Produces the records, each to its id's partition, the partitions in parallel; returns
    /// each partition's end (the offset after its last record) as the broker acknowledged it.
    async fn produce(&self, clients: &[PartitionClient]) -> BTreeMap<i32, i64> {
        let partitions = (0..).zip(clients).map(|(partition, client)| async move {
            let (mut batch, mut end) = (Vec::with_capacity(BATCH), 0);
            for seq in 0..self.records {
                let id = self.id(seq);
                if id % i64::from(PARTITIONS) != i64::from(partition) {
                    continue;
                }
                // As the soak's stream: 1 % invalid.
                let value = if seq % 100 == 99 {
                    format!("{{\"id\": {id}, \"name\": 42}}")
                } else {
                    json!({"id": id, "name": format!("v{seq}")}).to_string()
                };
                batch.push(Record {
                    key: Some(id.to_string().into_bytes()),
                    value: Some(value.into_bytes()),
                    headers: Default::default(),
                    timestamp: chrono::Utc::now(),
                });
                if batch.len() == BATCH {
                    end = send(client, std::mem::take(&mut batch)).await;
                }
            }
            if !batch.is_empty() {
                end = send(client, batch).await;
            }
            (partition, end)
        });
        join_all(partitions).await.into_iter().collect()
    }
}

/// Produces `records` in one request; returns the offset after the last.
async fn send(client: &PartitionClient, records: Vec<Record>) -> i64 {
    let sent = client.produce(records, Compression::NoCompression);
    let offsets = tokio::time::timeout(Duration::from_secs(60), sent)
        .await
        .expect("a produce request answered within 60 s")
        .expect("records produced");
    offsets.last().expect("offsets") + 1
}

/// The name the fill gives row `id`.
fn filled_name(id: i64) -> String {
    format!("filled-{id}")
}

async fn partition_clients(kafka: &Client, topic: &str) -> Vec<PartitionClient> {
    let mut clients = Vec::new();
    for partition in 0..PARTITIONS {
        let client = kafka.partition_client(topic, partition, UnknownTopicHandling::Retry);
        clients.push(client.await.expect("a partition client"));
    }
    clients
}

/// Calls `each` with every record of `client`'s partition up to `end` (else the partition's
/// latest offset as listed), in offset order.
async fn read_partition(
    client: &PartitionClient,
    end: Option<i64>,
    mut each: impl FnMut(RecordAndOffset),
) {
    let end = match end {
        Some(end) => end,
        None => client.get_offset(OffsetAt::Latest).await.unwrap(),
    };
    let mut offset = 0;
    while offset < end {
        let (records, _) = client
            .fetch_records(offset, 1..8 * 1024 * 1024, 100)
            .await
            .expect("fetching records");
        for record in records {
            offset = offset.max(record.offset + 1);
            each(record);
        }
    }
}

/// The updates topic as read back, summed up: each partition's offsets and invalid offsets, in
/// order, and per id the name of its last valid upsert.
struct TopicLog {
    offsets: BTreeMap<i32, Vec<i64>>,
    invalid_offsets: BTreeMap<i32, Vec<i64>>,
    invalid: BTreeSet<(i32, i64)>,
    upserted: BTreeMap<i64, String>,
    records: u64,
}

impl TopicLog {
    /// Reads `topic` up to `ends`.
    async fn read(kafka: &Client, topic: &str, ends: &BTreeMap<i32, i64>) -> Self {
        let clients = partition_clients(kafka, topic).await;
        let partitions = join_all((0..).zip(&clients).map(|(partition, client)| async move {
            let end = Some(ends[&partition]);
            let (mut offsets, mut invalid, mut upserted) =
                (Vec::new(), Vec::new(), BTreeMap::new());
            read_partition(client, end, |record| {
                offsets.push(record.offset);
                match decode_upsert(record.record.value.as_deref()) {
                    Ok(row) => {
                        let ids_partition = row.id % i64::from(PARTITIONS);
                        assert_eq!(ids_partition, i64::from(partition), "id {}", row.id);
                        upserted.insert(row.id, row.name);
                    }
                    Err(_) => invalid.push(record.offset),
                }
            })
            .await;
            (partition, offsets, invalid, upserted)
        }))
        .await;
        let mut log = TopicLog {
            offsets: BTreeMap::new(),
            invalid_offsets: BTreeMap::new(),
            invalid: BTreeSet::new(),
            upserted: BTreeMap::new(),
            records: 0,
        };
        for (partition, offsets, invalid, upserted) in partitions {
            log.records += offsets.len() as u64;
            log.invalid.extend(invalid.iter().map(|o| (partition, *o)));
            log.offsets.insert(partition, offsets);
            log.invalid_offsets.insert(partition, invalid);
            log.upserted.extend(upserted);
        }
        log
    }

    /// The records, and of them the invalid ones, in the batch `commit` committed.
    fn count(&self, commit: &Commit) -> (u64, u64) {
        (
            commit.covers(&self.offsets[&commit.partition]),
            commit.covers(&self.invalid_offsets[&commit.partition]),
        )
    }

    /// Each partition's end: past its last offset.
    fn ends(&self) -> BTreeMap<i32, i64> {
        let end = |offsets: &Vec<i64>| offsets.last().map_or(0, |o| o + 1);
        self.offsets
            .iter()
            .map(|(&p, offsets)| (p, end(offsets)))
            .collect()
    }
}

/// How many dead letters `dlq` holds, and the distinct (partition, offset) they came from.
async fn dead_letter_sources(kafka: &Client, dlq: &str) -> (usize, BTreeSet<(i32, i64)>) {
    let (mut letters, mut sources) = (0, BTreeSet::new());
    for client in partition_clients(kafka, dlq).await {
        read_partition(&client, None, |letter| {
            let header = |name: &str| -> i64 {
                let value = letter.record.headers[name].as_deref().unwrap_or_default();
                String::from_utf8_lossy(value).parse().expect("a number")
            };
            letters += 1;
            let partition = i32::try_from(header(HEADER_PARTITION)).expect("a partition");
            sources.insert((partition, header(HEADER_OFFSET)));
        })
        .await;
    }
    (letters, sources)
}

/// How the table differs from what the topic implies (the filled rows `0..filled`, each
/// replaced by its id's last valid upsert, plus the ids only upserts name), streamed in id
/// order: counts of rows missing, unexpected and with another name, and the first few.
async fn table_differences(
    app: &TestApp,
    filled: i64,
    upserted: &BTreeMap<i64, String>,
) -> Differences {
    let sql = "SELECT id, name FROM some_model ORDER BY id";
    let table = app.db.query_raw(sql, &[] as &[&str; 0]).await.unwrap();
    futures_util::pin_mut!(table);
    let mut implied = implied_rows(filled, upserted).peekable();
    let mut differences = Differences::default();
    while let Some(row) = table.try_next().await.expect("reading the table") {
        let (id, name): (i64, String) = (row.get(0), row.get(1));
        while let Some((missing, _)) = implied.next_if(|(want, _)| *want < id) {
            differences.note("missing", missing);
        }
        match implied.next_if(|(want, _)| *want == id) {
            Some((_, want)) if want != name.as_str() => differences.note("renamed", id),
            Some(_) => {}
            None => differences.note("unexpected", id),
        }
    }
    for (missing, _) in implied {
        differences.note("missing", missing);
    }
    differences
}

/// The rows the topic implies, in id order: see [`table_differences`].
fn implied_rows(
    filled: i64,
    upserted: &BTreeMap<i64, String>,
) -> impl Iterator<Item = (i64, Cow<'_, str>)> {
    let mut upserts = upserted.iter().peekable();
    let mut fill = 0;
    std::iter::from_fn(move || {
        let next_upsert = upserts.peek().map(|(id, _)| **id);
        match (next_upsert, fill < filled) {
            (Some(id), true) if id <= fill => {
                fill += i64::from(id == fill);
                upserts
                    .next()
                    .map(|(id, name)| (*id, Cow::from(name.as_str())))
            }
            (_, true) => {
                fill += 1;
                Some((fill - 1, Cow::from(filled_name(fill - 1))))
            }
            (_, false) => upserts
                .next()
                .map(|(id, name)| (*id, Cow::from(name.as_str()))),
        }
    })
}

/// Differences between two tables: per kind, how many and the first few ids.
#[derive(Debug, Default)]
struct Differences(BTreeMap<&'static str, (u64, Vec<i64>)>);

impl Differences {
    fn note(&mut self, kind: &'static str, id: i64) {
        let (count, first) = self.0.entry(kind).or_default();
        *count += 1;
        if first.len() < 5 {
            first.push(id);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
