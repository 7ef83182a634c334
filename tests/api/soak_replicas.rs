//! Soak with replicas (`SOAK_REPLICAS=3 scripts/soak`): the soak's stream and broker/PostgreSQL
//! faults ([`soak`](crate::soak)), consumed by `SOAK_REPLICAS` replicas of one consumer group:
//! the test's app (in process; never killed, it holds the test's clients) and `rowsync` child
//! processes, all through the same fault proxies. Every 2–5 s one child, at random, is killed
//! with SIGKILL and started again 0.5–3 s later under the same `REPLICA_ID` (again and again
//! should start-up fail on a fault, as an orchestrator would).
//!
//! A killed process's counters die with it, so the exact checks rest on what outlives every
//! process, PostgreSQL and the topics. The test adds a trigger to its schema that logs each move
//! of a stored offset in the transaction that moves it: the log holds exactly the batches that
//! committed, each with the incarnation that committed it (its connections'
//! `application_name`). Exact:
//!
//! - per partition, the committed batches tile the topic: they chain from offset 0 to the end,
//!   each starting where one ended, no two from one offset. So every record was applied or
//!   found invalid in exactly one committed batch, and applied + invalid = records, counting
//!   each batch's valid and invalid records in the topic;
//! - the table equals what the topic implies;
//! - the dead letters name exactly the topic's invalid records (distinct source partition and
//!   offset), so dead letters = invalid. A letter may be written twice: it is produced before
//!   its batch commits, so a kill or fault in between rolls the batch back and it is written
//!   again. Duplicates are reported, not failed.
//!
//! Bounds: the replicas' own counters count a batch once its commit returned, so each
//! incarnation's counters are at most what the log credits it with (more would mean a batch
//! counted that never committed). For a killed incarnation they are the last read before the
//! kill, a lower bound: it may commit batches between that read and the kill. For those alive
//! at the end they are final, yet may still fall short by a batch whose commit PostgreSQL
//! made while a fault kept the answer from the replica.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rand::Rng;
use rowsync::{
    config::Settings,
    kafka::codec::decode_upsert,
    workers::{
        dead_letter::{HEADER_OFFSET, HEADER_PARTITION},
        WorkerKind,
    },
};
use rskafka::{
    client::partition::{OffsetAt, UnknownTopicHandling},
    record::RecordAndOffset,
};
use secrecy::SecretString;
use serde_json::Value;

use crate::{
    commit_log::{assert_tiled, committed_batches, log_commits, stored_offsets, Commit},
    helpers::{eventually, eventually_within, ApiClient, TestApp, PARTITIONS},
    implied_table::{last_upserts, ImpliedTable},
    process::{command, database_url_of, free_port, memory_kib, RowsyncProcess},
    soak::{env_or, inject_faults, soak_settings, Stream},
    test_broker::TestBroker,
};

