//! Soak: a million records streamed through the upcreate worker while faults hit the broker and
//! PostgreSQL every few seconds; at the end the table must equal what the topic implies, and
//! applied + invalid must equal what the topic holds. Not in the default run: `scripts/soak`.
//! The stream, the faults and the settings are shared with the replicas soak
//! ([`soak_replicas`](crate::soak_replicas)).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rand::Rng;
use rowsync::config::Settings;
use rskafka::{
    client::{
        partition::{Compression, UnknownTopicHandling},
        Client,
    },
    record::Record,
};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::{
    fault_proxy::{proxy_kafka, proxy_postgres, Fault, FaultProxy},
    helpers::{eventually_within, fresh_settings, TestApp, PARTITIONS},
    implied_table::ImpliedTable,
    test_broker::TestBroker,
};

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fresh settings reaching `broker` and PostgreSQL only through fault proxies (the returned one
/// is PostgreSQL's; the broker's is `broker.proxy`), with Kafka calls bounded at 2 s and fetches
/// at 1 MiB.
pub async fn soak_settings(broker: &TestBroker) -> (Settings, FaultProxy) {
    let mut settings = fresh_settings();
    proxy_kafka(&mut settings, broker);
    let postgres = proxy_postgres(&mut settings).await;
    settings.kafka.kafka_request_timeout_ms = 2_000;
    settings.kafka.kafka_fetch_max_bytes = 1024 * 1024;
    (settings, postgres)
}

/// The stream: `SOAK_RECORDS` (default 1,000,000) upserts over `SOAK_IDS` (50,000) ids, paced
/// at `SOAK_RATE` (25,000/s) so that faults land all along it.
pub struct Stream {
    pub records: u64,
    ids: i64,
    rate: u64,
}

impl Stream {
    pub fn from_env() -> Self {
        Self {
            records: env_or("SOAK_RECORDS", 1_000_000),
            ids: env_or("SOAK_IDS", 50_000) as i64,
            rate: env_or("SOAK_RATE", 25_000),
        }
    }

    /// Produces the stream to `topic`: keyed by id (one partition per id), 1 % invalid, each
    /// request retried through faults. Returns the task and the count of retried requests.
    pub fn produce(&self, kafka: Arc<Client>, topic: String) -> (JoinHandle<()>, Arc<AtomicU64>) {
        let Self { records, ids, rate } = *self;
        let retries = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&retries);
        let task = tokio::spawn(async move {
            let mut clients = Vec::new();
            for partition in 0..PARTITIONS {
                clients.push(
                    kafka
                        .partition_client(topic.as_str(), partition, UnknownTopicHandling::Retry)
                        .await
                        .unwrap(),
                );
            }
            let mut seq: u64 = 0;
            let began = Instant::now();
            while seq < records {
                let due = began + Duration::from_secs_f64(seq as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let mut batches: Vec<Vec<Record>> = vec![Vec::new(); PARTITIONS as usize];
                for _ in 0..5_000.min(records - seq) {
                    let id = (seq as i64 * 7919) % ids;
                    let value = if seq % 100 == 99 {
                        format!("{{\"id\": {id}, \"name\": 42}}")
                    } else {
                        json!({"id": id, "name": format!("v{seq}")}).to_string()
                    };
                    batches[(id % PARTITIONS as i64) as usize].push(Record {
                        key: Some(id.to_string().into_bytes()),
                        value: Some(value.into_bytes()),
                        headers: Default::default(),
                        timestamp: chrono::Utc::now(),
                    });
                    seq += 1;
                }
                for (partition, batch) in batches.into_iter().enumerate() {
                    loop {
                        let sent = tokio::time::timeout(
                            Duration::from_secs(5),
                            clients[partition].produce(batch.clone(), Compression::NoCompression),
                        )
                        .await;
                        if matches!(sent, Ok(Ok(_))) {
                            break;
                        }
                        // A retried produce may be written twice: the checks read the topic.
                        counted.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        (task, retries)
    }
}

/// Every 2–4 s, while `running`, a random fault (cut, hang, or 20 ms delay, for 0.5–2.5 s) on
/// one of `proxies`; both pass again when it ends. Returns the task and the count of faults.
pub fn inject_faults(
    proxies: [FaultProxy; 2],
    running: Arc<AtomicBool>,
) -> (JoinHandle<()>, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&count);
    let task = tokio::spawn(async move {
        while running.load(Ordering::Relaxed) {
            let (pause, hold, which, kind) = {
                let mut rng = rand::rng();
                (
                    rng.random_range(2_000..4_000),
                    rng.random_range(500..2_500),
                    rng.random_range(0..2),
                    rng.random_range(0..3),
                )
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let fault = match kind {
                0 => Fault::Cut,
                1 => Fault::Hang,
                _ => Fault::Delay(Duration::from_millis(20)),
            };
            proxies[which].set(fault);
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(hold)).await;
            proxies[which].set(Fault::Pass);
        }
        for proxy in &proxies {
            proxy.set(Fault::Pass);
        }
    });
    (task, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test (minutes): run it with scripts/soak"]
async fn a_million_records_through_random_faults_leave_the_table_exactly_as_the_topic_says() {
    let stream = Stream::from_env();
    let broker = TestBroker::start().await;
    let (settings, postgres) = soak_settings(&broker).await;
    let app = TestApp::start(settings).await;
    let topic = app.settings.topics.updates_topic.clone();
    app.start_upcreate().await;
    let started = Instant::now();

    let producing = Arc::new(AtomicBool::new(true));
    let (producer, produce_retries) = stream.produce(Arc::clone(&app.kafka), topic.clone());
    let (injector, faults_injected) = inject_faults(
        [broker.proxy_handle(), postgres.clone()],
        Arc::clone(&producing),
    );
    producer.await.unwrap();
    producing.store(false, Ordering::Relaxed);
    injector.await.unwrap();
    let produced_in = started.elapsed();

    // Drain: every partition's next offset reaches its high watermark.
    eventually_within(Duration::from_secs(900), "the worker to drain", || async {
        let status = app.worker("upcreate").await;
        let partitions = status["partitions"].as_array().unwrap();
        let drained = partitions.len() == PARTITIONS as usize
            && partitions
                .iter()
                .all(|p| p["lag"] == 0 && p["last_error"].is_null());
        drained
            .then_some(())
            .ok_or(format!("not drained: {status}"))
    })
    .await;
    let drained_in = started.elapsed();

    // What the topic implies: per id, the last valid record in its partition.
    let implied = ImpliedTable::read(&app, BTreeMap::new()).await;
    let applied = app.worker_total("upcreate", "records_applied").await;
    let invalid = app.worker_total("upcreate", "records_invalid").await;
    let dead_lettered = app.worker_total("upcreate", "records_dead_lettered").await;
    println!(
        "soak: {} records in the topic ({} produced, {} produce retries), {} faults, \
         produced in {:.1?}, drained in {:.1?}; applied {applied}, invalid {invalid}, \
         dead-lettered {dead_lettered}; {} rows implied",
        implied.updates,
        stream.records,
        produce_retries.load(Ordering::Relaxed),
        faults_injected.load(Ordering::Relaxed),
        produced_in,
        drained_in,
        implied.rows.len()
    );
    assert_eq!(
        applied + invalid,
        implied.updates as u64,
        "every record applied or invalid, once"
    );
    assert_eq!(invalid, implied.invalid_updates);
    assert_eq!(dead_lettered, implied.invalid_updates);
    implied.assert_table_matches(&app).await;
    app.cleanup().await;
}