/// The in-process replica's `REPLICA_ID` (and its connections' `application_name`).
const IN_PROCESS: &str = "replica-a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test (minutes): run it with SOAK_REPLICAS=3 scripts/soak"]
async fn replicas_killed_at_random_through_random_faults_apply_every_record_exactly_once() {
    let stream = Stream::from_env();
    let replicas = env_or("SOAK_REPLICAS", 3);
    assert!(
        replicas >= 2,
        "SOAK_REPLICAS: the app and at least one child"
    );
    let broker = TestBroker::start().await;
    let (mut settings, postgres) = soak_settings(&broker).await;
    settings.group.replica_id = IN_PROCESS.to_owned();
    let app = TestApp::start(named(&settings, IN_PROCESS)).await;
    log_commits(&app).await;
    let topic = app.settings.topics.updates_topic.clone();
    let mut children = Vec::new();
    for letter in (b'b'..).take(replicas as usize - 1) {
        let name = format!("replica-{}", char::from(letter));
        let (process, _) = start_child(&settings, &name, 1).await;
        children.push(Child {
            name,
            incarnation: 1,
            process,
        });
    }
    app.start_upcreate().await;
    let started = Instant::now();

    let running = Arc::new(AtomicBool::new(true));
    let (producer, produce_retries) = stream.produce(Arc::clone(&app.kafka), topic.clone());
    let (injector, faults) = inject_faults(
        [broker.proxy_handle(), postgres.clone()],
        Arc::clone(&running),
    );
    let chaos = tokio::spawn(kill_and_restart(
        children,
        settings.clone(),
        Arc::clone(&running),
    ));
    producer.await.unwrap();
    let produced_in = started.elapsed();
    running.store(false, Ordering::Relaxed);
    injector.await.unwrap();
    let (mut children, mut ledger) = chaos.await.unwrap();
    let chaos_ended = started.elapsed();
    let applied_by_then: i64 = stored_offsets(&app).await.values().sum();

    let records = drain(&app, &topic).await;
    let drained_in = started.elapsed();
    let log = TopicLog::of(&records);

    // The counters of the replicas alive now are final.
    let alive = std::iter::once((IN_PROCESS.to_owned(), &app.api, None)).chain(
        children
            .iter()
            .map(|c| (c.incarnation_name(), &c.process.api, c.process.child.id())),
    );
    for (name, api, pid) in alive {
        let counters = eventually("a replica's counters", || read_counters(api)).await;
        ledger.counters.insert(name, counters);
        ledger.observe_rss(pid);
    }
    let mut started_replicas: BTreeSet<String> = BTreeSet::from([IN_PROCESS.to_owned()]);
    for child in &children {
        started_replicas.extend((1..=child.incarnation).map(|i| format!("{}.{i}", child.name)));
    }

    // Exact: the committed batches tile every partition; each credited from the topic.
    let commits = committed_batches(&app).await;
    assert_tiled(&log.ends, &commits);
    let credited = log.credit(&commits);
    let applied: u64 = credited.values().map(|c| c.0).sum();
    let invalid: u64 = credited.values().map(|c| c.1).sum();
    let implied = {
        let values = records
            .iter()
            .map(|(p, r)| (*p, r.offset, r.record.value.as_deref()));
        let (rows, invalid_updates) = last_upserts(values);
        ImpliedTable {
            rows,
            updates: records.len(),
            invalid_updates,
        }
    };

    // Exact: dead letters name every invalid record, and nothing else, by source offset.
    let (letters, lettered) = dead_letter_sources(&app).await;

    let counted: Counters = ledger
        .counters
        .values()
        .fold(Counters::default(), |a, c| a + *c);
    let this_process_rss = memory_kib(std::process::id(), "VmHWM:").unwrap_or_default();
    println!(
        "soak-replicas: {} records in the topic ({} produced, {} produce retries), {} replicas, \
         {} kills ({} failed starts), {} faults; produced in {produced_in:.1?}, faults and kills \
         until {chaos_ended:.1?} ({applied_by_then} records applied by then), drained in \
         {drained_in:.1?}; committed {} batches: applied {applied}, invalid {invalid}; \
         {} dead letters ({} distinct); counters (killed replicas: last read) applied {}, \
         invalid {}, dead-lettered {}; {} rows implied; peak RSS: child {} MiB, test process \
         (app, producer, checks) {} MiB",
        records.len(),
        stream.records,
        produce_retries.load(Ordering::Relaxed),
        replicas,
        ledger.kills,
        ledger.failed_starts,
        faults.load(Ordering::Relaxed),
        commits.len(),
        letters,
        lettered.len(),
        counted.applied,
        counted.invalid,
        counted.dead_lettered,
        implied.rows.len(),
        ledger.peak_rss_kib / 1024,
        this_process_rss / 1024,
    );
    for (replica, (valid, invalid)) in &credited {
        let c = ledger.counters.get(replica).copied().unwrap_or_default();
        println!(
            "soak-replicas: {replica}: committed {valid} applied + {invalid} invalid; counted \
             {} + {} (dead-lettered {})",
            c.applied, c.invalid, c.dead_lettered
        );
    }

    assert_eq!(
        applied + invalid,
        records.len() as u64,
        "applied + invalid = records"
    );
    assert_eq!(
        invalid, implied.invalid_updates,
        "invalid = the topic's invalid records"
    );
    assert!(
        lettered == log.invalid,
        "the dead letters name {} records, the topic holds {} invalid ones; first few \
         missing: {:?}, first few not invalid: {:?}",
        lettered.len(),
        log.invalid.len(),
        log.invalid
            .difference(&lettered)
            .take(5)
            .collect::<Vec<_>>(),
        lettered
            .difference(&log.invalid)
            .take(5)
            .collect::<Vec<_>>(),
    );
    for replica in credited.keys() {
        assert!(
            started_replicas.contains(replica),
            "a batch committed by {replica:?}, no replica"
        );
    }
    for (replica, c) in &ledger.counters {
        let (valid, invalid) = credited.get(replica).copied().unwrap_or_default();
        assert!(
            c.applied <= valid && c.invalid <= invalid && c.dead_lettered <= invalid,
            "{replica} counted {c:?}, more than the {valid} applied and {invalid} invalid \
             records of the batches it committed"
        );
    }
    implied.assert_table_matches(&app).await;

    for child in &mut children {
        child.process.signal("KILL");
        child.process.wait(Duration::from_secs(10)).await;
    }
    app.cleanup().await;
}

/// Waits until PostgreSQL's next offsets reach the high watermarks, then the end of the topic
/// as read back; returns the records read.
async fn drain(app: &TestApp, topic: &str) -> Vec<(i32, RecordAndOffset)> {
    let mut clients = Vec::new();
    for partition in 0..PARTITIONS {
        let client = app
            .kafka
            .partition_client(topic, partition, UnknownTopicHandling::Retry);
        clients.push(client.await.unwrap());
    }
    eventually_within(
        Duration::from_secs(900),
        "the replicas to drain",
        || async {
            let stored = stored_offsets(app).await;
            let mut ends = BTreeMap::new();
            for (partition, client) in (0..).zip(&clients) {
                let end = client.get_offset(OffsetAt::Latest).await;
                ends.insert(partition, end.map_err(|e| e.to_string())?);
            }
            let drained = ends
                .iter()
                .all(|(p, end)| stored.get(p).is_some_and(|s| s >= end));
            drained
                .then_some(())
                .ok_or(format!("stored {stored:?}, high watermarks {ends:?}"))
        },
    )
    .await;
    let records = app.read_topic(topic).await;
    let ends = TopicLog::of(&records).ends;
    eventually(
        "PostgreSQL's next offsets to be the topic's end",
        || async {
            let stored = stored_offsets(app).await;
            (stored == ends)
                .then_some(())
                .ok_or(format!("stored {stored:?}, topic ends {ends:?}"))
        },
    )
    .await;
    records
}

/// How many dead letters the upcreate worker wrote, and the distinct (partition, offset) of the
/// records they came from.
async fn dead_letter_sources(app: &TestApp) -> (usize, BTreeSet<(i32, i64)>) {
    let dlq = app.settings.topics.dead_letter_topic(WorkerKind::Upcreate);
    let letters = app.read_topic(&dlq.expect("dead letters are on")).await;
    let sources = letters
        .iter()
        .map(|(_, letter)| {
            let header = |name: &str| {
                let value = letter.record.headers[name].as_deref().unwrap_or_default();
                String::from_utf8_lossy(value).into_owned()
            };
            let partition = header(HEADER_PARTITION).parse().expect("a partition");
            (partition, header(HEADER_OFFSET).parse().expect("an offset"))
        })
        .collect();
    (letters.len(), sources)
}

/// A child replica: its name (`REPLICA_ID`), how many times it was started, and the process.
struct Child {
    name: String,
    incarnation: u32,
    process: RowsyncProcess,
}

impl Child {
    /// The current incarnation's name: its connections' `application_name`.
    fn incarnation_name(&self) -> String {
        format!("{}.{}", self.name, self.incarnation)
    }
}

/// Until `running` turns false: every 2–5 s, one of the `children` at random is killed with
/// SIGKILL, and started again 0.5–3 s later. Returns them, and what was seen.
async fn kill_and_restart(
    mut children: Vec<Child>,
    settings: Settings,
    running: Arc<AtomicBool>,
) -> (Vec<Child>, Ledger) {
    let mut ledger = Ledger::default();
    while running.load(Ordering::Relaxed) {
        let (pause, down, victim) = {
            let mut rng = rand::rng();
            (
                rng.random_range(2_000..5_000),
                rng.random_range(500..3_000),
                rng.random_range(0..children.len()),
            )
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        // The victim's counters are read last, right before the kill.
        let last = children.len() - 1;
        children.swap(victim, last);
        for child in &children {
            let pid = child.process.child.id();
            ledger
                .observe(&child.incarnation_name(), &child.process.api, pid)
                .await;
        }
        let child = &mut children[last];
        child.process.signal("KILL");
        assert_eq!(
            child.process.wait(Duration::from_secs(10)).await,
            None,
            "killed"
        );
        ledger.kills += 1;
        tokio::time::sleep(Duration::from_millis(down)).await;
        child.incarnation += 1;
        let (process, failed) = start_child(&settings, &child.name, child.incarnation).await;
        child.process = process;
        ledger.failed_starts += failed;
    }
    (children, ledger)
}

/// What the test saw of the replicas: each incarnation's counters as last read, kills, starts
/// that failed, and the highest peak RSS of a child.
#[derive(Default)]
struct Ledger {
    counters: BTreeMap<String, Counters>,
    kills: u32,
    failed_starts: u32,
    peak_rss_kib: u64,
}

impl Ledger {
    /// Reads the counters of incarnation `name` (kept as they were if it does not answer in
    /// time, under a fault) and the peak RSS of its process `pid`.
    async fn observe(&mut self, name: &str, api: &ApiClient, pid: Option<u32>) {
        if let Some(counters) = read_counters(api).await {
            self.counters.insert(name.to_owned(), counters);
        }
        self.observe_rss(pid);
    }

    fn observe_rss(&mut self, pid: Option<u32>) {
        let rss = pid
            .and_then(|pid| memory_kib(pid, "VmHWM:"))
            .unwrap_or_default();
        self.peak_rss_kib = self.peak_rss_kib.max(rss);
    }
}

/// A replica's upcreate counters, summed over partitions.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    applied: u64,
    invalid: u64,
    dead_lettered: u64,
}

impl std::ops::Add for Counters {
    type Output = Counters;

    fn add(self, other: Counters) -> Counters {
        Counters {
            applied: self.applied + other.applied,
            invalid: self.invalid + other.invalid,
            dead_lettered: self.dead_lettered + other.dead_lettered,
        }
    }
}

/// The replica's counters, or `None` if it does not answer within 2 s.
async fn read_counters(api: &ApiClient) -> Option<Counters> {
    let read = async {
        let response = api
            .try_raw("GET", "/api/workers/upcreate/", &[], None)
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        let worker: Value = response.json().await.ok()?;
        let total = |counter: &str| {
            let partitions = worker["partitions"].as_array()?;
            partitions
                .iter()
                .map(|p| p[counter].as_u64())
                .sum::<Option<u64>>()
        };
        Some(Counters {
            applied: total("records_applied")?,
            invalid: total("records_invalid")?,
            dead_lettered: total("records_dead_lettered")?,
        })
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()
        .flatten()
}

/// `settings` with PostgreSQL connections named `name` (`application_name`), which the commit
/// log records.
fn named(settings: &Settings, name: &str) -> Settings {
    let mut settings = settings.clone();
    let mut url = reqwest::Url::parse(database_url_of(&settings)).expect("a URL");
    url.query_pairs_mut().append_pair("application_name", name);
    settings.database.database_url = Some(SecretString::from(url.to_string()));
    settings
}

/// Starts incarnation `incarnation` of the child replica `name` and waits until it is live,
/// starting it again whenever it exits first (start-up fails while a fault cuts it off from
/// PostgreSQL or the broker), as an orchestrator would. Returns it and the starts that failed.
/// With `SOAK_LOGS` set, its logs go to `$SOAK_LOGS/<name>.<incarnation>.log`.
async fn start_child(settings: &Settings, name: &str, incarnation: u32) -> (RowsyncProcess, u32) {
    let mut settings = named(settings, &format!("{name}.{incarnation}"));
    settings.group.replica_id = name.to_owned();
    let failed = AtomicU32::new(0);
    let what = format!("{name} to start");
    let process = eventually_within(Duration::from_secs(120), &what, || async {
        let port = free_port();
        let mut command = command(&settings, port);
        command
            .env("DATABASE_URL", database_url_of(&settings))
            .env("DB_TIMEOUT_MS", settings.database.db_timeout_ms.to_string())
            .env(
                "KAFKA_FETCH_MAX_BYTES",
                settings.kafka.kafka_fetch_max_bytes.to_string(),
            )
            .env(
                "KAFKA_REQUEST_TIMEOUT_MS",
                settings.kafka.kafka_request_timeout_ms.to_string(),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(match std::env::var_os("SOAK_LOGS") {
                Some(dir) => {
                    let path = std::path::Path::new(&dir).join(format!("{name}.{incarnation}.log"));
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path);
                    Stdio::from(file.expect("opening the replica's log"))
                }
                None => Stdio::null(),
            });
        let child = Mutex::new(command.spawn().expect("starting rowsync"));
        let api = ApiClient::on_port(port);
        let live = eventually_within(Duration::from_secs(60), "live or exited", || async {
            if let Ok(Some(_)) = child.lock().unwrap().try_wait() {
                return Some(false);
            }
            api.live().await.then_some(true)
        })
        .await;
        if !live {
            failed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(RowsyncProcess {
            child: child.into_inner().unwrap(),
            api,
        })
    })
    .await;
    (process, failed.into_inner())
}

/// The updates topic as read back: per partition its offsets in order and how many invalid
/// records precede each, its end, and the invalid records.
struct TopicLog {
    offsets: BTreeMap<i32, Vec<i64>>,
    invalid_before: BTreeMap<i32, Vec<u64>>,
    ends: BTreeMap<i32, i64>,
    invalid: BTreeSet<(i32, i64)>,
}

impl TopicLog {
    fn of(records: &[(i32, RecordAndOffset)]) -> Self {
        let mut sorted: Vec<(i32, i64, bool)> = records
            .iter()
            .map(|(p, r)| {
                (
                    *p,
                    r.offset,
                    decode_upsert(r.record.value.as_deref()).is_err(),
                )
            })
            .collect();
        sorted.sort_unstable();
        let mut log = TopicLog {
            offsets: BTreeMap::new(),
            invalid_before: BTreeMap::new(),
            ends: BTreeMap::new(),
            invalid: BTreeSet::new(),
        };
        for (partition, offset, invalid) in sorted {
            log.offsets.entry(partition).or_default().push(offset);
            let before = log
                .invalid_before
                .entry(partition)
                .or_insert_with(|| vec![0]);
            before.push(before.last().unwrap() + u64::from(invalid));
            log.ends.insert(partition, offset + 1);
            if invalid {
                log.invalid.insert((partition, offset));
            }
        }
        log
    }

    /// The records, and of them the invalid ones, in the batch `commit` committed.
    fn count(&self, commit: &Commit) -> (u64, u64) {
        let offsets = &self.offsets[&commit.partition];
        let from = commit.from.unwrap_or(0);
        let first = offsets.partition_point(|o| *o < from);
        let end = offsets.partition_point(|o| *o < commit.to);
        let before = &self.invalid_before[&commit.partition];
        ((end - first) as u64, before[end] - before[first])
    }

    /// Per replica (incarnation), the valid and the invalid records of the batches it committed.
    fn credit(&self, commits: &[Commit]) -> BTreeMap<String, (u64, u64)> {
        let mut credited: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for commit in commits {
            let (records, invalid) = self.count(commit);
            let entry = credited.entry(commit.replica.clone()).or_default();
            *entry = (entry.0 + records - invalid, entry.1 + invalid);
        }
        credited
    }
}
